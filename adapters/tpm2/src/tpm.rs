//! The one owner of the ESAPI context: a connection to the TPM, the parent key, and a small
//! LRU of loaded child keys. Everything here runs on the worker thread ([`crate::worker`]).

use std::str::FromStr;
use std::thread;
use std::time::Duration;

use keywarden_vault::{Algorithm, KeyRef, PublicKey};
use secrecy::{ExposeSecret, SecretString};
use tss_esapi::Context;
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
use tss_esapi::constants::{AlgorithmIdentifier, CapabilityType};
use tss_esapi::handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::Hierarchy as EsysHierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Auth, CapabilityData, CreateKeyResult, Digest, EccParameter, EccPoint, EccScheme, HashScheme,
    HashcheckTicket, KeyDerivationFunctionScheme, Private, Public, PublicBuilder,
    PublicEccParametersBuilder, Signature as TpmSignature, SignatureScheme,
    SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;
use zeroize::Zeroizing;

use crate::config::{Config, Hierarchy};
use crate::error::Tpm2Error;
use crate::rc::Class;
use crate::store::StoredKey;

/// How often a command answered with `TPM_RC_RETRY`/`YIELDED`/`TESTING` is sent again.
const RETRIES: u32 = 20;

/// A live connection: the context, the parent key and the loaded children.
pub(crate) struct Connection {
    ctx: Context,
    parent: KeyHandle,
    /// Loaded child keys, least recently used first.
    loaded: Vec<(KeyRef, KeyHandle, Algorithm)>,
    capacity: usize,
}

/// What the TPM reported it can do, read once at start.
pub(crate) fn algorithms(conn: &mut Connection) -> Result<Vec<Algorithm>, Tpm2Error> {
    // A password session on a command without authorizations is TPM_RC_VALUE: none here.
    let (curves, algs) = conn.ctx.execute_without_session(|ctx| {
        let (curves, _) = retry("TPM2_GetCapability(ECC_CURVES)", || {
            ctx.get_capability(CapabilityType::EccCurves, 0, 64)
        })?;
        let (algs, _) = retry("TPM2_GetCapability(ALGS)", || {
            ctx.get_capability(CapabilityType::Algorithms, 0, 128)
        })?;
        Ok::<_, Tpm2Error>((curves, algs))
    })?;
    let p256 = matches!(&curves, CapabilityData::EccCurves(list)
        if list.contains(&tss_esapi::constants::EccCurveIdentifier::NistP256));
    let has = |id| matches!(&algs, CapabilityData::Algorithms(list) if list.find(id).is_some());
    let mut out = Vec::new();
    if p256 && has(AlgorithmIdentifier::Ecc) && has(AlgorithmIdentifier::EcDsa) {
        out.push(Algorithm::EcdsaP256Sha256);
    }
    if p256 && has(AlgorithmIdentifier::Ecc) && has(AlgorithmIdentifier::EcDh) {
        out.push(Algorithm::EcdhP256);
    }
    Ok(out)
}

/// Sends a command until the TPM stops asking for a retry.
fn retry<T>(op: &'static str, mut f: impl FnMut() -> tss_esapi::Result<T>) -> Result<T, Tpm2Error> {
    let mut delay = Duration::from_millis(5);
    let mut attempt = 0;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) => {
                let rc = crate::rc::from_esapi(&e);
                if attempt < RETRIES && rc.is_some_and(|rc| rc.class() == Class::Retry) {
                    tracing::debug!(op, rc = %rc.map(|r| r.to_string()).unwrap_or_default(), "retrying");
                    thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_millis(200));
                    attempt += 1;
                    continue;
                }
                return Err(Tpm2Error::esapi(op, e));
            }
        }
    }
}

fn wrapper(op: &'static str) -> impl FnOnce(tss_esapi::Error) -> Tpm2Error {
    move |e| Tpm2Error::esapi(op, e)
}

/// The fixed template of the primary storage key: the same template on the same hierarchy
/// seed gives the same key after every restart.
fn primary_template(unique: EccPoint) -> tss_esapi::Result<Public> {
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_restricted(true)
        .with_decrypt(true)
        .build()?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new_restricted_decryption_key(
                SymmetricDefinitionObject::AES_128_CFB,
                EccCurve::NistP256,
            )
            .build()?,
        )
        .with_ecc_unique_identifier(unique)
        .build()
}

