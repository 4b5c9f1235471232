//! Authorization with Cedar: the schema is built in, the policies come from a directory.
//!
//! Every request is one Cedar question: may this caller (principal) do this operation (action)
//! to this key (resource)? Default deny. A policy set that does not parse or does not validate
//! against the schema is refused as a whole; on reload the last good set stays in force.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use cedar_policy::{
    Authorizer, Context, Decision, Effect, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    PolicyId, PolicySet, PrincipalConstraint, Request, RestrictedExpression, Schema,
    ValidationMode, Validator,
};

use crate::service::identity::Caller;

/// The schema every policy is validated against (also in `policies/schema.cedarschema`).
pub const SCHEMA: &str = include_str!("../../policies/schema.cedarschema");
/// The policies shipped with keywarden, written into a new data directory.
pub const DEFAULT_POLICIES: &str = include_str!("../../policies/default.cedar");

/// The `default.cedar` keywarden 0.1 wrote before remote (TLS) clients existed. It does not
/// validate against today's schema; a data directory that still holds it unchanged gets the
/// current default instead (see [`is_previous_default`]).
#[cfg(test)]
const PREVIOUS_DEFAULT_0_1: &str = include_str!("../../policies/previous/default-0.1.cedar");

/// SHA-256 of [`PREVIOUS_DEFAULT_0_1`]'s text.
const PREVIOUS_DEFAULT_SHA256: &str =
    "845d75c233a8e603c42914865818ebc64c7a04f811d166ea790487ce35aebbd0";

/// True if `text` is, byte for byte, a `default.cedar` an earlier keywarden shipped (and so
/// safe to replace with [`DEFAULT_POLICIES`]: nobody edited it).
pub fn is_previous_default(text: &str) -> bool {
    use sha2::{Digest as _, Sha256};
    hex::encode(Sha256::digest(text.as_bytes())) == PREVIOUS_DEFAULT_SHA256
}

/// The operations a caller can ask for; each is a Cedar action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Action {
    CreateKey,
    GetKey,
    GetPublicKey,
    Sign,
    Verify,
    Agree,
    RotateKey,
    DisableKey,
    EnableKey,
    DestroyKey,
}

impl Action {
    /// The Cedar action id (and the audit log's action name).
    pub fn name(self) -> &'static str {
        match self {
            Self::CreateKey => "CreateKey",
            Self::GetKey => "GetKey",
            Self::GetPublicKey => "GetPublicKey",
            Self::Sign => "Sign",
            Self::Verify => "Verify",
            Self::Agree => "Agree",
            Self::RotateKey => "RotateKey",
            Self::DisableKey => "DisableKey",
            Self::EnableKey => "EnableKey",
            Self::DestroyKey => "DestroyKey",
        }
    }
}

/// What Cedar sees of a key.
#[derive(Clone, Debug)]
pub struct KeyFacts<'a> {
    /// Key name.
    pub name: &'a str,
    /// Algorithm name.
    pub algorithm: &'a str,
    /// Backend name.
    pub backend: &'a str,
    /// Owner uid.
    pub owner_uid: u32,
    /// `enabled`, `disabled`, `destroyed` (or `new` for a key being created).
    pub state: &'a str,
    /// Labels (Cedar tags).
    pub labels: &'a std::collections::BTreeMap<String, String>,
}

/// A decision and the policies that made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// True if permitted.
    pub allowed: bool,
    /// The `@id` (or generated id) of each policy that decided.
    pub policies: Vec<String>,
    /// Evaluation errors, if any (a policy that errors does not apply).
    pub errors: Vec<String>,
}

/// Errors loading a policy set.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A file could not be read.
    #[error("policy directory {}: {reason}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A file does not parse.
    #[error("policy file {}: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Cedar's message.
        reason: String,
    },
    /// The set does not validate against the schema.
    #[error("policies do not validate against the keywarden schema: {0}")]
    Invalid(String),
    /// The built-in schema is broken (a bug).
    #[error("built-in Cedar schema: {0}")]
    Schema(String),
}

struct Loaded {
    policies: PolicySet,
    files: Vec<PathBuf>,
}

/// The policy engine: schema, current policy set, authorizer.
pub struct Policy {
    dir: PathBuf,
    schema: Schema,
    current: RwLock<Arc<Loaded>>,
    authorizer: Authorizer,
    service_uid: u32,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy").field("dir", &self.dir).finish()
    }
}

