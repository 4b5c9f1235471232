//! `Pkcs11Vault`: the `Vault` trait over one PKCS#11 token.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use cryptoki::context::Function;
use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState};
use cryptoki::slot::{Limit, Slot};
use keywarden_vault::{
    Algorithm, BackendInfo, Error as VaultError, KeyInfo, KeyKind, KeyRef, KeySpec, PublicKey,
    Result as VaultResult, SharedSecret, Signature, Vault, async_trait, check_message,
};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::config::{Pkcs11Config, TokenSelector};
use crate::error::Error;
use crate::keys::{self, ID_LEN};
use crate::module;
use crate::pool::{OpError, Pool};
use crate::rv;

/// A key found on the token: its object handle (valid for this process until the object is
/// destroyed or the token is re-inserted) and what is public about it.
struct Found {
    handle: ObjectHandle,
    info: KeyInfo,
}

/// Keys already looked up, so that a signature costs one PKCS#11 call, not four.
#[derive(Default)]
struct KeyCache(Mutex<HashMap<KeyRef, Arc<Found>>>);

impl KeyCache {
    fn map(&self) -> MutexGuard<'_, HashMap<KeyRef, Arc<Found>>> {
        // Insert/remove/clear only: a panic elsewhere cannot leave the map inconsistent.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Inner {
    pool: Arc<Pool>,
    cache: Arc<KeyCache>,
    info: BackendInfo,
    token: String,
}

/// A [`Vault`] whose keys live on one PKCS#11 token.
///
/// Cheap to share: wrap it in an `Arc` (`Arc<dyn Vault>`); all methods take `&self`.
#[derive(Clone)]
pub struct Pkcs11Vault {
    inner: Arc<Inner>,
}

impl fmt::Debug for Pkcs11Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Vault")
            .field("token", &self.inner.token)
            .field("algorithms", &self.inner.info.algorithms)
            .field("sessions", &self.inner.pool.size())
            .finish()
    }
}

impl Pkcs11Vault {
    /// Loads the module, finds the token, reads the PIN, logs in and discovers which
    /// algorithms the token supports. Blocks while it talks to the token: from async code,
    /// call it inside `spawn_blocking`.
    pub fn open(config: Pkcs11Config) -> Result<Self, Error> {
        let ctx = module::load(&config.module)?;
        Self::open_with(ctx, config)
    }

    /// Like [`open`](Self::open), on a context the caller already has (e.g.
    /// [`module::load_self`]); `config.module` is then only informational.
    pub fn open_with(ctx: Pkcs11, config: Pkcs11Config) -> Result<Self, Error> {
        let (slot, token) = find_token(&ctx, &config.token)?;
        let pin = config.pin.resolve()?;
        let size = pool_size(&ctx, slot, config.max_sessions)?;
        let algorithms = discover(&ctx, slot)?;

        let cache = Arc::new(KeyCache::default());
        let on_recover = {
            let cache = Arc::clone(&cache);
            Box::new(move || cache.map().clear())
        };
        let pool = Arc::new(Pool::new(ctx, slot, pin, token.clone(), size, on_recover));
        // Log in once now, so that a wrong PIN is reported by open(), not by the first use.
        let first = pool.open_session().map_err(|e| match e {
            CkError::Pkcs11(
                RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange,
                _,
            ) => Error::PinIncorrect(token.clone()),
            CkError::Pkcs11(RvError::PinLocked, _) => Error::PinLocked(token.clone()),
            other => Error::ck(other),
        })?;
        pool.seed(first);
        tracing::info!(token = %token, sessions = size, ?algorithms, "PKCS#11 token open");
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                cache,
                info: BackendInfo {
                    name: format!("pkcs11:{token}"),
                    algorithms,
                    hardware_resident: true,
                },
                token,
            }),
        })
    }

    /// The most PKCS#11 sessions this vault opens at once.
    pub fn max_sessions(&self) -> usize {
        self.inner.pool.size()
    }

    fn not_found(&self, key: &KeyRef) -> VaultError {
        VaultError::KeyNotFound(format!(
            "no key {key} on PKCS#11 token {}",
            self.inner.token
        ))
    }
}

