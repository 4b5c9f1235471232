//! Objects and their attribute semantics: defaults, what a template may say, what may be read
//! (`CKA_SENSITIVE`/`CKA_EXTRACTABLE`) and what may change afterwards.

use std::sync::{Arc, Mutex};

use cryptoki_sys::*;
use zeroize::Zeroizing;

use crate::attr::{self, Attr, AttrMap};
use crate::crypto::{self, Curve, PrivateKey};
use crate::error::{Error, Result};

/// The secret part of an object: `CKA_VALUE` of a private or secret key.
pub enum Secret {
    /// No secret (public keys).
    None,
    /// In memory, usable.
    Clear(Zeroizing<Vec<u8>>),
    /// A token object's secret, still encrypted (before the user logged in).
    Sealed(Vec<u8>),
}

/// One object.
pub struct Object {
    /// Every attribute except the secret value.
    pub attrs: AttrMap,
    /// The secret value, if the object has one.
    pub secret: Secret,
    /// Name of the object's file in the token directory (token objects only).
    pub store_id: Option<String>,
    /// Handle of the session that owns it (session objects only).
    pub owner: Option<CK_SESSION_HANDLE>,
    /// The parsed private key, built on first use.
    pub key_cache: Mutex<Option<Arc<PrivateKey>>>,
}

impl std::fmt::Debug for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Object")
            .field("attrs", &self.attrs)
            .field("store_id", &self.store_id)
            .finish_non_exhaustive()
    }
}

impl Object {
    /// A new object.
    pub fn new(attrs: AttrMap, secret: Secret) -> Self {
        Object {
            attrs,
            secret,
            store_id: None,
            owner: None,
            key_cache: Mutex::new(None),
        }
    }
    /// `CKA_CLASS`.
    pub fn class(&self) -> CK_OBJECT_CLASS {
        self.attrs
            .get_ulong(CKA_CLASS)
            .unwrap_or(CK_UNAVAILABLE_INFORMATION)
    }
    /// `CKA_KEY_TYPE`.
    pub fn key_type(&self) -> CK_KEY_TYPE {
        self.attrs
            .get_ulong(CKA_KEY_TYPE)
            .unwrap_or(CK_UNAVAILABLE_INFORMATION)
    }
    /// `CKA_TOKEN`.
    pub fn is_token(&self) -> bool {
        self.attrs.get_bool(CKA_TOKEN)
    }
    /// `CKA_PRIVATE`.
    pub fn is_private(&self) -> bool {
        self.attrs.get_bool(CKA_PRIVATE)
    }
    /// The curve of an EC key.
    pub fn curve(&self) -> Result<Curve> {
        Curve::from_params(
            self.attrs
                .get(CKA_EC_PARAMS)
                .ok_or(Error::KeyTypeInconsistent)?,
        )
    }

    /// Whether the template matches (for `C_FindObjects`).
    pub fn matches(&self, template: &[Attr]) -> bool {
        template
            .iter()
            .all(|a| self.attrs.get(a.ty) == Some(a.value.as_slice()))
    }

    /// `C_GetAttributeValue` for one attribute (zeroized on drop: it may be a key value).
    pub fn get_attribute(&self, ty: CK_ATTRIBUTE_TYPE) -> Result<Zeroizing<Vec<u8>>> {
        if ty == CKA_VALUE && matches!(self.class(), CKO_PRIVATE_KEY | CKO_SECRET_KEY) {
            if self.attrs.get_bool(CKA_SENSITIVE) || !self.attrs.get_bool(CKA_EXTRACTABLE) {
                return Err(Error::AttributeSensitive);
            }
            return match &self.secret {
                Secret::Clear(v) => Ok(v.clone()),
                Secret::Sealed(_) => Err(Error::AttributeSensitive),
                Secret::None => Err(Error::AttributeTypeInvalid),
            };
        }
        self.attrs
            .get(ty)
            .map(|v| Zeroizing::new(v.to_vec()))
            .ok_or(Error::AttributeTypeInvalid)
    }