/// The template of a child key: generated inside the TPM, bound to this TPM and this parent,
/// usable with an empty password, exempt from dictionary-attack counting.
fn child_template(algorithm: Algorithm) -> Result<Public, Tpm2Error> {
    let signing = match algorithm {
        Algorithm::EcdsaP256Sha256 => true,
        Algorithm::EcdhP256 => false,
        other => {
            return Err(Tpm2Error::Unsupported(format!(
                "{other} keys cannot be made on a TPM 2.0 (it has ECDSA and ECDH on P-256)"
            )));
        }
    };
    let build = || -> tss_esapi::Result<Public> {
        let attributes = ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_sensitive_data_origin(true)
            .with_user_with_auth(true)
            .with_no_da(true)
            .with_sign_encrypt(signing)
            .with_decrypt(!signing)
            .build()?;
        let parameters = if signing {
            PublicEccParametersBuilder::new_unrestricted_signing_key(
                EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)),
                EccCurve::NistP256,
            )
            .build()?
        } else {
            PublicEccParametersBuilder::new()
                .with_ecc_scheme(EccScheme::EcDh(HashScheme::new(HashingAlgorithm::Sha256)))
                .with_curve(EccCurve::NistP256)
                .with_is_signing_key(false)
                .with_is_decryption_key(true)
                .with_restricted(false)
                .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
                .build()?
        };
        PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::Ecc)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attributes)
            .with_ecc_parameters(parameters)
            .with_ecc_unique_identifier(EccPoint::default())
            .build()
    };
    build().map_err(wrapper("build the key template"))
}

/// Left-pads a big-endian integer to 32 bytes.
fn fixed32(bytes: &[u8]) -> Option<[u8; 32]> {
    if bytes.len() > 32 {
        return None;
    }
    let mut out = [0u8; 32];
    out[32 - bytes.len()..].copy_from_slice(bytes);
    Some(out)
}

/// The P-256 public key in a TPM public area, checked to be what `algorithm` needs.
pub(crate) fn public_key_of(public: &Public, algorithm: Algorithm) -> Result<PublicKey, String> {
    let Public::Ecc {
        object_attributes,
        parameters,
        unique,
        ..
    } = public
    else {
        return Err("not an ECC key".into());
    };
    if parameters.ecc_curve() != EccCurve::NistP256 {
        return Err(format!(
            "curve {:?}, expected NIST P-256",
            parameters.ecc_curve()
        ));
    }
    let signing = object_attributes.sign_encrypt() && !object_attributes.decrypt();
    let agreeing = object_attributes.decrypt() && !object_attributes.sign_encrypt();
    match algorithm {
        Algorithm::EcdsaP256Sha256 if signing => {}
        Algorithm::EcdhP256 if agreeing => {}
        _ => {
            return Err(format!(
                "the public area's attributes do not fit {algorithm}"
            ));
        }
    }
    let (Some(x), Some(y)) = (fixed32(unique.x().value()), fixed32(unique.y().value())) else {
        return Err("coordinate longer than 32 bytes".into());
    };
    let mut sec1 = Vec::with_capacity(65);
    sec1.push(0x04);
    sec1.extend_from_slice(&x);
    sec1.extend_from_slice(&y);
    PublicKey::from_sec1(&sec1).map_err(|e| e.to_string())
}