/// Parses the built-in schema.
pub fn schema() -> Result<Schema, PolicyError> {
    Schema::from_cedarschema_str(SCHEMA)
        .map(|(s, _warnings)| s)
        .map_err(|e| PolicyError::Schema(e.to_string()))
}

/// Reads every `*.cedar` file of `dir` (sorted, not recursive), parses and validates the set.
pub fn load_dir(dir: &Path, schema: &Schema) -> Result<(PolicySet, Vec<PathBuf>), PolicyError> {
    let io = |e: std::io::Error| PolicyError::Io {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cedar") && p.is_file())
        .collect();
    files.sort();
    let mut set = PolicySet::new();
    for file in &files {
        let text = std::fs::read_to_string(file).map_err(|e| PolicyError::Io {
            path: file.clone(),
            reason: e.to_string(),
        })?;
        let parsed = PolicySet::from_str(&text).map_err(|e| PolicyError::Parse {
            path: file.clone(),
            reason: format!("{e:?}")
                .lines()
                .take(12)
                .collect::<Vec<_>>()
                .join(" "),
        })?;
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        for policy in parsed.policies() {
            let id = policy
                .annotation("id")
                .map(str::to_owned)
                .unwrap_or_else(|| format!("{stem}.{}", policy.id()));
            if policy.effect() == Effect::Permit
                && policy.principal_constraint() == PrincipalConstraint::Any
            {
                // Such a rule would grant to local callers and to every TLS client alike.
                return Err(PolicyError::Parse {
                    path: file.clone(),
                    reason: format!(
                        "permit {id:?} applies to every kind of caller; say which in its \
                         scope: `principal is Keywarden::Caller` (local) or `principal is \
                         Keywarden::Client` (TLS), or name the principal"
                    ),
                });
            }
            set.add(policy.new_id(PolicyId::new(&id)))
                .map_err(|e| PolicyError::Parse {
                    path: file.clone(),
                    reason: format!("policy id {id:?}: {e}"),
                })?;
        }
    }
    let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
    if !result.validation_passed() {
        let errors: Vec<String> = result.validation_errors().map(|e| e.to_string()).collect();
        let mut text = errors.join("; ");
        if text.contains("Keywarden::Client") || text.contains("Keywarden::Caller") {
            // The likeliest cause after an upgrade: a policy from before remote (TLS) clients
            // existed reads `principal.uid` without saying which kind of principal it means.
            text.push_str(
                " (hint: a policy that reads attributes of local callers must say so in its \
                 scope, `principal is Keywarden::Caller`; remote clients are \
                 `Keywarden::Client`; see policies/default.cedar)",
            );
        }
        return Err(PolicyError::Invalid(text));
    }
    Ok((set, files))
}

fn uid(ty: &str, id: &str) -> EntityUid {
    // Invariant: `ty` is one of the fixed, valid type names used below.
    #[allow(clippy::expect_used)]
    let ty = EntityTypeName::from_str(ty).expect("static Cedar type name");
    EntityUid::from_type_name_and_id(ty, EntityId::new(id))
}

/// The Cedar principal for a caller, and its entity with the attributes the schema declares.
fn principal_entity(caller: &Caller) -> Result<(EntityUid, Entity), String> {
    let string = |v: &str| RestrictedExpression::new_string(v.to_owned());
    let strings = |v: &[String]| RestrictedExpression::new_set(v.iter().map(|s| string(s)));
    let (principal, attributes) = match caller {
        Caller::Local(c) => (
            uid("Keywarden::Caller", &format!("uid:{}", c.uid)),
            vec![
                ("uid", RestrictedExpression::new_long(i64::from(c.uid))),
                ("gid", RestrictedExpression::new_long(i64::from(c.gid))),
                ("pid", RestrictedExpression::new_long(i64::from(c.pid))),
                ("exe", string(&c.exe)),
            ],
        ),
        Caller::Remote(c) => (
            uid("Keywarden::Client", &c.identity),
            vec![
                ("identity", string(&c.identity)),
                ("subject", string(&c.subject)),
                ("issuer", string(&c.issuer)),
                ("uris", strings(&c.uris)),
                ("dns_names", strings(&c.dns_names)),
                ("fingerprint", string(&c.fingerprint)),
            ],
        ),
    };
    let entity = Entity::new(
        principal.clone(),
        attributes
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        std::collections::HashSet::new(),
    )
    .map_err(|e| e.to_string())?;
    Ok((principal, entity))
}

impl Policy {
    /// Loads and validates the policies of `dir`.
    pub fn open(dir: &Path, service_uid: u32) -> Result<Self, PolicyError> {
        let schema = schema()?;
        let (policies, files) = load_dir(dir, &schema)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            schema,
            current: RwLock::new(Arc::new(Loaded { policies, files })),
            authorizer: Authorizer::new(),
            service_uid,
        })
    }

    /// Reloads the directory. On error the previous set stays in force and the error is
    /// returned for logging.
    pub fn reload(&self) -> Result<usize, PolicyError> {
        let (policies, files) = load_dir(&self.dir, &self.schema)?;
        let n = policies.policies().count();
        *self.current.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(Loaded { policies, files });
        Ok(n)
    }

    /// The policy files in force.
    pub fn files(&self) -> Vec<PathBuf> {
        self.loaded().files.clone()
    }

    fn loaded(&self) -> Arc<Loaded> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Decides one request.
    pub fn decide(&self, caller: &Caller, action: Action, key: &KeyFacts<'_>) -> Verdict {
        match self.try_decide(caller, action, key) {
            Ok(v) => v,
            // A request that cannot even be formed (should not happen with the built-in schema)
            // is denied, and says why.
            Err(e) => Verdict {
                allowed: false,
                policies: Vec::new(),
                errors: vec![e],
            },
        }
    }

    fn try_decide(
        &self,
        caller: &Caller,
        action: Action,
        key: &KeyFacts<'_>,
    ) -> Result<Verdict, String> {
        let resource = uid("Keywarden::Key", key.name);
        let action_uid = uid("Keywarden::Action", action.name());
        let long = |v: u32| RestrictedExpression::new_long(i64::from(v));
        let (principal, caller_entity) = principal_entity(caller)?;
        let key_entity = Entity::new_with_tags(
            resource.clone(),
            [
                (
                    "name".to_string(),
                    RestrictedExpression::new_string(key.name.to_owned()),
                ),
                (
                    "algorithm".to_string(),
                    RestrictedExpression::new_string(key.algorithm.to_owned()),
                ),
                (
                    "backend".to_string(),
                    RestrictedExpression::new_string(key.backend.to_owned()),
                ),
                ("owner_uid".to_string(), long(key.owner_uid)),
                (
                    "state".to_string(),
                    RestrictedExpression::new_string(key.state.to_owned()),
                ),
            ],
            [],
            key.labels
                .iter()
                .map(|(k, v)| (k.clone(), RestrictedExpression::new_string(v.clone()))),
        )
        .map_err(|e| e.to_string())?;
        // The schema supplies the action hierarchy ("Sign" in "use"…), so entities are built
        // with it; it also checks the entities' shape.
        let entities = Entities::from_entities([caller_entity, key_entity], Some(&self.schema))
            .map_err(|e| e.to_string())?;
        let context = Context::from_pairs([("service_uid".to_string(), long(self.service_uid))])
            .map_err(|e| e.to_string())?;
        let request = Request::new(principal, action_uid, resource, context, None)
            .map_err(|e| e.to_string())?;
        let loaded = self.loaded();
        let response = self
            .authorizer
            .is_authorized(&request, &loaded.policies, &entities);
        Ok(Verdict {
            allowed: response.decision() == Decision::Allow,
            policies: response
                .diagnostics()
                .reason()
                .map(|id| id.to_string())
                .collect(),
            errors: response
                .diagnostics()
                .errors()
                .map(|e| e.to_string())
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn caller(uid: u32, gid: u32) -> Caller {
        Caller::Local(crate::service::identity::LocalCaller {
            uid,
            gid,
            pid: 42,
            exe: "/usr/bin/test".into(),
        })
    }

    fn client(identity: &str) -> Caller {
        Caller::Remote(std::sync::Arc::new(crate::service::tls::RemoteCaller {
            identity: identity.into(),
            subject: "CN=test client".into(),
            issuer: "CN=test CA".into(),
            uris: vec![identity.into()],
            dns_names: vec![],
            fingerprint: "00".repeat(32),
            address: "127.0.0.1:40000".into(),
        }))
    }

    fn with_policies(files: &[(&str, &str)]) -> (tempfile::TempDir, Result<Policy, PolicyError>) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let p = Policy::open(dir.path(), 999);
        (dir, p)
    }

    fn key<'a>(owner: u32, labels: &'a BTreeMap<String, String>) -> KeyFacts<'a> {
        KeyFacts {
            name: "k",
            algorithm: "ecdsa-p256",
            backend: "sim",
            owner_uid: owner,
            state: "enabled",
            labels,
        }
    }

    #[test]
    fn default_policies_admin_owner_and_deny() {
        let (_d, p) = with_policies(&[("default.cedar", DEFAULT_POLICIES)]);
        let p = p.unwrap();
        let none = BTreeMap::new();
        let v = p.decide(&caller(0, 0), Action::DestroyKey, &key(1000, &none));
        assert!(v.allowed);
        assert_eq!(v.policies, vec!["admin".to_string()]);
        assert!(
            p.decide(&caller(999, 5), Action::Sign, &key(1000, &none))
                .allowed,
            "service uid"
        );
        assert!(
            p.decide(&caller(1000, 5), Action::Sign, &key(1000, &none))
                .allowed,
            "owner"
        );
        let v = p.decide(&caller(1001, 5), Action::Sign, &key(1000, &none));
        assert!(!v.allowed && v.policies.is_empty(), "{v:?}");
        assert!(
            p.decide(&caller(1001, 5), Action::CreateKey, &key(1001, &none))
                .allowed
        );
        assert!(
            !p.decide(&caller(1001, 5), Action::CreateKey, &key(1000, &none))
                .allowed
        );
    }

    #[test]
    fn example_label_policy_grants_exactly_what_it_says() {
        let example = include_str!("../../policies/examples/team-labels.cedar");
        let (_d, p) =
            with_policies(&[("default.cedar", DEFAULT_POLICIES), ("team.cedar", example)]);
        let p = p.unwrap();
        let payments: BTreeMap<_, _> = [("team".to_string(), "payments".to_string())].into();
        let other: BTreeMap<_, _> = [("team".to_string(), "ops".to_string())].into();
        let member = caller(1001, 2000);
        assert!(
            p.decide(&member, Action::Sign, &key(1000, &payments))
                .allowed
        );
        assert!(
            p.decide(&member, Action::GetPublicKey, &key(1000, &payments))
                .allowed
        );
        assert!(
            !p.decide(&member, Action::Agree, &key(1000, &payments))
                .allowed
        );
        assert!(
            !p.decide(&member, Action::RotateKey, &key(1000, &payments))
                .allowed
        );
        assert!(!p.decide(&member, Action::Sign, &key(1000, &other)).allowed);
        assert!(
            !p.decide(&caller(1001, 2001), Action::Sign, &key(1000, &payments))
                .allowed
        );
        let frozen: BTreeMap<_, _> = [("frozen".to_string(), "true".to_string())].into();
        let v = p.decide(&caller(1000, 1), Action::Sign, &key(1000, &frozen));
        assert!(!v.allowed);
        assert_eq!(v.policies, vec!["frozen-keys".to_string()]);
    }

    #[test]
    fn remote_clients_get_nothing_by_default_and_exactly_what_the_example_grants() {
        let none = BTreeMap::new();
        let (_d, p) = with_policies(&[("default.cedar", DEFAULT_POLICIES)]);
        let p = p.unwrap();
        let anyone = client("spiffe://example.org/payments/api");
        for action in [
            Action::CreateKey,
            Action::Sign,
            Action::GetKey,
            Action::DestroyKey,
        ] {
            let v = p.decide(&anyone, action, &key(999, &none));
            assert!(!v.allowed && v.errors.is_empty(), "{action:?}: {v:?}");
        }

        let example = include_str!("../../policies/examples/remote-clients.cedar");
        let (_d, p) = with_policies(&[
            ("default.cedar", DEFAULT_POLICIES),
            ("remote.cedar", example),
        ]);
        let p = p.unwrap();
        let creator = client("spiffe://example.org/payments/api");
        let mine: BTreeMap<_, _> = [(
            "keywarden.creator".to_string(),
            "spiffe://example.org/payments/api".to_string(),
        )]
        .into();
        let v = p.decide(&creator, Action::CreateKey, &key(999, &mine));
        assert_eq!(
            (v.allowed, v.policies.clone()),
            (true, vec!["remote-create".to_string()])
        );
        assert!(
            !p.decide(
                &client("spiffe://example.org/ops/x"),
                Action::CreateKey,
                &key(999, &none)
            )
            .allowed,
            "outside the trust-domain path"
        );
        for action in [
            Action::Sign,
            Action::Agree,
            Action::RotateKey,
            Action::DestroyKey,
        ] {
            assert!(
                p.decide(&creator, action, &key(999, &mine)).allowed,
                "{action:?}"
            );
            assert!(
                !p.decide(
                    &client("spiffe://example.org/payments/other"),
                    action,
                    &key(999, &mine)
                )
                .allowed,
                "{action:?} by another client"
            );
        }
        // The named signer signs team keys it did not create, and does nothing else with them.
        let team: BTreeMap<_, _> = [("team".to_string(), "payments".to_string())].into();
        let signer = client("spiffe://example.org/payments/signer");
        assert!(p.decide(&signer, Action::Sign, &key(999, &team)).allowed);
        assert!(!p.decide(&signer, Action::Agree, &key(999, &team)).allowed);
        assert!(!p.decide(&signer, Action::Sign, &key(999, &none)).allowed);
        // A local caller whose uid owns a key is not a remote client, and vice versa.
        assert!(
            p.decide(&caller(1000, 5), Action::Sign, &key(1000, &none))
                .allowed
        );
        assert!(!p.decide(&creator, Action::Sign, &key(1000, &none)).allowed);
    }

    #[test]
    fn a_pre_tls_policy_that_reads_principal_uid_unscoped_is_refused_with_a_hint() {
        let (_d, p) = with_policies(&[(
            "old.cedar",
            "permit (principal, action, resource) when { principal.uid == 0 };",
        )]);
        let e = p.unwrap_err().to_string();
        assert!(e.contains("principal is Keywarden::Caller"), "{e}");
    }

    #[test]
    fn a_permit_for_every_kind_of_caller_is_refused_and_a_forbid_is_not() {
        // Valid Cedar, reads no principal attribute: before remote clients it meant "every
        // local caller"; now it would also mean every TLS client.
        let (_d, p) = with_policies(&[(
            "public.cedar",
            "@id(\"read-public\") permit (principal, action == Keywarden::Action::\"GetPublicKey\", resource);",
        )]);
        let e = p.unwrap_err().to_string();
        assert!(
            e.contains("public.cedar")
                && e.contains("\"read-public\" applies to every kind of caller"),
            "{e}"
        );
        let (_d, p) = with_policies(&[
            ("default.cedar", DEFAULT_POLICIES),
            (
                "freeze.cedar",
                "forbid (principal, action, resource) when { resource.hasTag(\"frozen\") };",
            ),
        ]);
        p.unwrap();
    }

    #[test]
    fn the_previous_shipped_default_is_recognised() {
        assert!(is_previous_default(PREVIOUS_DEFAULT_0_1));
        assert!(!is_previous_default(DEFAULT_POLICIES));
        assert!(!is_previous_default(
            &PREVIOUS_DEFAULT_0_1.replace("== 0", "== 1")
        ));
    }

    #[test]
    fn malformed_and_invalid_policies_are_refused_and_reload_keeps_the_last_good_set() {
        let (_d, p) =
            with_policies(&[("bad.cedar", "permit (principal, action, resource) when { ")]);
        let e = p.unwrap_err();
        assert!(e.to_string().starts_with("policy file "), "{e}");
        assert!(e.to_string().contains("bad.cedar"), "{e}");

        let (_d, p) = with_policies(&[(
            "typo.cedar",
            "permit (principal is Keywarden::Caller, action, resource) when { principal.uidd == 0 };",
        )]);
        let e = p.unwrap_err();
        assert!(e.to_string().contains("do not validate"), "{e}");

        let (dir, p) = with_policies(&[("default.cedar", DEFAULT_POLICIES)]);
        let p = p.unwrap();
        std::fs::write(
            dir.path().join("zz.cedar"),
            "forbid (principal, action, resource",
        )
        .unwrap();
        assert!(p.reload().is_err());
        let none = BTreeMap::new();
        assert!(
            p.decide(&caller(0, 0), Action::Sign, &key(0, &none))
                .allowed,
            "last good set kept"
        );
    }
}
