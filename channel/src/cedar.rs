//! Access decisions with Cedar policies (feature `cedar`).
//!
//! Each decision is one Cedar request:
//!
//! - principal `Peer::"kwid1…"` (the peer's identifier),
//! - action `Action::"connect"`,
//! - resource `Channel::"<name>"` (the name given to [`CedarPolicy::new`], e.g. the
//!   listener's address),
//! - context `{ identifier: "kwid1…", attributes: { name: "value", … }, authorities:
//!   ["kwid1…", …] }` with the attributes of the peer's verified credentials.
//!
//! ```cedar
//! permit (principal, action == Action::"connect", resource == Channel::"payments")
//! when { context.attributes has role && context.attributes.role == "client" };
//! ```
//!
//! As in Cedar generally, nothing is allowed unless a `permit` matches and no `forbid` does.

use core::fmt;
use core::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, EntityId, EntityTypeName, EntityUid,
    PolicySet, Request, RestrictedExpression,
};

use crate::error::{Error, Result};
use crate::policy::{AccessPolicy, Decision, PeerInfo};

/// A Cedar policy set deciding who may have a channel.
pub struct CedarPolicy {
    policies: PolicySet,
    resource: EntityUid,
    action: EntityUid,
    peer_type: EntityTypeName,
}

fn uid(type_name: &str, id: &str) -> Result<EntityUid> {
    let t = EntityTypeName::from_str(type_name)
        .map_err(|e| Error::InvalidInput(format!("cedar entity type {type_name}: {e}")))?;
    Ok(EntityUid::from_type_name_and_id(t, EntityId::new(id)))
}

impl CedarPolicy {
    /// Parses `policies` (Cedar policy text) for the resource `Channel::"<resource>"`.
    pub fn new(policies: &str, resource: &str) -> Result<Self> {
        let policies = PolicySet::from_str(policies)
            .map_err(|e| Error::InvalidInput(format!("cedar policies: {e}")))?;
        let peer_type = EntityTypeName::from_str("Peer")
            .map_err(|e| Error::InvalidInput(format!("cedar: {e}")))?;
        Ok(Self {
            policies,
            resource: uid("Channel", resource)?,
            action: uid("Action", "connect")?,
            peer_type,
        })
    }

    fn request(&self, peer: &PeerInfo) -> core::result::Result<Request, String> {
        let id = peer.identifier.to_string();
        let principal =
            EntityUid::from_type_name_and_id(self.peer_type.clone(), EntityId::new(&id));
        let attributes = RestrictedExpression::new_record(
            peer.attributes
                .iter()
                .map(|(k, v)| (k.clone(), RestrictedExpression::new_string(v.clone()))),
        )
        .map_err(|e| e.to_string())?;
        let authorities = RestrictedExpression::new_set(
            peer.authorities
                .iter()
                .map(|a| RestrictedExpression::new_string(a.to_string())),
        );
        let context = Context::from_pairs([
            (
                "identifier".to_string(),
                RestrictedExpression::new_string(id),
            ),
            ("attributes".to_string(), attributes),
            ("authorities".to_string(), authorities),
        ])
        .map_err(|e| e.to_string())?;
        Request::new(
            principal,
            self.action.clone(),
            self.resource.clone(),
            context,
            None,
        )
        .map_err(|e| e.to_string())
    }
}

impl AccessPolicy for CedarPolicy {
    fn decide(&self, peer: &PeerInfo) -> Decision {
        let request = match self.request(peer) {
            Ok(r) => r,
            Err(e) => return Decision::Deny(format!("cedar request: {e}")),
        };
        let response =
            Authorizer::new().is_authorized(&request, &self.policies, &Entities::empty());
        match response.decision() {
            CedarDecision::Allow => Decision::Allow,
            CedarDecision::Deny => {
                let reasons: Vec<String> = response
                    .diagnostics()
                    .reason()
                    .map(|pid| {
                        // Name a policy by its `@id("…")` annotation when it has one.
                        self.policies
                            .policy(pid)
                            .and_then(|p| p.annotation("id").map(str::to_string))
                            .unwrap_or_else(|| pid.to_string())
                    })
                    .collect();
                let errors: Vec<String> = response
                    .diagnostics()
                    .errors()
                    .map(|e| e.to_string())
                    .collect();
                let mut why = String::from("cedar denied");
                if reasons.is_empty() {
                    why.push_str(" (no permit matched)");
                } else {
                    why.push_str(&format!(" (forbidden by {})", reasons.join(", ")));
                }
                if !errors.is_empty() {
                    why.push_str(&format!("; errors: {}", errors.join("; ")));
                }
                Decision::Deny(why)
            }
        }
    }
}

impl fmt::Debug for CedarPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CedarPolicy")
            .field("policies", &self.policies.policies().count())
            .field("resource", &self.resource.to_string())
            .finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::identity::Identifier;

    fn peer(attrs: &[(&str, &str)]) -> PeerInfo {
        PeerInfo {
            identifier: Identifier::from_bytes([7; 32]),
            attributes: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            authorities: BTreeSet::from([Identifier::from_bytes([1; 32])]),
        }
    }

    const POLICY: &str = r#"
        permit (principal, action == Action::"connect", resource == Channel::"payments")
        when { context.attributes has role && context.attributes.role == "client" };

        @id("no-interns")
        forbid (principal, action, resource)
        when { context.attributes has "job-title" && context.attributes["job-title"] == "intern" };
    "#;

    #[test]
    fn permits_forbids_and_defaults_to_deny() {
        let p = CedarPolicy::new(POLICY, "payments").unwrap();
        assert_eq!(p.decide(&peer(&[("role", "client")])), Decision::Allow);
        let Decision::Deny(why) = p.decide(&peer(&[("role", "server")])) else {
            panic!()
        };
        assert!(why.contains("no permit matched"), "{why}");
        assert!(matches!(p.decide(&peer(&[])), Decision::Deny(_)));
        let Decision::Deny(why) = p.decide(&peer(&[("role", "client"), ("job-title", "intern")]))
        else {
            panic!()
        };
        assert!(why.contains("no-interns"), "{why}");
        // Another resource: nothing matches.
        let other = CedarPolicy::new(POLICY, "billing").unwrap();
        assert!(matches!(
            other.decide(&peer(&[("role", "client")])),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn identifiers_and_authorities_are_visible() {
        let id = Identifier::from_bytes([7; 32]);
        let ca = Identifier::from_bytes([1; 32]);
        let text = format!(
            r#"permit (principal == Peer::"{id}", action, resource)
               when {{ context.authorities.contains("{ca}") && context.identifier == "{id}" }};"#
        );
        let p = CedarPolicy::new(&text, "x").unwrap();
        assert_eq!(p.decide(&peer(&[])), Decision::Allow);
        let mut other = peer(&[]);
        other.identifier = Identifier::from_bytes([8; 32]);
        assert!(matches!(p.decide(&other), Decision::Deny(_)));
    }

    #[test]
    fn bad_policy_text_is_an_error() {
        let e = CedarPolicy::new("permit (principal, action", "x").unwrap_err();
        assert!(e.to_string().contains("cedar policies"), "{e}");
    }
}