    /// `C_SetAttributeValue`: checks every attribute first, then applies all or nothing.
    pub fn set_attributes(&mut self, template: &[Attr], so: bool) -> Result<()> {
        if !self.attrs.get_bool(CKA_MODIFIABLE) {
            return Err(Error::AttributeReadOnly);
        }
        let class = self.class();
        for a in template {
            if !allowed(class, a.ty) {
                return Err(Error::AttributeTypeInvalid);
            }
            check_value_shape(a)?;
            let now = self.attrs.get_bool(a.ty);
            match a.ty {
                CKA_LABEL | CKA_ID | CKA_SUBJECT | CKA_START_DATE | CKA_END_DATE | CKA_SIGN
                | CKA_VERIFY | CKA_DERIVE | CKA_ENCRYPT | CKA_DECRYPT | CKA_WRAP | CKA_UNWRAP
                | CKA_SIGN_RECOVER | CKA_VERIFY_RECOVER => {}
                // Only true -> false.
                CKA_EXTRACTABLE | CKA_COPYABLE => {
                    if attr::decode_bool(&a.value)? && !now {
                        return Err(Error::AttributeReadOnly);
                    }
                }
                // Only false -> true.
                CKA_SENSITIVE | CKA_WRAP_WITH_TRUSTED => {
                    if !attr::decode_bool(&a.value)? && now {
                        return Err(Error::AttributeReadOnly);
                    }
                }
                CKA_TRUSTED if so => {}
                _ => return Err(Error::AttributeReadOnly),
            }
        }
        for a in template {
            self.attrs.set(a.ty, a.value.to_vec());
        }
        Ok(())
    }

    /// The private key, parsed once and cached. Fails while the secret is sealed.
    pub fn private_key(&self) -> Result<Arc<PrivateKey>> {
        let mut cache = self
            .key_cache
            .lock()
            .map_err(|_| Error::DeviceError("poisoned lock"))?;
        if let Some(k) = cache.as_ref() {
            return Ok(Arc::clone(k));
        }
        let Secret::Clear(s) = &self.secret else {
            return Err(Error::UserNotLoggedIn);
        };
        let k = Arc::new(PrivateKey::from_secret(self.curve()?, s)?);
        *cache = Some(Arc::clone(&k));
        Ok(k)
    }

    /// Drops the cached key and, for token objects, the clear secret (at logout).
    pub fn forget_secret(&mut self, sealed: Option<Vec<u8>>) {
        if let Ok(mut c) = self.key_cache.lock() {
            *c = None;
        }
        if let Some(s) = sealed {
            self.secret = Secret::Sealed(s);
        }
    }
}

