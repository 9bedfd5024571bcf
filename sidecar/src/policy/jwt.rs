//! (3) JWT request authentication (jsonwebtoken for the JWKS and the JOSE header, aws-lc-rs
//! for the signature).
//!
//! `Authorization: Bearer <jwt>` is required. The key is chosen by `kid` from a JWKS file;
//! each key accepts exactly one algorithm (RS256 for RSA, ES256 for P-256, or the JWK's `alg`),
//! so `alg: none`, HS256-with-the-RSA-public-key and any other algorithm confusion are refused
//! before a signature is looked at. `iss`, `aud` and `exp` are required; `exp` and `nbf` are
//! checked with the configured leeway. Selected claims are forwarded upstream as
//! `x-jwt-claim-<name>`; the token itself is removed.
//!
//! Why not `jsonwebtoken::decode`: it builds the public key from the JWK's bytes on every call
//! (for RSA, aws-lc then recomputes the modulus's Montgomery context each time), decodes the
//! header twice and the claims twice. Here each JWK is parsed once, at load, into an aws-lc-rs
//! [`ParsedPublicKey`] (the same verification algorithms jsonwebtoken's aws-lc backend uses:
//! `RSA_PKCS1_2048_8192_SHA256`, `ECDSA_P256_SHA256_FIXED`), and the token's parts are decoded
//! once. The claim checks follow jsonwebtoken's `validate` (same rules, same order); the
//! security matrix in `tests/suite/policies.rs` and the unit tests below pin them. One
//! difference: a claim name that appears twice takes its last value (RFC 7519 section 4 allows
//! that or rejecting), where jsonwebtoken rejects a repeated registered claim.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderName, HeaderValue, StatusCode};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, EncodingKey, Header};
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
    /// Parsed once at load; verification reuses it (and, for RSA, its Montgomery context).
    key: ParsedPublicKey,
}

/// Claim headers to forward upstream.
pub type ClaimHeaders = Vec<(HeaderName, HeaderValue)>;
/// Verified token -> (claim headers, exp, nbf).
type TokenCache = Mutex<HashMap<String, (ClaimHeaders, u64, u64)>>;

/// The JWT check.
pub struct Jwt {
    keys: Vec<Key>,
    forward: Vec<(String, HeaderName)>,
    issuer: String,
    audiences: Vec<String>,
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

/// The JWK's public key, parsed once for the key's one algorithm.
fn parse_key(alg: Algorithm, key: &DecodingKey) -> Result<ParsedPublicKey, String> {
    let parsed = match (alg, key.kind()) {
        (Algorithm::RS256, DecodingKeyKind::RsaModulusExponent { n, e }) => {
            // The algorithm checks the modulus size only when verifying; refuse it here.
            let significant = &n[n.iter().take_while(|b| **b == 0).count()..];
            let bits = (significant.len() * 8).saturating_sub(
                significant
                    .first()
                    .map_or(8, |b| b.leading_zeros() as usize),
            );
            if !(2048..=8192).contains(&bits) {
                return Err(format!(
                    "RS256 needs a 2048- to 8192-bit modulus, this one has {bits} bits"
                ));
            }
            RsaPublicKeyComponents { n, e }.to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
        }
        (Algorithm::ES256, DecodingKeyKind::SecretOrDer(point)) => {
            ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
        }
        _ => {
            return Err(format!(
                "the JWK's key type does not fit its algorithm {alg:?}"
            ));
        }
    };
    parsed.map_err(|e| format!("unusable {alg:?} public key: {e}"))
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
            let decoding = DecodingKey::from_jwk(jwk).map_err(|e| key_err(&e.to_string()))?;
            let key = parse_key(alg, &decoding).map_err(|e| key_err(&e))?;
            keys.push(Key {
                kid: jwk.common.key_id.clone(),
                alg,
                key,
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
            issuer: policy.issuer.clone(),
            audiences: policy.audiences.clone(),
            leeway_s: policy.leeway_s,
            cache: (policy.cache_entries > 0).then(|| Mutex::new(HashMap::new())),
            cache_entries: policy.cache_entries,
        })
    }