/// Finds the slot whose token matches the selector.
fn find_token(ctx: &Pkcs11, wanted: &TokenSelector) -> Result<(Slot, String), Error> {
    let mut available = Vec::new();
    for slot in ctx.get_slots_with_token().map_err(Error::ck)? {
        let info = ctx.get_token_info(slot).map_err(Error::ck)?;
        let label = info.label().trim_end().to_owned();
        let serial = info.serial_number().trim_end().to_owned();
        let matches = match wanted {
            TokenSelector::Label(l) => *l == label,
            TokenSelector::Serial(s) => *s == serial,
        };
        if matches {
            if !info.token_initialized() {
                return Err(Error::TokenNotInitialized(format!("{label:?}")));
            }
            if info.user_pin_locked() {
                return Err(Error::PinLocked(format!("{label:?}")));
            }
            return Ok((slot, label));
        }
        if info.token_initialized() {
            available.push(format!("{label:?} (serial {serial})"));
        }
    }
    Err(Error::TokenNotFound {
        wanted: wanted.to_string(),
        available,
    })
}

/// Twice the CPUs (2 to 32) unless configured, and never more than the token allows.
fn pool_size(ctx: &Pkcs11, slot: Slot, configured: Option<usize>) -> Result<usize, Error> {
    let default = std::thread::available_parallelism().map_or(2, |n| (n.get() * 2).clamp(2, 32));
    let wanted = configured.unwrap_or(default);
    if wanted == 0 {
        return Err(Error::Config("max_sessions must be at least 1".into()));
    }
    let info = ctx.get_token_info(slot).map_err(Error::ck)?;
    let limit = |l: Limit| match l {
        Limit::Max(n) => usize::try_from(n).unwrap_or(usize::MAX),
        Limit::Unavailable | Limit::Infinite => usize::MAX,
    };
    let token_max = limit(info.max_session_count()).min(limit(info.max_rw_session_count()));
    Ok(wanted.min(token_max).max(1))
}

/// Which of keywarden's algorithms the token's mechanism list covers.
fn discover(ctx: &Pkcs11, slot: Slot) -> Result<Vec<Algorithm>, Error> {
    let mechs = ctx.get_mechanism_list(slot).map_err(Error::ck)?;
    let has = |m: MechanismType| mechs.contains(&m);
    let mut out = Vec::new();
    if has(MechanismType::ECC_KEY_PAIR_GEN) && has(MechanismType::ECDSA) {
        out.push(Algorithm::EcdsaP256Sha256);
    }
    if has(MechanismType::ECC_KEY_PAIR_GEN) && has(MechanismType::ECDH1_DERIVE) {
        out.push(Algorithm::EcdhP256);
    }
    if has(MechanismType::ECC_EDWARDS_KEY_PAIR_GEN) && has(MechanismType::EDDSA) {
        out.push(Algorithm::Ed25519);
    }
    Ok(out)
}

impl Inner {
    /// The key's handle and info, from the cache or the token.
    fn find(&self, session: &Session, key: &KeyRef) -> Result<Option<Arc<Found>>, OpError> {
        if let Some(found) = self.cache.map().get(key) {
            return Ok(Some(Arc::clone(found)));
        }
        let handles = keys::find_all(session, ObjectClass::PRIVATE_KEY, key)?;
        let Some(&first) = handles.first() else {
            // Private objects are invisible to a session that is not logged in (someone called
            // C_Logout, or the token forgot us): that is a lost login, not a missing key.
            if !logged_in(session)? {
                return Err(
                    CkError::Pkcs11(RvError::UserNotLoggedIn, Function::FindObjects).into(),
                );
            }
            return Ok(None);
        };
        let info = keys::read_info(session, first, key)?;
        if handles.len() > 1 {
            same_private_key(session, &handles, &info)?;
        }
        let found = Arc::new(Found {
            handle: first,
            info,
        });
        self.cache.map().insert(key.clone(), Arc::clone(&found));
        Ok(Some(found))
    }

