//! JWT verification per request: the sidecar's path (`Jwt::verify_request`, keys parsed once at
//! load) against `jsonwebtoken::decode` with the same key and rules (the key rebuilt from the
//! JWK's bytes on every call), for RS256 (RSA 2048) and ES256 tokens.
//!
//! `CARGO_TARGET_DIR=... cargo bench -p meshsim-sidecar --bench jwt`

use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use meshsim_sidecar::config::JwtPolicy;
use meshsim_sidecar::policy::jwt::{Jwt, TestIssuer};
use serde_json::{Map, Value};
use std::hint::black_box;
use std::path::Path;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("jwt-verify");
    for alg in [Algorithm::RS256, Algorithm::ES256] {
        let issuer = TestIssuer::generate(alg, "k1").expect("key");
        let jwks = TestIssuer::jwks(&[&issuer]);
        let policy = JwtPolicy {
            issuer: "https://issuer.test".into(),
            audiences: vec!["fn-bench".into()],
            jwks_file: "bench.json".into(),
            leeway_s: 0,
            forward_claims: vec!["sub".into()],
            cache_entries: 0,
        };
        let jwt = Jwt::from_jwks_json(&policy, &jwks, Path::new("bench.json")).expect("jwks");
        let token = issuer.sign(&TestIssuer::claims(
            "https://issuer.test",
            "fn-bench",
            "alice",
        ));
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("header"),
        );
        group.bench_function(format!("{alg:?}/sidecar"), |b| {
            b.iter(|| black_box(jwt.verify_request(black_box(&headers)).expect("valid")))
        });

        let set: JwkSet = serde_json::from_str(&jwks).expect("jwks");
        let key = DecodingKey::from_jwk(&set.keys[0]).expect("key");
        let mut validation = Validation::new(alg);
        validation.set_issuer(&["https://issuer.test"]);
        validation.set_audience(&["fn-bench"]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = 0;
        group.bench_function(format!("{alg:?}/jsonwebtoken-decode"), |b| {
            b.iter(|| {
                black_box(
                    jsonwebtoken::decode::<Map<String, Value>>(
                        black_box(&token),
                        &key,
                        &validation,
                    )
                    .expect("valid"),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
