//! (3) JWT request authentication (jsonwebtoken, aws-lc-rs backend).
//!
//! `Authorization: Bearer <jwt>` is required. The key is chosen by `kid` from a JWKS file;
//! each key accepts exactly one algorithm (RS256 for RSA, ES256 for P-256, or the JWK's `alg`),
//! so `alg: none`, HS256-with-the-RSA-public-key and any other algorithm confusion are refused
//! before a signature is looked at. `iss`, `aud`, `exp` and `nbf` are required and checked.
//! Selected claims are forwarded upstream as `x-jwt-claim-<name>`; the token itself is removed.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderName, HeaderValue, StatusCode};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

use super::Check;
use crate::config::JwtPolicy;
use crate::http::{Req, Resp, local_reply};

/// Prefix of forwarded claim headers (stripped from every incoming request by the front layer).
pub const CLAIM_HEADER_PREFIX: &str = "x-jwt-claim-";

/// Errors loading the JWKS.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// File unreadable.
    #[error("reading JWKS {path}: {message}")]
    Read {
        /// Path.
        path: String,
        /// Message.
        message: String,
    },
    /// A key is unusable.
    #[error("JWKS {path}: key {index}: {message}")]
    Key {
        /// Path.
        path: String,
        /// Index in `keys`.
        index: usize,
        /// Message.
        message: String,
    },
}

struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
    validation: Validation,
}

/// Claim headers to forward upstream.
pub type ClaimHeaders = Vec<(HeaderName, HeaderValue)>;
/// Verified token -> (claim headers, exp, nbf).
type TokenCache = Mutex<HashMap<String, (ClaimHeaders, u64, u64)>>;

/// The JWT check.
pub struct Jwt {
    keys: Vec<Key>,
    forward: Vec<(String, HeaderName)>,
    leeway_s: u64,
    cache: Option<TokenCache>,
    cache_entries: usize,
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwt")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

fn key_alg(jwk: &Jwk) -> Option<Algorithm> {
    match jwk.common.key_algorithm {
        Some(KeyAlgorithm::RS256) => Some(Algorithm::RS256),
        Some(KeyAlgorithm::ES256) => Some(Algorithm::ES256),
        Some(_) => None,
        None => match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                Some(Algorithm::ES256)
            }
            _ => None,
        },
    }
}

impl Jwt {
    /// Load the JWKS named by the policy.
    pub fn new(policy: &JwtPolicy) -> Result<Jwt, JwksError> {
        let text = std::fs::read_to_string(&policy.jwks_file).map_err(|e| JwksError::Read {
            path: policy.jwks_file.display().to_string(),
            message: e.to_string(),
        })?;
        Self::from_jwks_json(policy, &text, &policy.jwks_file)
    }

    /// Build from JWKS JSON text.
    pub fn from_jwks_json(policy: &JwtPolicy, text: &str, path: &Path) -> Result<Jwt, JwksError> {
        let path_s = path.display().to_string();
        let set: JwkSet = serde_json::from_str(text).map_err(|e| JwksError::Read {
            path: path_s.clone(),
            message: e.to_string(),
        })?;
        let mut keys = Vec::new();
        for (index, jwk) in set.keys.iter().enumerate() {
            let key_err = |message: &str| JwksError::Key {
                path: path_s.clone(),
                index,
                message: message.to_owned(),
            };
            let alg =
                key_alg(jwk).ok_or_else(|| key_err("only RS256 and ES256 keys are supported"))?;
            let key = DecodingKey::from_jwk(jwk).map_err(|e| key_err(&e.to_string()))?;
            let mut validation = Validation::new(alg);
            validation.algorithms = vec![alg];
            validation.set_issuer(&[&policy.issuer]);
            validation.set_audience(&policy.audiences);
            validation.set_required_spec_claims(&["exp", "iss", "aud"]);
            validation.validate_exp = true;
            validation.validate_nbf = true;
            validation.leeway = policy.leeway_s;
            keys.push(Key {
                kid: jwk.common.key_id.clone(),
                alg,
                key,
                validation,
            });
        }
        if keys.is_empty() {
            return Err(JwksError::Read {
                path: path_s,
                message: "no keys".into(),
            });
        }
        let forward = policy
            .forward_claims
            .iter()
            .filter_map(|c| {
                let name = format!("{CLAIM_HEADER_PREFIX}{}", c.to_ascii_lowercase());
                HeaderName::from_bytes(name.as_bytes())
                    .ok()
                    .map(|h| (c.clone(), h))
            })
            .collect();
        Ok(Jwt {
            keys,
            forward,
            leeway_s: policy.leeway_s,
            cache: (policy.cache_entries > 0).then(|| Mutex::new(HashMap::new())),
            cache_entries: policy.cache_entries,
        })
    }