    /// Runs `f` with the key's handle; if the token says the handle is stale (the object was
    /// destroyed elsewhere, or the token re-numbered it), looks the key up once more.
    fn with_key<T>(
        &self,
        session: &Session,
        key: &KeyRef,
        not_found: &VaultError,
        f: &dyn Fn(&Found) -> Result<T, OpError>,
    ) -> Result<T, OpError> {
        for attempt in 0..2 {
            let found = self.find(session, key)?.ok_or_else(|| not_found.clone())?;
            match f(&found) {
                Err(OpError::Ck(e)) if rv::handle_invalid(&e) && attempt == 0 => {
                    self.cache.map().remove(key);
                }
                other => return other,
            }
        }
        Err(not_found.clone().into())
    }
}

#[async_trait]
impl Vault for Pkcs11Vault {
    fn info(&self) -> BackendInfo {
        self.inner.info.clone()
    }

    async fn generate(&self, spec: &KeySpec) -> VaultResult<KeyInfo> {
        let algorithm = spec.algorithm();
        if !self.inner.info.supports(algorithm) {
            return Err(VaultError::UnsupportedAlgorithm(format!(
                "PKCS#11 token {} has no mechanisms for {algorithm}",
                self.inner.token
            )));
        }
        let mut id = [0u8; ID_LEN];
        getrandom::fill(&mut id)
            .map_err(|e| VaultError::backend("pkcs11", "RNG", format!("random key id: {e}")))?;
        let key = KeyRef::new(id.to_vec());
        let label = spec.label().to_owned();
        let doing = format!("generate {algorithm} key {key}");
        let id_for_op = key.clone();
        // Generation alone is one pooled call: once C_GenerateKeyPair has succeeded nothing in
        // this closure can fail, so a retry after a lost session never makes a second key pair
        // under the same CKA_ID. Reading the key back is a separate, retry-safe call.
        self.inner
            .pool
            .run(doing, move |session| {
                let (mechanism, public, private) =
                    keys::generation(algorithm, id_for_op.as_bytes(), &label);
                session.generate_key_pair(&mechanism, &public, &private)?;
                Ok(())
            })
            .await?;
        self.describe(&key).await
    }

    async fn describe(&self, key: &KeyRef) -> VaultResult<KeyInfo> {
        let inner = Arc::clone(&self.inner);
        let key = key.clone();
        let not_found = self.not_found(&key);
        self.inner
            .pool
            .run(format!("describe key {key}"), move |session| {
                Ok(inner
                    .find(session, &key)?
                    .ok_or_else(|| not_found.clone())?
                    .info
                    .clone())
            })
            .await
    }

    async fn sign(&self, key: &KeyRef, message: &[u8]) -> VaultResult<Signature> {
        check_message(message)?;
        // One copy, because the blocking closure must own its input. ECDSA hashes it host-side
        // (SoftHSM2 has no CKM_ECDSA_SHA256) once the key's algorithm is known; Ed25519 signs
        // the message itself, so neither algorithm pays for the other's work.
        let message: Arc<[u8]> = Arc::from(message);
        let inner = Arc::clone(&self.inner);
        let key = key.clone();
        let not_found = self.not_found(&key);
        self.inner
            .pool
            .run(format!("sign with key {key}"), move |session| {
                inner.with_key(session, &key, &not_found, &|found| {
                    let algorithm = found.info.algorithm;
                    let raw = match algorithm {
                        Algorithm::EcdsaP256Sha256 => {
                            let digest: [u8; 32] = Sha256::digest(&message).into();
                            session.sign(&Mechanism::Ecdsa, found.handle, &digest)?
                        }
                        Algorithm::Ed25519 => session.sign(
                            &Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                            found.handle,
                            &message,
                        )?,
                        _ => {
                            return Err(VaultError::UnsupportedAlgorithm(format!(
                                "key {key} is {algorithm}; it cannot sign"
                            ))
                            .into());
                        }
                    };
                    Ok(Signature::from_bytes(algorithm, &raw)?)
                })
            })
            .await
    }