impl Connection {
    /// Connects through the TCTI and brings up the parent key.
    pub(crate) fn open(config: &Config) -> Result<Self, Tpm2Error> {
        let tcti = TctiNameConf::from_str(&config.tcti).map_err(|e| {
            Tpm2Error::Config(format!(
                "TCTI {:?} is not one of device:…, tabrmd:…, swtpm:…, mssim:… ({e})",
                config.tcti
            ))
        })?;
        let unreachable = |e: tss_esapi::Error| Tpm2Error::Unreachable {
            tcti: config.tcti.clone(),
            why: match crate::rc::from_esapi(&e) {
                Some(rc) => rc.to_string(),
                None => e.to_string(),
            },
        };
        let mut ctx = Context::new(tcti).map_err(unreachable)?;
        // One harmless command proves the link works (some TCTIs connect lazily).
        retry("TPM2_GetCapability", || {
            ctx.get_capability(CapabilityType::TpmProperties, 0x100, 1)
        })
        .map_err(|e| match e.response_code() {
            Some(rc) if rc.class() == Class::Unreachable => Tpm2Error::Unreachable {
                tcti: config.tcti.clone(),
                why: rc.to_string(),
            },
            _ => e,
        })?;

        let parent = match config.persistent_parent {
            Some(handle) => {
                let tpm_handle = PersistentTpmHandle::new(handle).map_err(|_| {
                    Tpm2Error::Config(format!(
                        "persistent_parent {handle:#010x} is not a persistent handle (0x81xxxxxx)"
                    ))
                })?;
                // libtss2 3.2.1 crashes in Esys_TR_FromTPMPublic under a password session:
                // run it with no session at all.
                let object = ctx
                    .execute_without_session(|c| {
                        retry("Esys_TR_FromTPMPublic", || {
                            c.tr_from_tpm_public(TpmHandle::Persistent(tpm_handle))
                        })
                    })
                    .map_err(|e| match e {
                        Tpm2Error::Tpm { rc, .. } => Tpm2Error::Config(format!(
                            "persistent_parent {handle:#010x} cannot be used: {rc} \
                             (is there a key at that handle? `tpm2_getcap handles-persistent`)"
                        )),
                        other => other,
                    })?;
                KeyHandle::from(object)
            }
            None => {
                let hierarchy = match config.hierarchy {
                    Hierarchy::Owner => EsysHierarchy::Owner,
                    Hierarchy::Endorsement => EsysHierarchy::Endorsement,
                };
                if let Some(secret) = &config.owner_auth {
                    set_hierarchy_auth(&mut ctx, hierarchy, secret)?;
                }
                let template =
                    primary_template(EccPoint::default()).map_err(wrapper("primary template"))?;
                ctx.execute_with_session(Some(AuthSession::Password), |c| {
                    retry("TPM2_CreatePrimary", || {
                        c.create_primary(hierarchy, template.clone(), None, None, None, None)
                    })
                })?
                .key_handle
            }
        };
        ctx.set_sessions((Some(AuthSession::Password), None, None));
        Ok(Self {
            ctx,
            parent,
            loaded: Vec::new(),
            capacity: config.loaded_keys,
        })
    }

    /// Creates a child key and returns its (marshalled public, private) blobs and public key.
    pub(crate) fn create(
        &mut self,
        algorithm: Algorithm,
    ) -> Result<(Vec<u8>, Vec<u8>, PublicKey), Tpm2Error> {
        let template = child_template(algorithm)?;
        let created = match self.create_once(&template) {
            // TPM2_Create needs a free object slot too: give back ours and try once more.
            Err(e)
                if e.response_code()
                    .is_some_and(|rc| rc.class() == Class::ObjectMemory) =>
            {
                while !self.loaded.is_empty() {
                    self.evict_oldest();
                }
                self.create_once(&template)?
            }
            other => other?,
        };
        let public_key = public_key_of(&created.out_public, algorithm).map_err(|e| {
            Tpm2Error::Internal(format!("TPM2_Create returned a bad public area: {e}"))
        })?;
        let public = created
            .out_public
            .marshall()
            .map_err(wrapper("marshal the public area"))?;
        Ok((public, created.out_private.value().to_vec(), public_key))
    }

    fn create_once(&mut self, template: &Public) -> Result<CreateKeyResult, Tpm2Error> {
        let parent = self.parent;
        let ctx = &mut self.ctx;
        retry("TPM2_Create", || {
            ctx.create(parent, template.clone(), None, None, None, None)
        })
    }

