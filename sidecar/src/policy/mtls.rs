//! (1) mTLS, request side. The handshake itself (client certificate required, chain to our CA,
//! SPIFFE id in our trust domain and in `allowed_peers`) happens when the connection is
//! accepted (see `server`); this layer refuses any request that arrived without a verified
//! identity when the mode is strict, and forwards the identity upstream as an
//! `x-forwarded-client-cert` header (Envoy's format) that clients cannot forge (the front layer
//! strips any incoming copy).

use http::{HeaderValue, StatusCode};

use super::Check;
use crate::config::MtlsMode;
use crate::http::{Req, Resp, conn_info, local_reply};

/// Header carrying the verified peer identity upstream.
pub const XFCC: http::HeaderName = http::HeaderName::from_static("x-forwarded-client-cert");

/// The mTLS request check.
#[derive(Debug)]
pub struct Mtls {
    mode: MtlsMode,
    own_id: String,
}

impl Mtls {
    /// `own_id` is this workload's SPIFFE id.
    pub fn new(mode: MtlsMode, own_id: String) -> Mtls {
        Mtls { mode, own_id }
    }
}

impl Check for Mtls {
    fn check(&self, req: &mut Req) -> Result<(), Resp> {
        let peer = conn_info(req).and_then(|c| c.peer.clone());
        match peer {
            Some(id) => {
                let v = format!("By={};URI={}", self.own_id, id);
                if let Ok(v) = HeaderValue::from_str(&v) {
                    req.headers_mut().insert(XFCC, v);
                }
                Ok(())
            }
            None if self.mode == MtlsMode::Strict => Err(local_reply(
                StatusCode::FORBIDDEN,
                "mtls",
                "mutual TLS required",
            )),
            None => Ok(()),
        }
    }
}