    fn verify(&self, token: &str) -> Result<(ClaimHeaders, u64, u64), &'static str> {
        // Compact serialisation: exactly three base64url parts.
        let (message, signature) = token.rsplit_once('.').ok_or("malformed token")?;
        let (_, payload) = message.split_once('.').ok_or("malformed token")?;
        if payload.contains('.') {
            return Err("malformed token");
        }
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
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| "bad signature")?;
        key.key
            .verify_sig(message.as_bytes(), &signature)
            .map_err(|_| "bad signature")?;
        let claims: Map<String, Value> = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or("invalid token")?;
        let (exp, nbf) = self.validate(&claims, now_s())?;
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

    /// The registered-claim checks of `jsonwebtoken::decode` with `exp`, `iss` and `aud`
    /// required, `exp` and `nbf` validated, and the policy's leeway, in its order: required
    /// claims (a claim of the wrong type counts as missing), `exp`/`nbf` format, expiry,
    /// not-before, issuer (a string, or an array of which one matches), audience (a string or
    /// an array, one of which is among the policy's audiences). The (`exp`, `nbf`) for the
    /// cache.
    fn validate(&self, claims: &Map<String, Value>, now: u64) -> Result<(u64, u64), &'static str> {
        enum Claim<'a> {
            Absent,
            Malformed,
            Str(&'a str),
            Strs(Vec<&'a str>),
            Num(u64),
        }
        let claim = |name: &str| match claims.get(name) {
            None | Some(Value::Null) => Claim::Absent,
            Some(Value::String(s)) => Claim::Str(s),
            Some(Value::Array(a)) => a
                .iter()
                .map(Value::as_str)
                .collect::<Option<Vec<_>>>()
                .map_or(Claim::Malformed, Claim::Strs),
            Some(v) => v.as_u64().map_or(Claim::Malformed, Claim::Num),
        };
        let (exp, nbf, iss, aud) = (claim("exp"), claim("nbf"), claim("iss"), claim("aud"));
        let is_text = |c: &Claim<'_>| matches!(c, Claim::Str(_) | Claim::Strs(_));
        let Claim::Num(exp) = exp else {
            return Err("missing claim");
        };
        if !is_text(&iss) || !is_text(&aud) {
            return Err("missing claim");
        }
        let nbf = match nbf {
            Claim::Absent => None,
            Claim::Num(n) => Some(n),
            _ => return Err("invalid token"),
        };
        if exp < now.saturating_sub(self.leeway_s) {
            return Err("token expired");
        }
        if nbf.is_some_and(|n| n > now.saturating_add(self.leeway_s)) {
            return Err("token not yet valid");
        }
        // A string claim, or an array claim one of whose strings is accepted.
        let any = |c: Claim<'_>, ok: &dyn Fn(&str) -> bool| match c {
            Claim::Str(s) => ok(s),
            Claim::Strs(v) => v.into_iter().any(ok),
            _ => false,
        };
        if !any(iss, &|s| s == self.issuer) {
            return Err("wrong issuer");
        }
        if !any(aud, &|a| self.audiences.iter().any(|x| x == a)) {
            return Err("wrong audience");
        }
        Ok((exp, nbf.unwrap_or(0)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(leeway_s: u64) -> JwtPolicy {
        JwtPolicy {
            issuer: "https://issuer.test".into(),
            audiences: vec!["fn-a".into(), "fn-b".into()],
            jwks_file: "unused.json".into(),
            leeway_s,
            forward_claims: vec!["sub".into(), "groups".into()],
            cache_entries: 0,
        }
    }

    fn jwt(issuers: &[&TestIssuer], leeway_s: u64) -> Jwt {
        Jwt::from_jwks_json(
            &policy(leeway_s),
            &TestIssuer::jwks(issuers),
            Path::new("t.json"),
        )
        .expect("jwks")
    }

    fn claims(now: u64) -> Value {
        json!({"iss": "https://issuer.test", "aud": "fn-a", "sub": "alice", "nbf": now, "exp": now + 60})
    }

    fn with(mut c: Value, k: &str, v: Value) -> Value {
        c[k] = v;
        c
    }

    fn without(mut c: Value, k: &str) -> Value {
        c.as_object_mut().expect("object").remove(k);
        c
    }

    #[test]
    fn claim_rules_follow_jsonwebtoken() {
        let j = jwt(
            &[&TestIssuer::generate(Algorithm::ES256, "es").expect("key")],
            0,
        );
        let now = 1_000_000;
        let check = |c: Value| j.validate(c.as_object().expect("object"), now);
        assert_eq!(check(claims(now)), Ok((now + 60, now)));
        // aud: a string or an array, one of which is ours; an empty array names no one.
        assert!(check(with(claims(now), "aud", json!(["x", "fn-b"]))).is_ok());
        assert_eq!(
            check(with(claims(now), "aud", json!(["x", "y"]))),
            Err("wrong audience")
        );
        assert_eq!(
            check(with(claims(now), "aud", json!([]))),
            Err("wrong audience")
        );
        assert_eq!(
            check(with(claims(now), "aud", json!("fn-c"))),
            Err("wrong audience")
        );
        // iss: a string, or an array containing ours.
        assert!(check(with(claims(now), "iss", json!(["https://issuer.test"]))).is_ok());
        assert_eq!(
            check(with(claims(now), "iss", json!("https://issuer.test/"))),
            Err("wrong issuer")
        );
        // Required claims: absent, null or of the wrong type all count as missing.
        for (k, v) in [
            ("exp", json!("soon")),
            ("exp", json!(null)),
            ("exp", json!(-1)),
            ("exp", json!(1.5)),
            ("iss", json!(7)),
            ("aud", json!({"a": 1})),
            ("aud", json!([1])),
        ] {
            assert_eq!(
                check(with(claims(now), k, v.clone())),
                Err("missing claim"),
                "{k}: {v}"
            );
        }
        for k in ["exp", "iss", "aud"] {
            assert_eq!(check(without(claims(now), k)), Err("missing claim"), "{k}");
        }
        // nbf is optional, but must be a number when present.
        assert_eq!(check(without(claims(now), "nbf")), Ok((now + 60, 0)));
        assert_eq!(
            check(with(claims(now), "nbf", json!("now"))),
            Err("invalid token")
        );
        // exp == now is still valid (jsonwebtoken: expired when exp < now - leeway).
        assert!(check(with(claims(now), "exp", json!(now))).is_ok());
        assert_eq!(
            check(with(claims(now), "exp", json!(now - 1))),
            Err("token expired")
        );
        assert!(check(with(claims(now), "nbf", json!(now))).is_ok());
        assert_eq!(
            check(with(claims(now), "nbf", json!(now + 1))),
            Err("token not yet valid")
        );
    }

    #[test]
    fn leeway_widens_both_ends() {
        let j = jwt(
            &[&TestIssuer::generate(Algorithm::ES256, "es").expect("key")],
            30,
        );
        let now = 1_000_000;
        let check = |c: Value| j.validate(c.as_object().expect("object"), now);
        assert!(check(with(claims(now), "exp", json!(now - 30))).is_ok());
        assert_eq!(
            check(with(claims(now), "exp", json!(now - 31))),
            Err("token expired")
        );
        assert!(check(with(claims(now), "nbf", json!(now + 30))).is_ok());
        assert_eq!(
            check(with(claims(now), "nbf", json!(now + 31))),
            Err("token not yet valid")
        );
    }

    #[test]
    fn tokens_verify_end_to_end_with_either_key() {
        let rs = TestIssuer::generate(Algorithm::RS256, "rs").expect("rsa");
        let es = TestIssuer::generate(Algorithm::ES256, "es").expect("ec");
        let j = jwt(&[&rs, &es], 0);
        let now = now_s();
        let c = with(claims(now), "groups", json!(["a", "b"]));
        for issuer in [&rs, &es] {
            let (headers, exp, nbf) = j.verify(&issuer.sign(&c)).expect("valid");
            assert_eq!((exp, nbf), (now + 60, now));
            let forwarded: Vec<_> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.to_str().expect("ascii")))
                .collect();
            assert_eq!(
                forwarded,
                [
                    ("x-jwt-claim-sub", "alice"),
                    ("x-jwt-claim-groups", r#"["a","b"]"#)
                ]
            );
        }
        let token = rs.sign(&c);
        let parts: Vec<&str> = token.split('.').collect();
        // Extra or missing parts, a signature of the other key under this kid, a swapped
        // header, and a signature that is not base64url are refused.
        assert_eq!(j.verify(&format!("{token}.x")), Err("malformed token"));
        assert_eq!(
            j.verify(&format!("{}.{}", parts[0], parts[1])),
            Err("malformed token")
        );
        let es_token = es.sign(&c);
        let es_parts: Vec<&str> = es_token.split('.').collect();
        assert_eq!(
            j.verify(&format!("{}.{}.{}", parts[0], parts[1], es_parts[2])),
            Err("bad signature")
        );
        assert_eq!(
            j.verify(&format!("{}.{}.{}", es_parts[0], parts[1], parts[2])),
            Err("bad signature")
        );
        assert_eq!(
            j.verify(&format!("{}.{}.{}+", parts[0], parts[1], parts[2])),
            Err("bad signature")
        );
    }

    #[test]
    fn unusable_keys_are_refused_at_load_naming_the_key() {
        let mut rs = TestIssuer::generate(Algorithm::RS256, "rs").expect("rsa");
        // A 1024-bit modulus is below RSA_PKCS1_2048_8192_SHA256's range: jsonwebtoken refuses
        // it at verify time, we refuse it at load.
        rs.jwk["n"] = json!(URL_SAFE_NO_PAD.encode([0xC5u8; 128]));
        let mut es = TestIssuer::generate(Algorithm::ES256, "es").expect("ec");
        es.jwk["x"] = json!(URL_SAFE_NO_PAD.encode([1u8; 32]));
        // An EC key that claims RS256.
        let mut mixed = TestIssuer::generate(Algorithm::ES256, "mixed").expect("ec");
        mixed.jwk["alg"] = json!("RS256");
        for (index, bad) in [(0, &rs), (1, &es), (1, &mixed)] {
            let good = TestIssuer::generate(Algorithm::ES256, "ok").expect("ec");
            let keys = if index == 0 {
                [bad, &good]
            } else {
                [&good, bad]
            };
            let e = Jwt::from_jwks_json(&policy(0), &TestIssuer::jwks(&keys), Path::new("k.json"))
                .expect_err("unusable key");
            let text = e.to_string();
            assert!(
                text.starts_with(&format!("JWKS k.json: key {index}: ")),
                "{text}"
            );
        }
    }
}