/// Whether `ty` belongs on an object of `class` (else `CKR_ATTRIBUTE_TYPE_INVALID`).
pub fn allowed(class: CK_OBJECT_CLASS, ty: CK_ATTRIBUTE_TYPE) -> bool {
    const COMMON: &[CK_ATTRIBUTE_TYPE] = &[
        CKA_CLASS,
        CKA_TOKEN,
        CKA_PRIVATE,
        CKA_MODIFIABLE,
        CKA_LABEL,
        CKA_COPYABLE,
        CKA_DESTROYABLE,
        CKA_KEY_TYPE,
        CKA_ID,
        CKA_START_DATE,
        CKA_END_DATE,
        CKA_DERIVE,
        CKA_LOCAL,
        CKA_KEY_GEN_MECHANISM,
        CKA_ALLOWED_MECHANISMS,
    ];
    const PUBLIC: &[CK_ATTRIBUTE_TYPE] = &[
        CKA_SUBJECT,
        CKA_ENCRYPT,
        CKA_VERIFY,
        CKA_VERIFY_RECOVER,
        CKA_WRAP,
        CKA_TRUSTED,
        CKA_EC_PARAMS,
        CKA_EC_POINT,
    ];
    const PRIVATE: &[CK_ATTRIBUTE_TYPE] = &[
        CKA_SUBJECT,
        CKA_SENSITIVE,
        CKA_DECRYPT,
        CKA_SIGN,
        CKA_SIGN_RECOVER,
        CKA_UNWRAP,
        CKA_EXTRACTABLE,
        CKA_ALWAYS_SENSITIVE,
        CKA_NEVER_EXTRACTABLE,
        CKA_WRAP_WITH_TRUSTED,
        CKA_ALWAYS_AUTHENTICATE,
        CKA_EC_PARAMS,
        CKA_VALUE,
    ];
    const SECRET: &[CK_ATTRIBUTE_TYPE] = &[
        CKA_SENSITIVE,
        CKA_ENCRYPT,
        CKA_DECRYPT,
        CKA_SIGN,
        CKA_VERIFY,
        CKA_WRAP,
        CKA_UNWRAP,
        CKA_EXTRACTABLE,
        CKA_ALWAYS_SENSITIVE,
        CKA_NEVER_EXTRACTABLE,
        CKA_WRAP_WITH_TRUSTED,
        CKA_TRUSTED,
        CKA_VALUE,
        CKA_VALUE_LEN,
    ];
    COMMON.contains(&ty)
        || match class {
            CKO_PUBLIC_KEY => PUBLIC.contains(&ty),
            CKO_PRIVATE_KEY => PRIVATE.contains(&ty),
            CKO_SECRET_KEY => SECRET.contains(&ty),
            _ => false,
        }
}

const BOOLS: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_MODIFIABLE,
    CKA_COPYABLE,
    CKA_DESTROYABLE,
    CKA_DERIVE,
    CKA_LOCAL,
    CKA_ENCRYPT,
    CKA_VERIFY,
    CKA_VERIFY_RECOVER,
    CKA_WRAP,
    CKA_TRUSTED,
    CKA_SENSITIVE,
    CKA_DECRYPT,
    CKA_SIGN,
    CKA_SIGN_RECOVER,
    CKA_UNWRAP,
    CKA_EXTRACTABLE,
    CKA_ALWAYS_SENSITIVE,
    CKA_NEVER_EXTRACTABLE,
    CKA_WRAP_WITH_TRUSTED,
    CKA_ALWAYS_AUTHENTICATE,
];
const ULONGS: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_CLASS,
    CKA_KEY_TYPE,
    CKA_KEY_GEN_MECHANISM,
    CKA_VALUE_LEN,
];

fn check_value_shape(a: &Attr) -> Result<()> {
    if BOOLS.contains(&a.ty) {
        attr::decode_bool(&a.value)?;
    } else if ULONGS.contains(&a.ty) {
        attr::decode_ulong(&a.value)?;
    }
    Ok(())
}

/// Attributes a caller may never set: the token computes them.
const COMPUTED: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_LOCAL,
    CKA_KEY_GEN_MECHANISM,
    CKA_ALWAYS_SENSITIVE,
    CKA_NEVER_EXTRACTABLE,
];

/// Applies a caller's template over defaults, checking types and shapes.
fn apply(
    class: CK_OBJECT_CLASS,
    key_type: CK_KEY_TYPE,
    defaults: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
    template: &[Attr],
    forbidden: &[CK_ATTRIBUTE_TYPE],
) -> Result<AttrMap> {
    let mut m = AttrMap::default();
    for (t, v) in defaults {
        m.set(*t, v.clone());
    }
    for a in template {
        if !allowed(class, a.ty) {
            return Err(Error::AttributeTypeInvalid);
        }
        check_value_shape(a)?;
        if COMPUTED.contains(&a.ty) || forbidden.contains(&a.ty) {
            return Err(Error::AttributeReadOnly);
        }
        match a.ty {
            CKA_CLASS if attr::decode_ulong(&a.value)? != class => {
                return Err(Error::TemplateInconsistent);
            }
            CKA_KEY_TYPE if attr::decode_ulong(&a.value)? != key_type => {
                return Err(Error::TemplateInconsistent);
            }
            _ => {}
        }
        m.set(a.ty, a.value.to_vec());
    }
    m.set_ulong(CKA_CLASS, class);
    m.set_ulong(CKA_KEY_TYPE, key_type);
    Ok(m)
}

