//! The PostgreSQL registry over TLS, with its password out of the URL (feature `postgres`).
//!
//! The cluster here accepts TCP connections only with TLS (`hostssl` in pg_hba.conf), with a
//! server certificate for 127.0.0.1 from a CA made for the test.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::PathBuf;

use common::{Service, check_config as check};
use keywarden::testing::{Ca, Leaf};
use keywarden_registry::testing::postgres::{Cluster, SUPERUSER};

struct Db {
    cluster: Cluster,
    dir: tempfile::TempDir,
    ca: PathBuf,
    /// The database's URL without the password.
    url: String,
    password_file: PathBuf,
}

fn db() -> Db {
    let ca = Ca::new("registry test CA");
    let (cert, key) = ca.issue(&Leaf::server(7));
    let cluster = Cluster::start_tls(&cert, &key);
    let with_password = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(cluster.create_database());
    let dbname = with_password.rsplit('/').next().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("db-ca.crt");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let password_file = dir.path().join("db-password");
    std::fs::write(&password_file, format!("{}\n", cluster.password())).unwrap();
    Db {
        url: format!(
            "postgres://{SUPERUSER}@127.0.0.1:{}/{dbname}",
            cluster.port()
        ),
        cluster,
        dir,
        ca: ca_file,
        password_file,
    }
}

#[test]
fn the_service_reaches_its_registry_over_verified_tls_with_the_password_from_a_file() {
    let db = db();
    let s = Service::start_with(&format!(
        "registry = \"{}\"\nregistry_password = {{ file = \"{}\" }}\nregistry_tls_ca = \"{}\"\n",
        db.url,
        db.password_file.display(),
        db.ca.display()
    ));
    s.ok(&["key", "create", "over-tls", "--alg", "ecdsa-p256"]);
    s.ok(&["key", "rotate", "over-tls"]);
    let shown: serde_json::Value =
        serde_json::from_str(&s.ok(&["--json", "key", "show", "over-tls"])).unwrap();
    assert_eq!(shown["versions"].as_array().unwrap().len(), 2);
    assert!(
        !s.log().contains(db.cluster.password()),
        "the password reached the log"
    );

    // Ask the server itself: every connection the service holds is TLS.
    let rows = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let (client, conn) = tokio_postgres::Config::new()
            .host_path(db.cluster.socket_dir())
            .port(db.cluster.port())
            .user(SUPERUSER)
            .password(db.cluster.password())
            .dbname("postgres")
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .query(
                "SELECT s.ssl, s.version FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
                 WHERE a.application_name = 'keywarden'",
                &[],
            )
            .await
            .unwrap()
    });
    assert!(!rows.is_empty(), "no keywarden connection seen");
    for row in rows {
        let (ssl, version): (bool, Option<String>) = (row.get(0), row.get(1));
        assert!(ssl, "a plain connection");
        assert!(version.unwrap_or_default().starts_with("TLSv1."));
    }
}

#[test]
fn a_wrong_ca_a_plain_connection_or_a_bad_password_source_stop_start_up() {
    let db = db();
    let dir = db.dir.path();
    let password = format!(
        "registry_password = {{ file = \"{}\" }}\n",
        db.password_file.display()
    );

    // The server's certificate does not chain to the CA we name.
    let stranger = dir.join("stranger-ca.crt");
    std::fs::write(&stranger, Ca::new("registry test CA").pem()).unwrap();
    let (ok, err) = check(
        dir,
        &format!(
            "registry = \"{}\"\n{password}registry_tls_ca = \"{}\"\n",
            db.url,
            stranger.display()
        ),
    );
    // (A CA with the same name but another key: the signature does not verify.)
    assert!(!ok && err.contains("BadSignature"), "{err}");

    // No TLS: the server takes no plain TCP connection.
    let (ok, err) = check(dir, &format!("registry = \"{}\"\n{password}", db.url));
    assert!(!ok && err.contains("pg_hba.conf"), "{err}");

    // sslmode=require without a CA to verify against is refused before connecting.
    let (ok, err) = check(
        dir,
        &format!("registry = \"{}?sslmode=require\"\n{password}", db.url),
    );
    assert!(!ok && err.contains("needs a CA"), "{err}");

    // The password twice, or from a missing file or variable.
    let url_with_password = db.url.replacen(
        &format!("{SUPERUSER}@"),
        &format!("{SUPERUSER}:{}@", db.cluster.password()),
        1,
    );
    let (ok, err) = check(
        dir,
        &format!(
            "registry = \"{url_with_password}\"\n{password}registry_tls_ca = \"{}\"\n",
            db.ca.display()
        ),
    );
    assert!(!ok && err.contains("given twice"), "{err}");
    assert!(!err.contains(db.cluster.password()), "{err}");
    let (ok, err) = check(
        dir,
        &format!(
            "registry = \"{}\"\nregistry_password = {{ env = \"KW_TEST_NO_SUCH_VAR\" }}\n",
            db.url
        ),
    );
    assert!(!ok && err.contains("KW_TEST_NO_SUCH_VAR"), "{err}");

    // Right CA, right password: accepted.
    let (ok, err) = check(
        dir,
        &format!(
            "registry = \"{}\"\n{password}registry_tls_ca = \"{}\"\n",
            db.url,
            db.ca.display()
        ),
    );
    assert!(ok, "{err}");

    // The options make no sense for SQLite.
    let (ok, err) = check(dir, &format!("registry_tls_ca = \"{}\"\n", db.ca.display()));
    assert!(!ok && err.contains("postgres:// registry only"), "{err}");
}

#[test]
fn a_server_certificate_for_another_host_is_refused() {
    // The right CA, but a certificate that names db.invalid, not the 127.0.0.1 of the URL:
    // chain checks alone would accept it (verify-ca); verify-full does not.
    let ca = Ca::new("registry test CA");
    let mut leaf = Leaf::server(9);
    leaf.sans = vec![keywarden::testing::SanType::DnsName(
        "db.invalid".try_into().unwrap(),
    )];
    let (cert, key) = ca.issue(&leaf);
    let cluster = Cluster::start_tls(&cert, &key);
    let with_password = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(cluster.create_database());
    let dbname = with_password.rsplit('/').next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("db-ca.crt");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let password_file = dir.path().join("db-password");
    std::fs::write(&password_file, cluster.password()).unwrap();
    let (ok, err) = check(
        dir.path(),
        &format!(
            "registry = \"postgres://{SUPERUSER}@127.0.0.1:{}/{dbname}\"\n\
             registry_password = {{ file = \"{}\" }}\nregistry_tls_ca = \"{}\"\n",
            cluster.port(),
            password_file.display(),
            ca_file.display()
        ),
    );
    assert!(
        !ok && err.contains("not valid for name \"127.0.0.1\""),
        "{err}"
    );
}