    /// The handle of a loaded key, loading it (and evicting the least recently used) if needed.
    fn handle(
        &mut self,
        key: &KeyRef,
        stored: impl FnOnce() -> Result<StoredKey, Tpm2Error>,
    ) -> Result<(KeyHandle, Algorithm), Tpm2Error> {
        if let Some(i) = self.loaded.iter().position(|(k, _, _)| k == key) {
            let entry = self.loaded.remove(i);
            let found = (entry.1, entry.2);
            self.loaded.push(entry);
            return Ok(found);
        }
        let stored = stored()?;
        let algorithm = stored.algorithm;
        let public = Public::unmarshall(&stored.public).map_err(|e| Tpm2Error::CorruptBlob {
            path: key.to_string().into(),
            why: format!("public area does not unmarshal: {e}"),
        })?;
        let private =
            Private::try_from(stored.private.clone()).map_err(|e| Tpm2Error::CorruptBlob {
                path: key.to_string().into(),
                why: format!("private area: {e}"),
            })?;
        while !self.loaded.is_empty() && self.loaded.len() >= self.capacity.max(1) {
            self.evict_oldest();
        }
        let handle = match self.load(key, &public, &private) {
            Err(e)
                if e.response_code()
                    .is_some_and(|rc| rc.class() == Class::ObjectMemory) =>
            {
                // Someone else holds slots: give back all of ours and try once more.
                while !self.loaded.is_empty() {
                    self.evict_oldest();
                }
                self.load(key, &public, &private)?
            }
            other => other?,
        };
        self.loaded.push((key.clone(), handle, algorithm));
        Ok((handle, algorithm))
    }

    fn load(
        &mut self,
        key: &KeyRef,
        public: &Public,
        private: &Private,
    ) -> Result<KeyHandle, Tpm2Error> {
        let parent = self.parent;
        let ctx = &mut self.ctx;
        retry("TPM2_Load", || {
            ctx.load(parent, private.clone(), public.clone())
        })
        .map_err(|e| match e.response_code() {
            Some(rc) if rc.class() == Class::ForeignBlob => Tpm2Error::ForeignBlob {
                key: key.clone(),
                rc,
            },
            _ => e,
        })
    }

    fn evict_oldest(&mut self) {
        if self.loaded.is_empty() {
            return;
        }
        let (key, handle, _) = self.loaded.remove(0);
        if let Err(e) = self.ctx.flush_context(ObjectHandle::from(handle)) {
            tracing::warn!(%key, error = %e, "TPM2_FlushContext failed");
        }
    }

    /// Forgets a key (after destroy): flushes it if loaded.
    pub(crate) fn forget(&mut self, key: &KeyRef) {
        if let Some(i) = self.loaded.iter().position(|(k, _, _)| k == key) {
            let (_, handle, _) = self.loaded.remove(i);
            let _ = self.ctx.flush_context(ObjectHandle::from(handle));
        }
    }

    /// ECDSA over a SHA-256 digest computed by the caller; returns `r || s`.
    pub(crate) fn sign(
        &mut self,
        key: &KeyRef,
        stored: impl FnOnce() -> Result<StoredKey, Tpm2Error>,
        digest: [u8; 32],
    ) -> Result<[u8; 64], Tpm2Error> {
        let (handle, algorithm) = self.handle(key, stored)?;
        if algorithm != Algorithm::EcdsaP256Sha256 {
            return Err(Tpm2Error::Unsupported(format!(
                "key {key} is an {algorithm} key; only ecdsa-p256 keys sign"
            )));
        }
        let digest = Digest::try_from(digest.to_vec()).map_err(wrapper("digest"))?;
        let ticket = HashcheckTicket::try_from(TPMT_TK_HASHCHECK {
            tag: TPM2_ST_HASHCHECK,
            hierarchy: TPM2_RH_NULL,
            digest: Default::default(),
        })
        .map_err(wrapper("null hashcheck ticket"))?;
        let ctx = &mut self.ctx;
        let signature = retry("TPM2_Sign", || {
            ctx.sign(
                handle,
                digest.clone(),
                SignatureScheme::Null,
                ticket.clone(),
            )
        })?;
        let TpmSignature::EcDsa(ecc) = signature else {
            return Err(Tpm2Error::Internal(
                "TPM2_Sign returned a non-ECDSA signature".into(),
            ));
        };
        let (Some(r), Some(s)) = (
            fixed32(ecc.signature_r().value()),
            fixed32(ecc.signature_s().value()),
        ) else {
            return Err(Tpm2Error::Internal(
                "TPM2_Sign returned an oversized r or s".into(),
            ));
        };
        let mut out = [0u8; 64];
        out[..32].copy_from_slice(&r);
        out[32..].copy_from_slice(&s);
        Ok(out)
    }

