//! Workload identity: SPIFFE ids, a small CA (rcgen), certificate loading, and the rustls
//! configurations that terminate and originate mTLS while checking SPIFFE URI SANs.
//!
//! Certificates carry only a URI SAN (`spiffe://<td>/ns/<ns>/sa/<sa>`), as Istio's do, so
//! hostname verification is replaced by SPIFFE id checks after ordinary chain validation.

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};

/// Errors building identities and TLS configurations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// Not a SPIFFE id of the form `spiffe://<trust-domain>/<path>`.
    #[error("invalid SPIFFE id `{0}`")]
    BadSpiffeId(String),
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// rustls rejected the material.
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    /// Verifier construction failed.
    #[error("tls verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// A PEM file could not be read or parsed.
    #[error("reading {path}: {message}")]
    Pem {
        /// File path.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Writing exported files failed.
    #[error("writing {path}: {source}")]
    Io {
        /// File path.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
}

/// A parsed SPIFFE id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeId {
    /// Trust domain (authority part).
    pub trust_domain: String,
    /// Path, starting with `/`.
    pub path: String,
}

impl SpiffeId {
    /// Parse `spiffe://<td>/<path>`.
    pub fn parse(s: &str) -> Result<SpiffeId, PkiError> {
        let bad = || PkiError::BadSpiffeId(s.to_owned());
        let rest = s.strip_prefix("spiffe://").ok_or_else(bad)?;
        let slash = rest.find('/').ok_or_else(bad)?;
        let (td, path) = rest.split_at(slash);
        let td_ok = !td.is_empty()
            && td
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
        let path_ok = path.len() > 1
            && !path.ends_with('/')
            && path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._/".contains(&b))
            && !path.contains("//");
        if !td_ok || !path_ok {
            return Err(bad());
        }
        Ok(SpiffeId {
            trust_domain: td.to_owned(),
            path: path.to_owned(),
        })
    }
}

impl std::fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "spiffe://{}{}", self.trust_domain, self.path)
    }
}

/// `true` when `id` matches `pattern` (exact, or prefix when the pattern ends with `*`).
pub fn id_matches(pattern: &str, id: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => id.starts_with(prefix),
        None => pattern == id,
    }
}

/// Key algorithm of generated CA and workload keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    /// ECDSA P-256 with SHA-256 (Linkerd's workload keys; rcgen's default).
    #[default]
    EcdsaP256,
    /// RSA 2048 with SHA-256 (Istio's default: istiod's self-signed CA and the sidecar's
    /// workload key, `WORKLOAD_RSA_KEY_SIZE` 2048, unless `ECC_SIGNATURE_ALGORITHM=ECDSA`).
    #[serde(rename = "rsa-2048")]
    Rsa2048,
}

impl KeyAlgorithm {
    /// The name used in configs and calibration files.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "ecdsa-p256",
            KeyAlgorithm::Rsa2048 => "rsa-2048",
        }
    }

    fn generate(self) -> Result<KeyPair, rcgen::Error> {
        match self {
            KeyAlgorithm::EcdsaP256 => KeyPair::generate(),
            KeyAlgorithm::Rsa2048 => KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256),
        }
    }
}

impl std::str::FromStr for KeyAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<KeyAlgorithm, String> {
        match s {
            "ecdsa-p256" => Ok(KeyAlgorithm::EcdsaP256),
            "rsa-2048" => Ok(KeyAlgorithm::Rsa2048),
            other => Err(format!(
                "unknown key algorithm `{other}` (expected ecdsa-p256 or rsa-2048)"
            )),
        }
    }
}

/// A certificate authority for one trust domain.
pub struct Pki {
    trust_domain: String,
    key_algorithm: KeyAlgorithm,
    ca_key: KeyPair,
    ca_params: CertificateParams,
    ca_cert_pem: String,
    ca_cert_der: CertificateDer<'static>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

/// A workload certificate and its key.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// Certificate, PEM.
    pub cert_pem: String,
    /// PKCS#8 private key, PEM.
    pub key_pem: String,
}

fn ca_params(trust_domain: &str) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, format!("meshsim CA {trust_domain}"));
    params
        .distinguished_name
        .push(DnType::OrganizationName, "meshsim");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.use_authority_key_identifier_extension = false;
    Ok(params)
}

impl Pki {
    /// A fresh ECDSA P-256 CA.
    pub fn generate(trust_domain: &str) -> Result<Pki, PkiError> {
        Pki::generate_with(trust_domain, KeyAlgorithm::EcdsaP256)
    }