    fn verify(&self, token: &str) -> Result<(ClaimHeaders, u64, u64), &'static str> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| "malformed token")?;
        let key = match &header.kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid.as_str())),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        }
        .ok_or("unknown key")?;
        if header.alg != key.alg {
            return Err("algorithm not allowed for this key");
        }
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &key.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => "token expired",
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => "token not yet valid",
                jsonwebtoken::errors::ErrorKind::InvalidIssuer => "wrong issuer",
                jsonwebtoken::errors::ErrorKind::InvalidAudience => "wrong audience",
                jsonwebtoken::errors::ErrorKind::InvalidSignature => "bad signature",
                jsonwebtoken::errors::ErrorKind::MissingRequiredClaim(_) => "missing claim",
                _ => "invalid token",
            })?;
        let claims = data.claims;
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        let nbf = claims.get("nbf").and_then(Value::as_u64).unwrap_or(0);
        let mut headers = Vec::with_capacity(self.forward.len());
        for (claim, name) in &self.forward {
            let text = match claims.get(claim) {
                None => continue,
                Some(Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
            };
            if let Ok(v) = HeaderValue::from_str(&text) {
                headers.push((name.clone(), v));
            }
        }
        Ok((headers, exp, nbf))
    }

    fn verify_cached(&self, token: &str) -> Result<ClaimHeaders, &'static str> {
        let now = now_s();
        let fresh = |exp: u64, nbf: u64| {
            now < exp.saturating_add(self.leeway_s) && now.saturating_add(self.leeway_s) >= nbf
        };
        if let Some(cache) = &self.cache
            && let Ok(map) = cache.lock()
            && let Some((headers, exp, nbf)) = map.get(token)
            && fresh(*exp, *nbf)
        {
            return Ok(headers.clone());
        }
        let (headers, exp, nbf) = self.verify(token)?;
        if let Some(cache) = &self.cache
            && let Ok(mut map) = cache.lock()
        {
            if map.len() >= self.cache_entries {
                map.clear();
            }
            map.insert(token.to_owned(), (headers.clone(), exp, nbf));
        }
        Ok(headers)
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The 401 reply of the JWT layers.
pub fn unauthorized(msg: &str) -> Resp {
    let mut r = local_reply(StatusCode::UNAUTHORIZED, "jwt", msg);
    r.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer"),
    );
    r
}

impl Jwt {
    /// Verify the request's bearer token (signature, algorithm, `iss`, `aud`, `exp`, `nbf`):
    /// the claim headers to forward, or the refusal reason. The per-request sandbox calls this
    /// natively and hands the result to the guest.
    pub fn verify_request(&self, headers: &http::HeaderMap) -> Result<ClaimHeaders, &'static str> {
        let value = headers
            .get(http::header::AUTHORIZATION)
            .ok_or("missing bearer token")?;
        let s = value.to_str().map_err(|_| "malformed token")?;
        let (scheme, token) = s.split_once(' ').ok_or("malformed token")?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err("missing bearer token");
        }
        self.verify_cached(token.trim())
    }
}

impl Check for Jwt {
    fn check(&self, req: &mut Req) -> Result<(), Resp> {
        let headers = self.verify_request(req.headers()).map_err(unauthorized)?;
        let h = req.headers_mut();
        h.remove(http::header::AUTHORIZATION);
        for (name, value) in headers {
            h.insert(name, value);
        }
        Ok(())
    }
}

/// A token issuer for tests, benches and tools: a fresh key and its JWKS entry.
pub struct TestIssuer {
    /// Algorithm (RS256 or ES256).
    pub alg: Algorithm,
    /// Key id.
    pub kid: String,
    key: EncodingKey,
    /// The public key as a JWK (JSON object).
    pub jwk: Value,
}

impl std::fmt::Debug for TestIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestIssuer")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl TestIssuer {
    /// Generate an RS256 (2048-bit) or ES256 key.
    pub fn generate(alg: Algorithm, kid: &str) -> Result<TestIssuer, String> {
        let err = |e: &dyn std::fmt::Display| e.to_string();
        match alg {
            Algorithm::RS256 => {
                let kp = rcgen::KeyPair::generate_rsa_for(
                    &rcgen::PKCS_RSA_SHA256,
                    rcgen::RsaKeySize::_2048,
                )
                .map_err(|e| err(&e))?;
                let key = EncodingKey::from_rsa_pem(kp.serialize_pem().as_bytes())
                    .map_err(|e| err(&e))?;
                // public_key_raw is PKCS#1 RSAPublicKey: SEQUENCE { n INTEGER, e INTEGER }.
                let (_, seq, _) = crate::pki::der_tlv(kp.public_key_raw()).ok_or("bad RSA key")?;
                let (_, n, rest) = crate::pki::der_tlv(seq).ok_or("bad RSA key")?;
                let (_, e, _) = crate::pki::der_tlv(rest).ok_or("bad RSA key")?;
                let n = n.strip_prefix(&[0u8]).unwrap_or(n);
                let jwk = serde_json::json!({
                    "kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
                    "n": URL_SAFE_NO_PAD.encode(n), "e": URL_SAFE_NO_PAD.encode(e),
                });
                Ok(TestIssuer {
                    alg,
                    kid: kid.to_owned(),
                    key,
                    jwk,
                })
            }
            Algorithm::ES256 => {
                let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                    .map_err(|e| err(&e))?;
                let key =
                    EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).map_err(|e| err(&e))?;
                let raw = kp.public_key_raw();
                if raw.len() != 65 || raw[0] != 4 {
                    return Err("unexpected EC point encoding".into());
                }
                let jwk = serde_json::json!({
                    "kty": "EC", "kid": kid, "alg": "ES256", "use": "sig", "crv": "P-256",
                    "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..65]),
                });
                Ok(TestIssuer {
                    alg,
                    kid: kid.to_owned(),
                    key,
                    jwk,
                })
            }
            other => Err(format!("unsupported algorithm {other:?}")),
        }
    }

    /// JWKS JSON containing the given issuers' public keys.
    pub fn jwks(issuers: &[&TestIssuer]) -> String {
        serde_json::json!({ "keys": issuers.iter().map(|i| i.jwk.clone()).collect::<Vec<_>>() })
            .to_string()
    }

    /// Sign `claims` with this key.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap_or_default()
    }

    /// Standard claims valid for an hour from now.
    pub fn claims(issuer: &str, audience: &str, sub: &str) -> Value {
        let now = now_s();
        serde_json::json!({ "iss": issuer, "aud": audience, "sub": sub, "iat": now, "nbf": now, "exp": now + 3600 })
    }
}