    async fn agree(&self, key: &KeyRef, peer: &PublicKey) -> VaultResult<SharedSecret> {
        if peer.kind() != KeyKind::P256 {
            return Err(VaultError::InvalidInput(format!(
                "ECDH needs a P-256 peer key, got {:?}",
                peer.kind()
            )));
        }
        let point = peer.as_bytes().to_vec();
        let inner = Arc::clone(&self.inner);
        let key = key.clone();
        let not_found = self.not_found(&key);
        self.inner
            .pool
            .run(format!("ECDH with key {key}"), move |session| {
                inner.with_key(session, &key, &not_found, &|found| {
                    if found.info.algorithm != Algorithm::EcdhP256 {
                        return Err(VaultError::UnsupportedAlgorithm(format!(
                            "key {key} is {}; it cannot do key agreement",
                            found.info.algorithm
                        ))
                        .into());
                    }
                    derive_shared(session, found.handle, &point)
                })
            })
            .await
    }

    async fn destroy(&self, key: &KeyRef) -> VaultResult<()> {
        let inner = Arc::clone(&self.inner);
        let key = key.clone();
        let not_found = self.not_found(&key);
        self.inner
            .pool
            .run(format!("destroy key {key}"), move |session| {
                inner.cache.map().remove(&key);
                let private = keys::find_all(session, ObjectClass::PRIVATE_KEY, &key)?;
                let Some(&first) = private.first() else {
                    if !logged_in(session)? {
                        return Err(CkError::Pkcs11(
                            RvError::UserNotLoggedIn,
                            Function::FindObjects,
                        )
                        .into());
                    }
                    return Err(not_found.clone().into());
                };
                if private.len() > 1 {
                    // Destroy copies of this key only, never another key under its id.
                    let info = keys::read_info(session, first, &key)?;
                    same_private_key(session, &private, &info)?;
                }
                let public = keys::find_all(session, ObjectClass::PUBLIC_KEY, &key)?;
                if public.len() > 1 {
                    // Checks that the copies hold one public key.
                    keys::read_info(session, first, &key)?;
                }
                // A copy that was the same object as one already destroyed is gone with it.
                for (i, handle) in private.iter().chain(public.iter()).enumerate() {
                    match session.destroy_object(*handle) {
                        Err(e) if i > 0 && rv::handle_invalid(&e) => {}
                        other => other?,
                    }
                }
                Ok(())
            })
            .await
    }

    async fn list(&self) -> VaultResult<Vec<KeyInfo>> {
        let inner = Arc::clone(&self.inner);
        self.inner
            .pool
            .run("list keys".into(), move |session| {
                let mut by_id: std::collections::BTreeMap<KeyRef, Vec<ObjectHandle>> =
                    std::collections::BTreeMap::new();
                for handle in session.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])? {
                    let id = session.get_attributes(handle, &[AttributeType::Id])?;
                    let Some(Attribute::Id(id)) = id.into_iter().next() else {
                        continue;
                    };
                    if id.is_empty() {
                        continue;
                    }
                    by_id.entry(KeyRef::new(id)).or_default().push(handle);
                }
                let mut out = Vec::new();
                for (key, handles) in by_id {
                    let handle = handles[0];
                    // Copies of one key are listed once; objects under one id that are not
                    // one key are left out (and never cached) rather than guessed between.
                    let checked = keys::read_info(session, handle, &key).and_then(|info| {
                        if handles.len() > 1 {
                            same_private_key(session, &handles, &info)?;
                        }
                        Ok(info)
                    });
                    let info = match checked {
                        Ok(info) => info,
                        // Keys keywarden does not use (RSA, other curves) are not listed.
                        Err(OpError::Vault(VaultError::UnsupportedAlgorithm(why))) => {
                            tracing::debug!(%why, "skipping key");
                            continue;
                        }
                        Err(OpError::Vault(e @ VaultError::Backend { .. }))
                            if e.to_string().contains("DUPLICATE_ID") =>
                        {
                            tracing::warn!(error = %e, "not listing key {key}");
                            inner.cache.map().remove(&key);
                            continue;
                        }
                        Err(e) => return Err(e),
                    };
                    inner.cache.map().insert(
                        key,
                        Arc::new(Found {
                            handle,
                            info: info.clone(),
                        }),
                    );
                    out.push(info);
                }
                out.sort_by(|a, b| {
                    a.label
                        .cmp(&b.label)
                        .then_with(|| a.key_ref.cmp(&b.key_ref))
                });
                Ok(out)
            })
            .await
    }
}