    /// A fresh CA whose key, and the workload keys it issues, use `key_algorithm`.
    pub fn generate_with(trust_domain: &str, key_algorithm: KeyAlgorithm) -> Result<Pki, PkiError> {
        let ca_key = key_algorithm.generate()?;
        let ca_params = ca_params(trust_domain)?;
        let cert = ca_params.self_signed(&ca_key)?;
        Ok(Pki {
            trust_domain: trust_domain.to_owned(),
            key_algorithm,
            ca_cert_pem: cert.pem(),
            ca_cert_der: cert.der().clone(),
            ca_key,
            ca_params,
        })
    }

    /// Rebuild a CA written by [`Pki::export`] (the CA's subject is derived from the trust
    /// domain, so only the certificate and key need storing).
    pub fn from_pem(
        trust_domain: &str,
        ca_cert_pem: &str,
        ca_key_pem: &str,
    ) -> Result<Pki, PkiError> {
        let ca_key = KeyPair::from_pem(ca_key_pem)?;
        let ca_cert_der =
            CertificateDer::from_pem_slice(ca_cert_pem.as_bytes()).map_err(|e| PkiError::Pem {
                path: "<ca certificate>".into(),
                message: e.to_string(),
            })?;
        Ok(Pki {
            trust_domain: trust_domain.to_owned(),
            key_algorithm: KeyAlgorithm::EcdsaP256,
            ca_key,
            ca_params: ca_params(trust_domain)?,
            ca_cert_pem: ca_cert_pem.to_owned(),
            ca_cert_der,
        })
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    /// CA certificate, DER.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca_cert_der.clone()
    }

    /// Write `ca.pem` and `ca-key.pem` into `dir`.
    pub fn export(&self, dir: &Path) -> Result<(), PkiError> {
        write_file(&dir.join("ca.pem"), self.ca_cert_pem.as_bytes())?;
        write_file(
            &dir.join("ca-key.pem"),
            self.ca_key.serialize_pem().as_bytes(),
        )
    }

    /// Issue a workload certificate whose only SAN is the URI `spiffe_id`.
    pub fn issue(&self, spiffe_id: &str) -> Result<IssuedCert, PkiError> {
        let key = self.key_algorithm.generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = vec![SanType::URI(spiffe_id.try_into()?)];
        params
            .distinguished_name
            .push(DnType::OrganizationName, "meshsim");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let issuer = Issuer::new(self.ca_params.clone(), &self.ca_key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// TLS material for a workload of this CA.
    pub fn materials(&self, spiffe_id: &str) -> Result<TlsMaterials, PkiError> {
        let issued = self.issue(spiffe_id)?;
        TlsMaterials::from_pem(
            self.ca_pem().as_bytes(),
            issued.cert_pem.as_bytes(),
            issued.key_pem.as_bytes(),
        )
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), PkiError> {
    std::fs::write(path, bytes).map_err(|source| PkiError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Certificates and key of one workload plus the trusted CA.
#[derive(Debug)]
pub struct TlsMaterials {
    /// Trusted CA certificates.
    pub ca: Vec<CertificateDer<'static>>,
    /// Workload chain (leaf first).
    pub chain: Vec<CertificateDer<'static>>,
    /// Workload key.
    pub key: PrivateKeyDer<'static>,
    /// SPIFFE id found in the leaf.
    pub spiffe_id: SpiffeId,
}

impl TlsMaterials {
    /// Parse PEM bytes.
    pub fn from_pem(ca: &[u8], chain: &[u8], key: &[u8]) -> Result<TlsMaterials, PkiError> {
        let pem_err = |what: &str, e: String| PkiError::Pem {
            path: what.to_owned(),
            message: e,
        };
        let ca: Vec<_> = CertificateDer::pem_slice_iter(ca)
            .collect::<Result<_, _>>()
            .map_err(|e| pem_err("ca", e.to_string()))?;
        let chain: Vec<_> = CertificateDer::pem_slice_iter(chain)
            .collect::<Result<_, _>>()
            .map_err(|e| pem_err("cert", e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| pem_err("key", e.to_string()))?;
        if ca.is_empty() {
            return Err(pem_err("ca", "no certificate".into()));
        }
        let leaf = chain
            .first()
            .ok_or_else(|| pem_err("cert", "no certificate".into()))?;
        let spiffe_id =
            spiffe_id_of(leaf).ok_or_else(|| pem_err("cert", "no SPIFFE URI SAN".into()))?;
        Ok(TlsMaterials {
            ca,
            chain,
            key,
            spiffe_id,
        })
    }

    /// Read PEM files.
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> Result<TlsMaterials, PkiError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| PkiError::Pem {
                path: p.display().to_string(),
                message: e.to_string(),
            })
        };
        Self::from_pem(&read(ca)?, &read(cert)?, &read(key)?)
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, PkiError> {
        let mut roots = RootCertStore::empty();
        for c in &self.ca {
            roots.add(c.clone())?;
        }
        Ok(Arc::new(roots))
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }

    /// Server config that requires a client certificate from our CA whose SPIFFE id is in our
    /// trust domain and matches `allowed_peers` (any, when empty).
    pub fn server_config(
        &self,
        allowed_peers: &[String],
        alpn: Vec<Vec<u8>>,
    ) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let provider = provider();
        let inner =
            WebPkiClientVerifier::builder_with_provider(self.roots()?, provider.clone()).build()?;
        let verifier = Arc::new(SpiffeClientVerifier {
            inner,
            trust_domain: self.spiffe_id.trust_domain.clone(),
            allowed: allowed_peers.to_vec(),
        });
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key())?;
        cfg.alpn_protocols = alpn;
        Ok(Arc::new(cfg))
    }

    /// Client config presenting our certificate; the server must chain to our CA and carry
    /// `expected_peer` (or any id of our trust domain when `None`).
    pub fn client_config(
        &self,
        expected_peer: Option<&str>,
    ) -> Result<Arc<rustls::ClientConfig>, PkiError> {
        let provider = provider();
        let inner =
            WebPkiServerVerifier::builder_with_provider(self.roots()?, provider.clone()).build()?;
        let verifier = Arc::new(SpiffeServerVerifier {
            inner,
            trust_domain: self.spiffe_id.trust_domain.clone(),
            expected: expected_peer.map(str::to_owned),
        });
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(self.chain.clone(), self.key())?;
        Ok(Arc::new(cfg))
    }
}

/// The aws-lc-rs provider, chosen explicitly so the process default never matters.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Parse a PKCS#8 key for tests and tools.
pub fn pkcs8_key(der: Vec<u8>) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der))
}