fn b(v: bool) -> Vec<u8> {
    vec![u8::from(v)]
}

fn storage_defaults() -> Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)> {
    vec![
        (CKA_TOKEN, b(false)),
        // SoftHSM2's default; the standard leaves it to the token.
        (CKA_PRIVATE, b(true)),
        (CKA_MODIFIABLE, b(true)),
        (CKA_COPYABLE, b(true)),
        (CKA_DESTROYABLE, b(true)),
        (CKA_LABEL, Vec::new()),
        (CKA_ID, Vec::new()),
        (CKA_START_DATE, Vec::new()),
        (CKA_END_DATE, Vec::new()),
        (CKA_DERIVE, b(false)),
        (CKA_ALLOWED_MECHANISMS, Vec::new()),
    ]
}

fn public_defaults() -> Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)> {
    let mut d = storage_defaults();
    d.extend([
        (CKA_SUBJECT, Vec::new()),
        (CKA_ENCRYPT, b(false)),
        (CKA_VERIFY, b(true)),
        (CKA_VERIFY_RECOVER, b(false)),
        (CKA_WRAP, b(false)),
        (CKA_TRUSTED, b(false)),
    ]);
    d
}

fn private_defaults() -> Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)> {
    let mut d = storage_defaults();
    d.extend([
        (CKA_SUBJECT, Vec::new()),
        (CKA_SENSITIVE, b(true)),
        (CKA_DECRYPT, b(false)),
        (CKA_SIGN, b(true)),
        (CKA_SIGN_RECOVER, b(false)),
        (CKA_UNWRAP, b(false)),
        (CKA_EXTRACTABLE, b(false)),
        (CKA_WRAP_WITH_TRUSTED, b(false)),
        (CKA_ALWAYS_AUTHENTICATE, b(false)),
    ]);
    d
}

fn secret_defaults() -> Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)> {
    let mut d = storage_defaults();
    d.extend([
        (CKA_SENSITIVE, b(true)),
        (CKA_ENCRYPT, b(false)),
        (CKA_DECRYPT, b(false)),
        (CKA_SIGN, b(false)),
        (CKA_VERIFY, b(false)),
        (CKA_WRAP, b(false)),
        (CKA_UNWRAP, b(false)),
        (CKA_EXTRACTABLE, b(false)),
        (CKA_WRAP_WITH_TRUSTED, b(false)),
        (CKA_TRUSTED, b(false)),
    ]);
    d
}

fn key_type_for(curve: Curve) -> CK_KEY_TYPE {
    match curve {
        Curve::P256 => CKK_EC,
        Curve::Ed25519 => CKK_EC_EDWARDS,
    }
}

/// Sets the computed security attributes of a new private/secret key.
fn compute_security(m: &mut AttrMap, local_or_base_sensitive: bool, base_never_extractable: bool) {
    let sensitive = m.get_bool(CKA_SENSITIVE);
    let extractable = m.get_bool(CKA_EXTRACTABLE);
    m.set_bool(CKA_ALWAYS_SENSITIVE, sensitive && local_or_base_sensitive);
    m.set_bool(
        CKA_NEVER_EXTRACTABLE,
        !extractable && base_never_extractable,
    );
}