    /// ECDH (`TPM2_ECDH_ZGen`); returns the x-coordinate of the shared point.
    pub(crate) fn agree(
        &mut self,
        key: &KeyRef,
        stored: impl FnOnce() -> Result<StoredKey, Tpm2Error>,
        peer: &PublicKey,
    ) -> Result<Zeroizing<Vec<u8>>, Tpm2Error> {
        let (handle, algorithm) = self.handle(key, stored)?;
        if algorithm != Algorithm::EcdhP256 {
            return Err(Tpm2Error::Unsupported(format!(
                "key {key} is an {algorithm} key; only ecdh-p256 keys do key agreement"
            )));
        }
        let sec1 = peer.as_bytes();
        let point = EccPoint::new(
            EccParameter::try_from(&sec1[1..33]).map_err(wrapper("peer x"))?,
            EccParameter::try_from(&sec1[33..65]).map_err(wrapper("peer y"))?,
        );
        let ctx = &mut self.ctx;
        let z = retry("TPM2_ECDH_ZGen", || ctx.ecdh_z_gen(handle, point.clone()))?;
        let x = fixed32(z.x().value())
            .ok_or_else(|| Tpm2Error::Internal("TPM2_ECDH_ZGen returned an oversized x".into()))?;
        Ok(Zeroizing::new(x.to_vec()))
    }

    /// Every way a TPM offers to read an object's sensitive area, tried on one key.
    #[cfg(feature = "testing")]
    pub(crate) fn export_attempts(
        &mut self,
        key: &KeyRef,
        stored: impl Fn() -> Result<StoredKey, Tpm2Error>,
    ) -> Vec<(String, Result<Vec<u8>, String>)> {
        let mut out = Vec::new();
        let handle = match self.handle(key, &stored) {
            Ok((h, _)) => h,
            Err(e) => return vec![("TPM2_Load".into(), Err(e.to_string()))],
        };
        // TPM2_ReadPublic: only the public area comes back; check it carries no sensitive part.
        let read = self.ctx.execute_without_session(|c| c.read_public(handle));
        out.push((
            "TPM2_ReadPublic".into(),
            match read {
                Ok((public, _, _)) => match public {
                    Public::Ecc { .. } => {
                        Err("returns only TPMT_PUBLIC (a point, no private scalar)".into())
                    }
                    _ => Ok(Vec::new()),
                },
                Err(e) => Err(Tpm2Error::esapi("TPM2_ReadPublic", e).to_string()),
            },
        ));
        // TPM2_Duplicate to no new parent and no inner wrapper: would hand out the sensitive
        // area in the clear if the key were not fixedTPM/fixedParent.
        let dup = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.duplicate(
                    ObjectHandle::from(handle),
                    ObjectHandle::Null,
                    None,
                    SymmetricDefinitionObject::Null,
                )
            });
        out.push((
            "TPM2_Duplicate(new parent = TPM_RH_NULL, no inner wrapper; authPolicy is empty, fixedParent is set)".into(),
            match dup {
                Ok((_, private, _)) => Ok(private.value().to_vec()),
                Err(e) => Err(Tpm2Error::esapi("TPM2_Duplicate", e).to_string()),
            },
        ));
        // TPM2_Unseal returns the sensitive data of an object with a password session.
        let unseal = self.ctx.unseal(ObjectHandle::from(handle));
        out.push((
            "TPM2_Unseal".into(),
            match unseal {
                Ok(data) => Ok(data.value().to_vec()),
                Err(e) => Err(Tpm2Error::esapi("TPM2_Unseal", e).to_string()),
            },
        ));
        // The private blob on disk is encrypted under the parent: another parent (a primary
        // from a different template, as on another TPM) cannot load it.
        out.push((
            "key file private area under another parent key".into(),
            self.load_under_other_parent(&stored),
        ));
        out
    }

    #[cfg(feature = "testing")]
    fn load_under_other_parent(
        &mut self,
        stored: &impl Fn() -> Result<StoredKey, Tpm2Error>,
    ) -> Result<Vec<u8>, String> {
        let stored = stored().map_err(|e| e.to_string())?;
        let public = Public::unmarshall(&stored.public).map_err(|e| e.to_string())?;
        let private = Private::try_from(stored.private).map_err(|e| e.to_string())?;
        while !self.loaded.is_empty() {
            self.evict_oldest();
        }
        // The unique field seeds the key derivation: another value, another primary key,
        // as different as a primary on another TPM.
        let unique = EccParameter::try_from(b"keywarden export probe".to_vec())
            .map_err(|e| e.to_string())?;
        let template = primary_template(EccPoint::new(unique, EccParameter::default()))
            .map_err(|e| e.to_string())?;
        let other = self
            .ctx
            .create_primary(EsysHierarchy::Owner, template, None, None, None, None)
            .map_err(|e| Tpm2Error::esapi("TPM2_CreatePrimary", e).to_string())?
            .key_handle;
        let loaded = self.ctx.load(other, private, public);
        let _ = self.ctx.flush_context(ObjectHandle::from(other));
        match loaded {
            Ok(handle) => {
                let _ = self.ctx.flush_context(ObjectHandle::from(handle));
                Ok(Vec::new())
            }
            Err(e) => Err(Tpm2Error::esapi("TPM2_Load", e).to_string()),
        }
    }
}