fn peer_allowed(id: &SpiffeId, trust_domain: &str, allowed: &[String]) -> bool {
    if id.trust_domain != trust_domain {
        return false;
    }
    let s = id.to_string();
    allowed.is_empty() || allowed.iter().any(|p| id_matches(p, &s))
}

#[derive(Debug)]
struct SpiffeClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    trust_domain: String,
    allowed: Vec<String>,
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        true
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        match spiffe_id_of(end_entity) {
            Some(id) if peer_allowed(&id, &self.trust_domain, &self.allowed) => {
                Ok(ClientCertVerified::assertion())
            }
            _ => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[derive(Debug)]
struct SpiffeServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    trust_domain: String,
    expected: Option<String>,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Chain validation first; the DNS-name check that follows it in webpki does not apply
        // to SPIFFE certificates (URI SAN only), so that one error alone is tolerated.
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(_) => {}
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {}
            Err(e) => return Err(e),
        }
        let ok = match (spiffe_id_of(end_entity), &self.expected) {
            (Some(id), Some(expected)) => id.to_string() == *expected,
            (Some(id), None) => id.trust_domain == self.trust_domain,
            (None, _) => false,
        };
        if ok {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The SPIFFE id in a certificate's URI SAN (the first `spiffe://` URI), if any.
pub fn spiffe_id_of(cert: &CertificateDer<'_>) -> Option<SpiffeId> {
    san_uris(cert.as_ref())?
        .into_iter()
        .find_map(|u| SpiffeId::parse(&u).ok())
}

/// Minimal DER reader: one TLV, returning (tag, contents, rest).
pub(crate) fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | usize::from(b);
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    let (value, rest) = rest.split_at(len);
    Some((tag, value, rest))
}

const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];