/// The two objects of `C_GenerateKeyPair`, with the freshly generated key.
pub fn generate_key_pair(
    mechanism: CK_MECHANISM_TYPE,
    pub_t: &[Attr],
    priv_t: &[Attr],
) -> Result<(Object, Object)> {
    let params = attr::find(pub_t, CKA_EC_PARAMS)
        .ok_or(Error::TemplateIncomplete)?
        .to_vec();
    let curve = Curve::from_params(&params).map_err(|_| Error::DomainParamsInvalid)?;
    match (mechanism, curve) {
        (CKM_EC_KEY_PAIR_GEN, Curve::P256) | (CKM_EC_EDWARDS_KEY_PAIR_GEN, Curve::Ed25519) => {}
        (CKM_EC_KEY_PAIR_GEN | CKM_EC_EDWARDS_KEY_PAIR_GEN, _) => {
            return Err(Error::TemplateInconsistent);
        }
        _ => return Err(Error::MechanismInvalid),
    }
    if let Some(p) = attr::find(priv_t, CKA_EC_PARAMS)
        && p != params.as_slice()
    {
        return Err(Error::TemplateInconsistent);
    }
    let kt = key_type_for(curve);
    let mut pubm = apply(
        CKO_PUBLIC_KEY,
        kt,
        &public_defaults(),
        pub_t,
        &[CKA_EC_POINT],
    )?;
    let mut privm = apply(
        CKO_PRIVATE_KEY,
        kt,
        &private_defaults(),
        priv_t,
        &[CKA_VALUE],
    )?;
    let key = PrivateKey::generate(curve)?;
    for m in [&mut pubm, &mut privm] {
        m.set_bool(CKA_LOCAL, true);
        m.set_ulong(CKA_KEY_GEN_MECHANISM, mechanism);
        m.set(CKA_EC_PARAMS, params.clone());
    }
    pubm.set(CKA_EC_POINT, crypto::der_octet_string(&key.public_raw()));
    compute_security(&mut privm, true, true);
    let secret = Zeroizing::new(key.secret().to_vec());
    let privo = Object::new(privm, Secret::Clear(secret));
    if let Ok(mut c) = privo.key_cache.lock() {
        *c = Some(Arc::new(key));
    }
    Ok((Object::new(pubm, Secret::None), privo))
}

/// The object of `C_CreateObject`: EC/Ed25519 public keys, EC/Ed25519 private keys and generic
/// secrets.
pub fn create(template: &[Attr]) -> Result<Object> {
    let class = attr::find_ulong(template, CKA_CLASS)?.ok_or(Error::TemplateIncomplete)?;
    let kt = attr::find_ulong(template, CKA_KEY_TYPE)?.ok_or(Error::TemplateIncomplete)?;
    match class {
        CKO_PUBLIC_KEY => {
            let params = attr::find(template, CKA_EC_PARAMS).ok_or(Error::TemplateIncomplete)?;
            let point = attr::find(template, CKA_EC_POINT).ok_or(Error::TemplateIncomplete)?;
            let curve = Curve::from_params(params)?;
            if kt != key_type_for(curve) {
                return Err(Error::TemplateInconsistent);
            }
            crypto::check_public(curve, crypto::unwrap_point(curve, point))?;
            let mut m = apply(class, kt, &public_defaults(), template, &[])?;
            m.set_bool(CKA_LOCAL, false);
            m.set_ulong(CKA_KEY_GEN_MECHANISM, CK_UNAVAILABLE_INFORMATION);
            Ok(Object::new(m, Secret::None))
        }
        CKO_PRIVATE_KEY => {
            let params = attr::find(template, CKA_EC_PARAMS).ok_or(Error::TemplateIncomplete)?;
            let value = attr::find(template, CKA_VALUE).ok_or(Error::TemplateIncomplete)?;
            let curve = Curve::from_params(params)?;
            if kt != key_type_for(curve) {
                return Err(Error::TemplateInconsistent);
            }
            PrivateKey::from_secret(curve, value)?;
            let secret = Zeroizing::new(value.to_vec());
            let rest: Vec<Attr> = template
                .iter()
                .filter(|a| a.ty != CKA_VALUE)
                .cloned()
                .collect();
            let mut m = apply(class, kt, &private_defaults(), &rest, &[])?;
            m.set_bool(CKA_LOCAL, false);
            m.set_ulong(CKA_KEY_GEN_MECHANISM, CK_UNAVAILABLE_INFORMATION);
            compute_security(&mut m, false, false);
            Ok(Object::new(m, Secret::Clear(secret)))
        }
        CKO_SECRET_KEY => {
            if kt != CKK_GENERIC_SECRET {
                return Err(Error::TemplateInconsistent);
            }
            let value = attr::find(template, CKA_VALUE).ok_or(Error::TemplateIncomplete)?;
            if attr::find(template, CKA_VALUE_LEN).is_some() {
                return Err(Error::TemplateInconsistent);
            }
            let secret = Zeroizing::new(value.to_vec());
            let rest: Vec<Attr> = template
                .iter()
                .filter(|a| a.ty != CKA_VALUE)
                .cloned()
                .collect();
            let mut m = apply(class, kt, &secret_defaults(), &rest, &[])?;
            m.set_bool(CKA_LOCAL, false);
            m.set_ulong(CKA_KEY_GEN_MECHANISM, CK_UNAVAILABLE_INFORMATION);
            m.set_ulong(CKA_VALUE_LEN, value.len() as CK_ULONG);
            compute_security(&mut m, false, false);
            Ok(Object::new(m, Secret::Clear(secret)))
        }
        _ => Err(Error::AttributeValueInvalid),
    }
}