/// True when the session can see private objects.
fn logged_in(session: &Session) -> Result<bool, OpError> {
    Ok(matches!(
        session.get_session_info()?.session_state(),
        SessionState::RwUser | SessionState::RoUser
    ))
}

/// `CKM_ECDH1_DERIVE` with `CKD_NULL` into a short-lived session object whose value is read and
/// the object destroyed at once (also when reading fails).
/// Several private key objects under one `CKA_ID`: usable only if they are one key listed
/// more than once (SoftHSM2 2.6 does that when two processes create objects in one token
/// directory at once). Proven by using each: every copy must sign so that the key's public
/// key verifies, or derive the same secret from the key's own public point. A token that
/// holds a different key under the same id gets a `DUPLICATE_ID` error, never a guess.
fn same_private_key(
    session: &Session,
    handles: &[ObjectHandle],
    info: &KeyInfo,
) -> Result<(), OpError> {
    const PROBE: &[u8] = b"keywarden: is this one key listed twice?";
    let differ = || {
        keys::duplicate_id(
            ObjectClass::PRIVATE_KEY,
            &info.key_ref,
            handles.len(),
            " and are not one key",
        )
    };
    let mut secrets: Vec<Zeroizing<Vec<u8>>> = Vec::new();
    for &handle in handles {
        match info.algorithm {
            Algorithm::EcdsaP256Sha256 => {
                let digest: [u8; 32] = Sha256::digest(PROBE).into();
                let raw = session.sign(&Mechanism::Ecdsa, handle, &digest)?;
                keywarden_vault::verify::verify_raw(&info.public_key, PROBE, &raw)
                    .map_err(|_| differ())?;
            }
            Algorithm::Ed25519 => {
                let raw = session.sign(
                    &Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                    handle,
                    PROBE,
                )?;
                keywarden_vault::verify::verify_raw(&info.public_key, PROBE, &raw)
                    .map_err(|_| differ())?;
            }
            _ => {
                let point = info.public_key.as_bytes().to_vec();
                let secret = derive_shared(session, handle, &point)?;
                secrets.push(Zeroizing::new(secret.expose_secret().to_vec()));
            }
        }
    }
    if secrets.windows(2).any(|w| w[0] != w[1]) {
        return Err(differ());
    }
    tracing::debug!(key = %info.key_ref, copies = handles.len(), "the token lists one private key object more than once");
    Ok(())
}

fn derive_shared(
    session: &Session,
    key: ObjectHandle,
    point: &[u8],
) -> Result<SharedSecret, OpError> {
    let mechanism = Mechanism::Ecdh1Derive(Ecdh1DeriveParams::new(EcKdf::null(), point));
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::Token(false),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
        Attribute::ValueLen(32.into()),
    ];
    let derived = session.derive_key(&mechanism, key, &template)?;
    let read = session.get_attributes(derived, &[AttributeType::Value]);
    let destroyed = session.destroy_object(derived);
    let mut secret = None;
    for attr in read? {
        if let Attribute::Value(v) = attr {
            secret = Some(Zeroizing::new(v));
        }
    }
    destroyed?;
    let secret = secret.ok_or_else(|| {
        VaultError::backend(
            "pkcs11",
            "NO_VALUE",
            "the derived ECDH secret has no readable CKA_VALUE",
        )
    })?;
    if secret.len() != 32 {
        return Err(VaultError::backend(
            "pkcs11",
            "BAD_LENGTH",
            format!(
                "the derived ECDH secret is {} bytes, expected 32",
                secret.len()
            ),
        )
        .into());
    }
    Ok(SharedSecret::new(secret))
}
