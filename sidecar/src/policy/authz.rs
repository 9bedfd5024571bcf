//! (4) Authorization: allow/deny rules on source identity, method, path and headers, with
//! Istio's evaluation order: any matching deny rule denies; otherwise, when rules exist, a
//! request must match an allow rule; with no rules at all, everything is allowed.

use http::{HeaderName, Method, StatusCode};

use super::Check;
use crate::config::{AuthzAction, AuthzPolicy};
use crate::http::{Req, Resp, conn_info, local_reply};
use crate::pki::id_matches;

/// Source value matching requests that carry no verified identity.
pub const UNAUTHENTICATED: &str = "unauthenticated";

#[derive(Debug)]
struct Rule {
    action: AuthzAction,
    sources: Vec<String>,
    methods: Vec<Method>,
    paths: Vec<String>,
    headers: Vec<(HeaderName, Vec<String>)>,
}

/// The authorization check.
#[derive(Debug)]
pub struct Authz {
    rules: Vec<Rule>,
}

impl Authz {
    /// Compile the rules (validated by `Config::validate`; invalid entries never match).
    pub fn new(policy: &AuthzPolicy) -> Authz {
        let rules = policy
            .rules
            .iter()
            .map(|r| Rule {
                action: r.action,
                sources: r.sources.clone(),
                methods: r
                    .methods
                    .iter()
                    .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                    .collect(),
                paths: r.paths.clone(),
                headers: r
                    .headers
                    .iter()
                    .filter_map(|(k, v)| {
                        HeaderName::from_bytes(k.as_bytes())
                            .ok()
                            .map(|h| (h, v.clone()))
                    })
                    .collect(),
            })
            .collect();
        Authz { rules }
    }

    fn matches(rule: &Rule, source: Option<&str>, req: &Req) -> bool {
        let source_ok = rule.sources.is_empty()
            || rule.sources.iter().any(|p| match source {
                Some(id) => id_matches(p, id),
                None => p == UNAUTHENTICATED,
            });
        let method_ok = rule.methods.is_empty() || rule.methods.contains(req.method());
        let path = req.uri().path();
        let path_ok = rule.paths.is_empty() || rule.paths.iter().any(|p| id_matches(p, path));
        let headers_ok = rule.headers.iter().all(|(name, values)| {
            req.headers().get_all(name).iter().any(|v| {
                v.to_str()
                    .is_ok_and(|v| values.iter().any(|p| id_matches(p, v)))
            })
        });
        source_ok && method_ok && path_ok && headers_ok
    }
}

impl Check for Authz {
    fn check(&self, req: &mut Req) -> Result<(), Resp> {
        if self.rules.is_empty() {
            return Ok(());
        }
        let source = conn_info(req).and_then(|c| c.peer.clone());
        let source = source.as_deref();
        let mut allowed = false;
        for rule in &self.rules {
            if Self::matches(rule, source, req) {
                match rule.action {
                    AuthzAction::Deny => {
                        return Err(local_reply(
                            StatusCode::FORBIDDEN,
                            "authz",
                            "RBAC: access denied",
                        ));
                    }
                    AuthzAction::Allow => allowed = true,
                }
            }
        }
        if allowed {
            Ok(())
        } else {
            Err(local_reply(
                StatusCode::FORBIDDEN,
                "authz",
                "RBAC: access denied",
            ))
        }
    }
}
