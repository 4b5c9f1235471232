//! The registry's schema, as ordered migrations shared by every SQL implementation.
//!
//! The SQL is kept to what SQLite and PostgreSQL both accept; the one difference, the type of
//! a byte string, is written `{bytes}` and filled in by [`Migration::sql`] for a [`Dialect`].
//! The schema version lives in a one-row table `schema_version` (not SQLite's
//! `user_version`), so that PostgreSQL keeps it the same way.
//!
//! Migrations are only ever appended: a released one never changes.
//!
//! How an implementation applies them (SQLite does exactly this; PostgreSQL should too):
//! in one transaction that first takes the database's write lock (SQLite `BEGIN IMMEDIATE`;
//! PostgreSQL `LOCK TABLE schema_version IN EXCLUSIVE MODE` after creating it), run
//! [`SCHEMA_VERSION_TABLE`], read `MAX(version)`, refuse a version above [`CURRENT_VERSION`]
//! (`Error::SchemaTooNew`), run every newer migration's [`Migration::sql`], replace the one
//! row of `schema_version` with [`CURRENT_VERSION`], commit. Nodes starting at once then
//! migrate exactly once, and a failed migration leaves nothing behind.

/// An SQL dialect the migrations are rendered for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite 3.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// One step of the schema.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    /// The schema version this migration brings the database to (1, 2, …).
    pub version: u32,
    /// What it does.
    pub description: &'static str,
    template: &'static str,
}

impl Migration {
    /// The migration's statements for `dialect`, separated by `;`.
    pub fn sql(&self, dialect: Dialect) -> String {
        let bytes = match dialect {
            Dialect::Sqlite => "BLOB",
            Dialect::Postgres => "BYTEA",
        };
        self.template.replace("{bytes}", bytes)
    }
}

/// Creates the version table if absent; run before reading the version.
pub const SCHEMA_VERSION_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)";

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "keys and their versions",
    template: r#"
CREATE TABLE keys (
    name        VARCHAR(64) PRIMARY KEY,
    algorithm   TEXT NOT NULL,
    backend     TEXT NOT NULL,
    owner_uid   BIGINT NOT NULL CHECK (owner_uid >= 0 AND owner_uid <= 4294967295),
    labels      TEXT NOT NULL,
    state       VARCHAR(16) NOT NULL CHECK (state IN ('enabled', 'disabled', 'destroyed')),
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT
);
CREATE TABLE key_versions (
    key_name    VARCHAR(64) NOT NULL REFERENCES keys (name) ON DELETE CASCADE,
    version     BIGINT NOT NULL CHECK (version >= 1 AND version <= 4294967295),
    state       VARCHAR(16) NOT NULL CHECK (state IN ('pending', 'ready', 'destroyed')),
    hsm_label   TEXT NOT NULL,
    key_ref     {bytes},
    public_key  {bytes},
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (key_name, version),
    CHECK (state <> 'ready' OR (key_ref IS NOT NULL AND public_key IS NOT NULL)),
    CHECK (state <> 'pending' OR (key_ref IS NULL AND public_key IS NULL))
);
CREATE INDEX key_versions_pending ON key_versions (state, key_name, version)
"#,
}];

/// The newest schema version this build understands.
pub const CURRENT_VERSION: u32 = {
    let n = MIGRATIONS.len();
    MIGRATIONS[n - 1].version
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_one_by_one() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{}", m.description);
        }
        assert_eq!(CURRENT_VERSION as usize, MIGRATIONS.len());
    }

    #[test]
    fn dialects_differ_only_in_byte_type() {
        for m in MIGRATIONS {
            let s = m.sql(Dialect::Sqlite);
            let p = m.sql(Dialect::Postgres);
            assert!(!s.contains("{bytes}") && !p.contains("{bytes}"));
            assert_eq!(s.replace("BLOB", "BYTEA"), p);
        }
    }
}