/// The generic secret of `C_DeriveKey` (`CKM_ECDH1_DERIVE`, `CKD_NULL`).
pub fn derived_secret(template: &[Attr], base: &Object, z: Zeroizing<Vec<u8>>) -> Result<Object> {
    if let Some(c) = attr::find_ulong(template, CKA_CLASS)?
        && c != CKO_SECRET_KEY
    {
        return Err(Error::TemplateInconsistent);
    }
    let kt = attr::find_ulong(template, CKA_KEY_TYPE)?.unwrap_or(CKK_GENERIC_SECRET);
    if kt != CKK_GENERIC_SECRET {
        return Err(Error::TemplateInconsistent);
    }
    let len = match attr::find_ulong(template, CKA_VALUE_LEN)? {
        None => z.len(),
        Some(l) if l == 0 || l as usize > z.len() => return Err(Error::TemplateInconsistent),
        Some(l) => l as usize,
    };
    // CKD_NULL with a shorter key: the trailing bytes of Z (what SoftHSM2 and kryoptic do).
    let secret = Zeroizing::new(z[z.len() - len..].to_vec());
    let rest: Vec<Attr> = template
        .iter()
        .filter(|a| a.ty != CKA_VALUE_LEN)
        .cloned()
        .collect();
    let mut m = apply(CKO_SECRET_KEY, kt, &secret_defaults(), &rest, &[CKA_VALUE])?;
    m.set_bool(CKA_LOCAL, false);
    m.set_ulong(CKA_KEY_GEN_MECHANISM, CKM_ECDH1_DERIVE);
    m.set_ulong(CKA_VALUE_LEN, len as CK_ULONG);
    compute_security(
        &mut m,
        base.attrs.get_bool(CKA_ALWAYS_SENSITIVE),
        base.attrs.get_bool(CKA_NEVER_EXTRACTABLE),
    );
    Ok(Object::new(m, Secret::Clear(secret)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p256_pair(priv_extra: Vec<Attr>) -> (Object, Object) {
        let pub_t = vec![Attr::bytes(CKA_EC_PARAMS, crypto::P256_PARAMS_OID)];
        generate_key_pair(CKM_EC_KEY_PAIR_GEN, &pub_t, &priv_extra).unwrap()
    }

    #[test]
    fn generated_pair_has_computed_attributes() {
        let (pubo, privo) = p256_pair(vec![]);
        assert_eq!(pubo.class(), CKO_PUBLIC_KEY);
        assert_eq!(privo.key_type(), CKK_EC);
        assert!(privo.attrs.get_bool(CKA_ALWAYS_SENSITIVE));
        assert!(privo.attrs.get_bool(CKA_NEVER_EXTRACTABLE));
        assert!(privo.attrs.get_bool(CKA_LOCAL));
        let point = pubo.get_attribute(CKA_EC_POINT).unwrap();
        assert_eq!(&point[..3], &[0x04, 0x41, 0x04]);
        assert_eq!(
            privo.get_attribute(CKA_VALUE),
            Err(Error::AttributeSensitive)
        );
        assert_eq!(
            pubo.get_attribute(CKA_VALUE),
            Err(Error::AttributeTypeInvalid)
        );
    }

    #[test]
    fn extractable_only_goes_down_and_sensitive_only_up() {
        let (_, mut privo) = p256_pair(vec![
            Attr::bool(CKA_EXTRACTABLE, true),
            Attr::bool(CKA_SENSITIVE, false),
        ]);
        assert!(!privo.attrs.get_bool(CKA_NEVER_EXTRACTABLE));
        assert!(!privo.attrs.get_bool(CKA_ALWAYS_SENSITIVE));
        assert_eq!(privo.get_attribute(CKA_VALUE).unwrap().len(), 32);
        privo
            .set_attributes(&[Attr::bool(CKA_EXTRACTABLE, false)], false)
            .unwrap();
        assert_eq!(
            privo.set_attributes(&[Attr::bool(CKA_EXTRACTABLE, true)], false),
            Err(Error::AttributeReadOnly)
        );
        privo
            .set_attributes(&[Attr::bool(CKA_SENSITIVE, true)], false)
            .unwrap();
        assert_eq!(
            privo.set_attributes(&[Attr::bool(CKA_SENSITIVE, false)], false),
            Err(Error::AttributeReadOnly)
        );
        assert_eq!(
            privo.set_attributes(&[Attr::bool(CKA_NEVER_EXTRACTABLE, true)], false),
            Err(Error::AttributeReadOnly)
        );
        assert!(!privo.attrs.get_bool(CKA_NEVER_EXTRACTABLE));
        privo
            .set_attributes(&[Attr::bytes(CKA_LABEL, b"renamed")], false)
            .unwrap();
        assert_eq!(
            privo.get_attribute(CKA_LABEL).unwrap().as_slice(),
            b"renamed"
        );
    }

    #[test]
    fn template_checks() {
        let pub_t = vec![Attr::bytes(CKA_EC_PARAMS, crypto::P256_PARAMS_OID)];
        assert_eq!(
            generate_key_pair(CKM_EC_KEY_PAIR_GEN, &[], &[]).err(),
            Some(Error::TemplateIncomplete)
        );
        assert_eq!(
            generate_key_pair(CKM_EC_KEY_PAIR_GEN, &pub_t, &[Attr::bool(CKA_LOCAL, true)]).err(),
            Some(Error::AttributeReadOnly)
        );
        assert_eq!(
            generate_key_pair(
                CKM_EC_KEY_PAIR_GEN,
                &pub_t,
                &[Attr::bytes(CKA_SIGN, &[1, 1])]
            )
            .err(),
            Some(Error::AttributeValueInvalid)
        );
        assert_eq!(
            generate_key_pair(CKM_EC_EDWARDS_KEY_PAIR_GEN, &pub_t, &[]).err(),
            Some(Error::TemplateInconsistent)
        );
        assert_eq!(
            generate_key_pair(CKM_EC_KEY_PAIR_GEN, &pub_t, &[Attr::bool(CKA_VERIFY, true)]).err(),
            Some(Error::AttributeTypeInvalid)
        );
    }

    #[test]
    fn derived_secret_is_readable_only_when_allowed() {
        let (_, base) = p256_pair(vec![]);
        let z = Zeroizing::new(vec![9u8; 32]);
        let open = derived_secret(
            &[
                Attr::bool(CKA_SENSITIVE, false),
                Attr::bool(CKA_EXTRACTABLE, true),
            ],
            &base,
            z.clone(),
        )
        .unwrap();
        assert_eq!(*open.get_attribute(CKA_VALUE).unwrap(), vec![9u8; 32]);
        let closed = derived_secret(&[], &base, z).unwrap();
        assert_eq!(
            closed.get_attribute(CKA_VALUE),
            Err(Error::AttributeSensitive)
        );
        assert!(closed.attrs.get_bool(CKA_ALWAYS_SENSITIVE));
    }
}
