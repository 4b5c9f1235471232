//! Access decisions over an authenticated peer: its identifier and the attributes its
//! credentials (from trusted authorities, verified) state about it.
//!
//! Nothing is trusted by default: [`ChannelOptions`](crate::ChannelOptions) starts with no
//! trusted authority and the [`DenyAll`] policy.

use core::fmt;
use std::collections::{BTreeMap, BTreeSet};

use crate::identity::Identifier;

#[cfg(feature = "cedar")]
#[path = "cedar.rs"]
mod cedar;
#[cfg(feature = "cedar")]
pub use cedar::CedarPolicy;

/// What a policy sees about the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's identifier, bound to the Noise static key by its attestation.
    pub identifier: Identifier,
    /// Attributes from the peer's verified credentials, by name.
    pub attributes: BTreeMap<String, String>,
    /// The authorities whose credentials were verified.
    pub authorities: BTreeSet<Identifier>,
}

/// A policy's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Let the channel be established.
    Allow,
    /// Refuse it, with a reason for the error and the logs (it is sent to the peer).
    Deny(String),
}

/// Decides whether a peer may have a channel.
pub trait AccessPolicy: Send + Sync + fmt::Debug {
    /// The decision for `peer`.
    fn decide(&self, peer: &PeerInfo) -> Decision;
}

/// Refuses everyone: the default.
#[derive(Clone, Copy, Debug, Default)]
pub struct DenyAll;

impl AccessPolicy for DenyAll {
    fn decide(&self, _: &PeerInfo) -> Decision {
        Decision::Deny("no access policy configured (nothing is trusted by default)".into())
    }
}

/// Allows any peer whose attestation verified. For tests and closed deployments only: it
/// ignores credentials entirely.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAnyAuthenticated;

impl AccessPolicy for AllowAnyAuthenticated {
    fn decide(&self, _: &PeerInfo) -> Decision {
        Decision::Allow
    }
}

/// Allows exactly the listed identifiers.
#[derive(Clone, Debug, Default)]
pub struct AllowIdentifiers(pub BTreeSet<Identifier>);

impl AccessPolicy for AllowIdentifiers {
    fn decide(&self, peer: &PeerInfo) -> Decision {
        if self.0.contains(&peer.identifier) {
            Decision::Allow
        } else {
            Decision::Deny(format!(
                "{} is not in the allowed identifiers",
                peer.identifier
            ))
        }
    }
}

/// Allows peers whose verified attributes include every listed name with the listed value.
#[derive(Clone, Debug, Default)]
pub struct RequireAttributes(pub BTreeMap<String, String>);

impl RequireAttributes {
    /// Requires `name` = `value`.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.insert(name.into(), value.into());
        self
    }
}

impl AccessPolicy for RequireAttributes {
    fn decide(&self, peer: &PeerInfo) -> Decision {
        for (k, v) in &self.0 {
            match peer.attributes.get(k) {
                Some(have) if have == v => {}
                Some(have) => {
                    return Decision::Deny(format!(
                        "attribute {k:?} is {have:?}, the policy requires {v:?}"
                    ));
                }
                None => {
                    return Decision::Deny(format!(
                        "no verified attribute {k:?} (the policy requires {v:?})"
                    ));
                }
            }
        }
        Decision::Allow
    }
}

/// Allows when any of the policies allows; denies with all their reasons otherwise.
#[derive(Debug, Default)]
pub struct AnyOf(pub Vec<Box<dyn AccessPolicy>>);

impl AccessPolicy for AnyOf {
    fn decide(&self, peer: &PeerInfo) -> Decision {
        let mut reasons = Vec::new();
        for p in &self.0 {
            match p.decide(peer) {
                Decision::Allow => return Decision::Allow,
                Decision::Deny(r) => reasons.push(r),
            }
        }
        Decision::Deny(reasons.join("; "))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn peer(attrs: &[(&str, &str)]) -> PeerInfo {
        PeerInfo {
            identifier: Identifier::from_bytes([7; 32]),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            authorities: BTreeSet::new(),
        }
    }

    #[test]
    fn default_denies() {
        assert!(matches!(DenyAll.decide(&peer(&[])), Decision::Deny(_)));
    }

    #[test]
    fn attributes_must_match() {
        let p = RequireAttributes::default().with("team", "payments");
        assert_eq!(p.decide(&peer(&[("team", "payments")])), Decision::Allow);
        let Decision::Deny(why) = p.decide(&peer(&[("team", "ops")])) else {
            panic!()
        };
        assert!(why.contains("\"ops\""), "{why}");
        assert!(matches!(p.decide(&peer(&[])), Decision::Deny(_)));
    }

    #[test]
    fn identifiers_and_any_of() {
        let id = Identifier::from_bytes([7; 32]);
        let allow = AllowIdentifiers([id].into());
        assert_eq!(allow.decide(&peer(&[])), Decision::Allow);
        let other = AllowIdentifiers([Identifier::from_bytes([8; 32])].into());
        let any = AnyOf(vec![Box::new(other), Box::new(DenyAll)]);
        assert!(matches!(any.decide(&peer(&[])), Decision::Deny(_)));
        let any = AnyOf(vec![Box::new(DenyAll), Box::new(allow)]);
        assert_eq!(any.decide(&peer(&[])), Decision::Allow);
    }
}