/// URI entries of the subjectAltName extension of an X.509 certificate.
fn san_uris(der: &[u8]) -> Option<Vec<String>> {
    let (0x30, cert, _) = der_tlv(der)? else {
        return None;
    };
    let (0x30, mut tbs, _) = der_tlv(cert)? else {
        return None;
    };
    // Walk tbsCertificate fields to the [3] EXPLICIT extensions.
    while !tbs.is_empty() {
        let (tag, value, rest) = der_tlv(tbs)?;
        tbs = rest;
        if tag != 0xa3 {
            continue;
        }
        let (0x30, mut exts, _) = der_tlv(value)? else {
            return None;
        };
        while !exts.is_empty() {
            let (0x30, ext, rest) = der_tlv(exts)? else {
                return None;
            };
            exts = rest;
            let (0x06, oid, mut ext_rest) = der_tlv(ext)? else {
                return None;
            };
            if oid != OID_SAN {
                continue;
            }
            let (mut tag, mut value, after) = der_tlv(ext_rest)?;
            if tag == 0x01 {
                // critical BOOLEAN
                ext_rest = after;
                (tag, value, _) = der_tlv(ext_rest)?;
            }
            if tag != 0x04 {
                return None;
            }
            let (0x30, mut names, _) = der_tlv(value)? else {
                return None;
            };
            let mut uris = Vec::new();
            while !names.is_empty() {
                let (tag, value, rest) = der_tlv(names)?;
                names = rest;
                if tag == 0x86 {
                    uris.push(String::from_utf8(value.to_vec()).ok()?);
                }
            }
            return Some(uris);
        }
        return Some(Vec::new());
    }
    Some(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_2048_ca_issues_rsa_workload_certificates_that_make_tls_configs() {
        let pki = Pki::generate_with("cluster.local", KeyAlgorithm::Rsa2048).expect("rsa ca");
        let issued = pki
            .issue("spiffe://cluster.local/ns/default/sa/fn")
            .expect("issue");
        // A PKCS#8 RSA key is much longer than a P-256 one (~1.7 KB vs ~0.24 KB of PEM).
        assert!(issued.key_pem.len() > 1000, "{}", issued.key_pem.len());
        let m = pki
            .materials("spiffe://cluster.local/ns/default/sa/fn")
            .expect("materials");
        assert!(m.client_config(None).is_ok());
        assert_eq!(
            "rsa-2048".parse::<KeyAlgorithm>(),
            Ok(KeyAlgorithm::Rsa2048)
        );
        assert_eq!(KeyAlgorithm::Rsa2048.as_str(), "rsa-2048");
        assert!("rsa-1024".parse::<KeyAlgorithm>().is_err());
    }

    /// The workspace's `.cargo/config.toml` `[env]` reaches the compiler (and so aws-lc-sys'
    /// build script): aws-lc is built without CPU jitter entropy, the 30-70 ms start-up cost.
    #[test]
    fn aws_lc_is_built_without_jitter_entropy() {
        assert_eq!(
            option_env!("AWS_LC_SYS_NO_JITTER_ENTROPY"),
            Some("1"),
            "build from the workspace so .cargo/config.toml applies"
        );
    }

    #[test]
    fn spiffe_ids_parse_and_reject() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/web").expect("valid");
        assert_eq!(id.trust_domain, "cluster.local");
        assert_eq!(id.path, "/ns/default/sa/web");
        for bad in [
            "http://cluster.local/ns/a",
            "spiffe://",
            "spiffe://td",
            "spiffe://td/",
            "spiffe://TD/x",
            "spiffe://td//x",
            "spiffe://td/x/",
            "spiffe://td/x?y",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn issued_certificate_carries_the_spiffe_san() {
        let pki = Pki::generate("cluster.local").expect("ca");
        let m = pki
            .materials("spiffe://cluster.local/ns/default/sa/web")
            .expect("issue");
        assert_eq!(
            m.spiffe_id.to_string(),
            "spiffe://cluster.local/ns/default/sa/web"
        );
        assert!(spiffe_id_of(&pki.ca_der()).is_none());
    }

    #[test]
    fn exported_ca_can_keep_issuing() {
        let pki = Pki::generate("td.example").expect("ca");
        let dir = tempfile::tempdir().expect("tmp");
        pki.export(dir.path()).expect("export");
        let cert = std::fs::read_to_string(dir.path().join("ca.pem")).expect("read");
        let key = std::fs::read_to_string(dir.path().join("ca-key.pem")).expect("read");
        let again = Pki::from_pem("td.example", &cert, &key).expect("reload");
        let m = again
            .materials("spiffe://td.example/ns/a/sa/b")
            .expect("issue");
        // Chains to the original CA: a server config built from it accepts the leaf.
        let roots = pki
            .materials("spiffe://td.example/ns/a/sa/c")
            .expect("issue");
        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots.roots().expect("roots"), provider())
                .build()
                .expect("verifier");
        verifier
            .verify_client_cert(&m.chain[0], &[], UnixTime::now())
            .expect("chains to the exported CA");
    }

    #[test]
    fn der_reader_never_panics_on_garbage() {
        for len in 0..64u8 {
            let junk: Vec<u8> = (0..len)
                .map(|i| i.wrapping_mul(37).wrapping_add(len))
                .collect();
            let _ = san_uris(&junk);
            let _ = der_tlv(&junk);
        }
        assert!(san_uris(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
    }
}
