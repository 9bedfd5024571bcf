//! (2) Port and protocol configuration: only the configured listener ports and HTTP versions
//! are served. (Which upstream ports are reachable is fixed at config validation: every
//! upstream endpoint must be in `upstream_ports`, and requests cannot choose their upstream.)

use http::{StatusCode, Version};

use super::Check;
use crate::config::Protocol;
use crate::http::{Req, Resp, conn_info, local_reply};

/// The port/protocol check.
#[derive(Debug)]
pub struct Ports {
    ports: Vec<u16>,
    protocols: Vec<Protocol>,
}

impl Ports {
    /// Allowed local ports and protocols.
    pub fn new(ports: Vec<u16>, protocols: Vec<Protocol>) -> Ports {
        Ports { ports, protocols }
    }
}

impl Check for Ports {
    fn check(&self, req: &mut Req) -> Result<(), Resp> {
        let port_ok = conn_info(req).is_some_and(|c| self.ports.contains(&c.local_port));
        if !port_ok {
            return Err(local_reply(
                StatusCode::FORBIDDEN,
                "ports",
                "port not allowed",
            ));
        }
        let proto = match req.version() {
            Version::HTTP_2 => Some(Protocol::Http2),
            Version::HTTP_10 | Version::HTTP_11 => Some(Protocol::Http1),
            _ => None,
        };
        if proto.is_some_and(|p| self.protocols.contains(&p)) {
            Ok(())
        } else {
            Err(local_reply(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "ports",
                "protocol not allowed",
            ))
        }
    }
}