fn set_hierarchy_auth(
    ctx: &mut Context,
    hierarchy: EsysHierarchy,
    secret: &SecretString,
) -> Result<(), Tpm2Error> {
    let auth = Auth::try_from(secret.expose_secret().as_bytes().to_vec()).map_err(|_| {
        Tpm2Error::Config("owner_auth is longer than the TPM's digest size allows".into())
    })?;
    ctx.tr_set_auth(ObjectHandle::from(hierarchy), auth)
        .map_err(wrapper("Esys_TR_SetAuth"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use tss_esapi::constants::response_code::Tss2ResponseCode;

    use super::*;

    fn tpm_error(rc: u32) -> tss_esapi::Error {
        tss_esapi::Error::Tss2Error(Tss2ResponseCode::from(rc))
    }

    #[test]
    fn retry_resends_on_retry_yielded_and_testing() {
        let mut answers = vec![
            Err(tpm_error(0x922)),
            Err(tpm_error(0x908)),
            Err(tpm_error(0x90a)),
        ];
        answers.reverse();
        let mut calls = 0;
        let out = retry("TPM2_Sign", || {
            calls += 1;
            answers.pop().unwrap_or(Ok(7))
        })
        .unwrap();
        assert_eq!((out, calls), (7, 4));
    }

    #[test]
    fn retry_gives_up_and_names_the_code() {
        let mut calls = 0;
        let e = retry("TPM2_Sign", || {
            calls += 1;
            Err::<(), _>(tpm_error(0x922))
        })
        .unwrap_err();
        assert_eq!(calls, RETRIES + 1);
        assert!(e.to_string().contains("TPM2_Sign: TPM_RC_RETRY"), "{e}");
        let e: keywarden_vault::Error = e.into();
        assert!(e.is_retryable(), "{e:?}");
    }

    #[test]
    fn lockout_is_not_retried() {
        let mut calls = 0;
        let e = retry("TPM2_Load", || {
            calls += 1;
            Err::<(), _>(tpm_error(0x921))
        })
        .unwrap_err();
        assert_eq!(calls, 1);
        let shown = e.to_string();
        assert!(shown.starts_with("TPM2_Load: TPM_RC_LOCKOUT"), "{shown}");
        assert!(
            shown.contains("tpm2_dictionarylockout --clear-lockout"),
            "{shown}"
        );
    }

    #[test]
    fn ed25519_has_no_template() {
        let e = child_template(Algorithm::Ed25519).unwrap_err();
        assert!(matches!(e, Tpm2Error::Unsupported(_)), "{e:?}");
    }
}
