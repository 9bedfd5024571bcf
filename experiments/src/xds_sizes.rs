//! # xDS payload sizes from real Envoy protos
//!
//! The simulator's xDS model needs to know how many bytes istiod sends when it pushes
//! configuration. Rather than typing sizes in, this module builds the Envoy resources that
//! Istio 1.20 generates for `K` Knative 1.13 services (net-istio), encodes them with the real
//! Envoy protobuf types (crate `envoy-types`, prost), and measures:
//!
//! * the encoded bytes per resource type (CDS, EDS, LDS, RDS) and the full state-of-the-world
//!   `DiscoveryResponse` (resources packed as `Any`) for each view, config scope, policy set
//!   and `K` of a sweep;
//! * per-resource sizes (bytes per cluster, per load assignment, per endpoint, per listener,
//!   per virtual host) by least squares of total size against resource counts;
//! * resource counts as functions of `K` (`fixed + per_service * min(K, cap)`) per scope;
//! * encode and decode time per byte on this machine (`std::time::Instant`, many iterations).
//!
//! The result is written to `models/xds-sizes.toml` (schema: [`XdsSizes`]).
//!
//! ## What is generated (MECHANISMS.md, "Kubernetes and Istio objects per Knative Service")
//! Each Knative Service `func-NNNNN` (revision `func-NNNNN-00001`) adds three Kubernetes
//! Services: the public `<rev>` (http 80->8012, https 443->8112; endpoints are the activator
//! pods, proxy mode), the private `<rev>-private` (http, https, http-autometric 9090,
//! http-usermetric 9091, http-queueadm 8022, http-istio 8012; endpoints are the revision's pods)
//! and the placeholder ExternalName `<ksvc>` (pointing at `knative-local-gateway`). Istio turns
//! them into 9 outbound clusters (8 EDS, 1 STRICT_DNS with an inline assignment), 8
//! `ClusterLoadAssignment`s, 2 per-VIP TCP listeners (the https ports) and, in a sidecar, 7
//! virtual hosts (port 80: three services; 9090, 9091, 8022, 8012: the private one). The ingress
//! gateway serves both gateway route tables: `http.8080` (one host `<ksvc>.<ns>.example.com`)
//! and `http.8081` (`<ksvc>.<ns>`, `.svc`, `.svc.cluster.local`): 4 virtual hosts per service.
//!
//! Resource contents follow what istiod 1.20 emits (`pilot/pkg/networking/core/v1alpha3`):
//! EDS clusters with `ads` config sources, 10 s connect timeout, LEAST_REQUEST, default
//! circuit-breaker thresholds at `u32::MAX`, `istio` filter metadata naming the service,
//! `tlsMode-istio` / `tlsMode-disabled` transport-socket matches with an ISTIO_MUTUAL
//! `UpstreamTlsContext` (SDS `default`/`ROOTCA`, SPIFFE SAN matchers, SNI
//! `outbound_.<port>_._.<fqdn>`); endpoints with socket address, locality, health status and
//! `istio`/`envoy.transport_socket_match` metadata; `virtualOutbound`/`virtualInbound`
//! listeners, one `0.0.0.0_<port>` HTTP listener per HTTP port (HCM with RDS, Istio's HTTP filter
//! chain, tracing, request-id extension), per-VIP `tcp_proxy` listeners, inline inbound routes
//! with PERMISSIVE (TLS + plaintext) filter chains per inbound port; route tables with the
//! domain variants Istio generates (FQDN, `name.ns.svc`, `name.ns`, short name in the same
//! namespace, VIP, each with and without `:port`), Istio's default retry policy, and the
//! `allow_any` virtual host.
//!
//! Policy set `all` (the paper's "Istio + policies", Table 1) adds: `jwt_authn` with an inlined
//! JWKS (istiod resolves JWKS and inlines it by default), `rbac` (an ALLOW AuthorizationPolicy on
//! SPIFFE principals, methods and paths), the global `ratelimit` filter (gRPC rate-limit service)
//! with route rate-limit actions, file access logs with Istio's default text format on every
//! HCM and `tcp_proxy`, 100 % trace sampling, `5xx` retries (2 attempts), DestinationRule
//! connection-pool thresholds and outlier detection on every cluster, STRICT mTLS (inbound
//! chains only accept TLS), and the `ratelimit`, `redis` and `zipkin` services.
//!
//! Istio's own filters (`istio.metadata_exchange`, `istio.alpn`, `istio.stats`) are not Envoy
//! protos and are not in `envoy-types`: their `Any` payloads use Istio's type URLs and are
//! encoded from small local prost messages carrying the fields Istio sets (`istio.stats` with
//! its default, empty configuration). They are a few bytes of each listener.
//!
//! ## Views and scopes
//! * views: `sidecar` (the sidecar of the first function, `func-00000` in namespace
//!   `tenant-0`) and `gateway` (the ingress gateway pod that serves both Knative gateways);
//! * `all-to-all`: Istio's default, every proxy sees every service;
//! * `scoped`: a Sidecar resource with egress hosts `./*`, `istio-system/*`, `knative-serving/*`
//!   (and `ratelimit/*` with policies): a sidecar sees its own namespace (functions are placed
//!   `services_per_namespace` to a namespace) and that fixed egress set. Sidecar resources do
//!   not apply to gateways, so the gateway view equals `all-to-all`;
//! * `minimal` (the paper's proposal): deny by default, a function sees only what it may reach:
//!   its own service, the activator and the local gateway (plus the rate-limit service and the
//!   trace collector with policies); constant in `K`. The gateway receives only the clusters its
//!   routes reference (one per service, as with `PILOT_FILTER_GATEWAY_CLUSTER_CONFIG`);
//! * `fused` (Dirigent-style): the same resource set as `minimal`, but a sidecar's configuration
//!   is delivered with the sandbox (`delivery = "with-sandbox"`, 0 xDS round trips). The
//!   gateway is no sandbox and still receives its configuration over xDS.
//!
//! The Envoy protos in `envoy-types` are newer than the Envoy 1.28 that Istio 1.20 ships; the
//! fields used here have the same numbers and wire types in both, so the sizes are the same.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration as StdDuration, Instant};

use anyhow::Context as _;
use envoy_types::pb::envoy::config::accesslog::v3 as accesslog;
use envoy_types::pb::envoy::config::cluster::v3 as cluster;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as endpoint;
use envoy_types::pb::envoy::config::listener::v3 as listener;
use envoy_types::pb::envoy::config::ratelimit::v3 as ratelimit_cfg;
use envoy_types::pb::envoy::config::rbac::v3 as rbac;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::config::trace::v3 as trace;
use envoy_types::pb::envoy::extensions::access_loggers::file::v3 as file_log;
use envoy_types::pb::envoy::extensions::filters::http::{
    cors::v3 as cors, fault::v3 as fault, grpc_stats::v3 as grpc_stats, jwt_authn::v3 as jwt,
    ratelimit::v3 as ratelimit_filter, rbac::v3 as rbac_filter, router::v3 as router,
};
use envoy_types::pb::envoy::extensions::filters::listener::{
    http_inspector::v3 as http_inspector, original_dst::v3 as original_dst,
    tls_inspector::v3 as tls_inspector,
};
use envoy_types::pb::envoy::extensions::filters::network::{
    http_connection_manager::v3 as hcm, tcp_proxy::v3 as tcp_proxy,
};
use envoy_types::pb::envoy::extensions::request_id::uuid::v3 as uuid;
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3 as previous_hosts;
use envoy_types::pb::envoy::extensions::transport_sockets::{
    raw_buffer::v3 as raw_buffer, tls::v3 as tls,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3 as upstream_http;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use envoy_types::pb::envoy::r#type::tracing::v3 as tracing_tag;
use envoy_types::pb::envoy::r#type::v3 as types;
use envoy_types::pb::google::protobuf::{
    Any, BoolValue, Duration, Empty, ListValue, Struct, UInt32Value, Value, value::Kind,
};
use prost::{Message, Name};

// The schema of `models/xds-sizes.toml` lives in `meshsim-models` (the simulator reads it;
// this module writes it).
pub use meshsim_models::xds_sizes::*;

// ================================================================================================
// The generated cluster: Kubernetes Services, their ports and endpoints.
// ================================================================================================

const CLUSTER_DOMAIN: &str = "cluster.local";
const TRUST_DOMAIN: &str = "cluster.local";
const EXTERNAL_DOMAIN: &str = "example.com";
const OWNER: usize = 0;

/// A service port: number, Kubernetes port name (Istio derives the protocol from it), target.
#[derive(Debug, Clone, Copy)]
struct Port {
    number: u32,
    name: &'static str,
    target: u32,
}

impl Port {
    const fn new(number: u32, name: &'static str, target: u32) -> Self {
        Port {
            number,
            name,
            target,
        }
    }

    /// Istio's port-name protocol selection: `http*`/`grpc*` are HTTP, the rest TCP.
    fn is_http(&self) -> bool {
        let base = self.name.split('-').next().unwrap_or("");
        matches!(base, "http" | "http2" | "grpc")
    }
}

#[derive(Debug, Clone)]
struct Pod {
    ip: String,
    /// `<workload>;<ns>;<canonical-name>;<canonical-revision>;<cluster>` as in Istio's metadata.
    workload: String,
    service_account: String,
}

#[derive(Debug, Clone)]
enum Backend {
    Pods(Vec<Pod>),
    ExternalName(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    System,
    Public,
    Private,
    Placeholder,
}

#[derive(Debug, Clone)]
struct Service {
    name: String,
    namespace: String,
    vip: Option<String>,
    ports: Vec<Port>,
    backend: Backend,
    role: Role,
    /// Index of the Knative service (for ksvc services).
    ksvc: Option<usize>,
}

impl Service {
    fn fqdn(&self) -> String {
        format!("{}.{}.svc.{CLUSTER_DOMAIN}", self.name, self.namespace)
    }

    fn service_accounts(&self) -> BTreeSet<&str> {
        match &self.backend {
            Backend::Pods(pods) => pods.iter().map(|p| p.service_account.as_str()).collect(),
            Backend::ExternalName(_) => BTreeSet::new(),
        }
    }
}

#[derive(Debug, Clone)]
struct Ksvc {
    name: String,
    namespace: String,
    revision: String,
    /// Hash net-istio puts in the probe route (`K-Network-Hash`).
    network_hash: String,
}

/// Parameters of the generated world.
#[derive(Debug, Clone)]
struct WorldParams {
    k: usize,
    services_per_namespace: usize,
    activator_pods: usize,
    revision_pods: usize,
    policies: PolicySet,
}

#[derive(Debug)]
struct World {
    params: WorldParams,
    ksvcs: Vec<Ksvc>,
    /// System services first, then three per Knative service (public, private, placeholder).
    services: Vec<Service>,
}

fn ip(prefix: [u8; 2], index: usize) -> String {
    // 16 bits of host space per prefix: enough for the sweep's largest K with room to spare.
    let index = index + 10;
    format!(
        "{}.{}.{}.{}",
        prefix[0],
        prefix[1],
        (index >> 8) & 0xff,
        index & 0xff
    )
}

/// Deterministic hex string (splitmix64), standing in for hashes and key material.
fn hex_string(seed: u64, len: usize) -> String {
    let mut state = seed;
    let mut out = String::with_capacity(len);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        out.push_str(&format!("{z:016x}"));
    }
    out.truncate(len);
    out
}

fn base64url_string(seed: u64, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    hex_string(seed, len * 2)
        .as_bytes()
        .chunks(2)
        .map(|c| {
            let v = u8::from_str_radix(std::str::from_utf8(c).unwrap_or("00"), 16).unwrap_or(0);
            ALPHABET[usize::from(v) % ALPHABET.len()] as char
        })
        .collect()
}

impl World {
    fn new(params: WorldParams) -> World {
        let mut services = Vec::new();
        let mut pod_index = 0usize;
        let mut vip_index = 0usize;
        let mut pods =
            |n: usize, workload: &str, ns: &str, canonical: &str, sa: &str| -> Vec<Pod> {
                (0..n)
                    .map(|_| {
                        pod_index += 1;
                        Pod {
                            ip: ip([10, 244], pod_index),
                            workload: format!("{workload};{ns};{canonical};latest;Kubernetes"),
                            service_account: format!("spiffe://{TRUST_DOMAIN}/ns/{ns}/sa/{sa}"),
                        }
                    })
                    .collect()
            };
        let mut next_vip = || {
            vip_index += 1;
            Some(ip([10, 96], vip_index))
        };
        let system = |name: &str, ns: &str, ports: Vec<Port>, backend: Backend, vip| Service {
            name: name.to_string(),
            namespace: ns.to_string(),
            vip,
            ports,
            backend,
            role: Role::System,
            ksvc: None,
        };
        let activator = pods(
            params.activator_pods,
            "activator",
            "knative-serving",
            "activator",
            "activator",
        );
        let gateway_pods = pods(
            1,
            "istio-ingressgateway",
            "istio-system",
            "istio-ingressgateway",
            "istio-ingressgateway-service-account",
        );
        services.push(system(
            "kubernetes",
            "default",
            vec![Port::new(443, "https", 6443)],
            Backend::Pods(pods(
                1,
                "kube-apiserver",
                "kube-system",
                "kube-apiserver",
                "default",
            )),
            next_vip(),
        ));
        services.push(system(
            "kube-dns",
            "kube-system",
            vec![
                Port::new(53, "dns-tcp", 53),
                Port::new(9153, "metrics", 9153),
            ],
            Backend::Pods(pods(2, "coredns", "kube-system", "coredns", "coredns")),
            next_vip(),
        ));
        services.push(system(
            "istiod",
            "istio-system",
            vec![
                Port::new(15010, "grpc-xds", 15010),
                Port::new(15012, "https-dns", 15012),
                Port::new(443, "https-webhook", 15017),
                Port::new(15014, "http-monitoring", 15014),
            ],
            Backend::Pods(pods(1, "istiod", "istio-system", "istiod", "istiod")),
            next_vip(),
        ));
        services.push(system(
            "istio-ingressgateway",
            "istio-system",
            vec![
                Port::new(15021, "status-port", 15021),
                Port::new(80, "http2", 8080),
                Port::new(443, "https", 8443),
            ],
            Backend::Pods(gateway_pods.clone()),
            next_vip(),
        ));
        services.push(system(
            "knative-local-gateway",
            "istio-system",
            vec![Port::new(80, "http2", 8081)],
            Backend::Pods(gateway_pods),
            next_vip(),
        ));
        let knative = [
            (
                "activator-service",
                vec![
                    Port::new(9090, "http-metrics", 9090),
                    Port::new(8008, "http-profiling", 8008),
                    Port::new(80, "http", 8012),
                    Port::new(81, "http2", 8013),
                ],
            ),
            (
                "autoscaler",
                vec![
                    Port::new(9090, "http-metrics", 9090),
                    Port::new(8008, "http-profiling", 8008),
                    Port::new(8080, "http", 8080),
                ],
            ),
            (
                "autoscaler-bucket-00-of-01",
                vec![Port::new(8080, "http", 8080)],
            ),
            (
                "controller",
                vec![
                    Port::new(9090, "http-metrics", 9090),
                    Port::new(8008, "http-profiling", 8008),
                ],
            ),
            (
                "webhook",
                vec![
                    Port::new(9090, "http-metrics", 9090),
                    Port::new(8008, "http-profiling", 8008),
                    Port::new(443, "https-webhook", 8443),
                ],
            ),
            (
                "net-istio-webhook",
                vec![
                    Port::new(9090, "http-metrics", 9090),
                    Port::new(8008, "http-profiling", 8008),
                    Port::new(443, "https-webhook", 8443),
                ],
            ),
        ];
        for (name, ports) in knative {
            let backend = if name == "activator-service" {
                Backend::Pods(activator.clone())
            } else {
                Backend::Pods(pods(1, name, "knative-serving", name, "controller"))
            };
            services.push(system(name, "knative-serving", ports, backend, next_vip()));
        }
        if params.policies == PolicySet::All {
            services.push(system(
                "ratelimit",
                "ratelimit",
                vec![
                    Port::new(8080, "http", 8080),
                    Port::new(8081, "grpc", 8081),
                    Port::new(6070, "http-debug", 6070),
                ],
                Backend::Pods(pods(1, "ratelimit", "ratelimit", "ratelimit", "ratelimit")),
                next_vip(),
            ));
            services.push(system(
                "redis",
                "ratelimit",
                vec![Port::new(6379, "redis", 6379)],
                Backend::Pods(pods(1, "redis", "ratelimit", "redis", "default")),
                next_vip(),
            ));
            services.push(system(
                "zipkin",
                "istio-system",
                vec![Port::new(9411, "http-query", 9411)],
                Backend::Pods(pods(1, "zipkin", "istio-system", "zipkin", "default")),
                next_vip(),
            ));
        }

        let mut ksvcs = Vec::with_capacity(params.k);
        for i in 0..params.k {
            let name = format!("func-{i:05}");
            let namespace = format!("tenant-{}", i / params.services_per_namespace);
            let revision = format!("{name}-00001");
            let ns = namespace.as_str();
            let deployment = format!("{revision}-deployment");
            let revision_pods: Vec<Pod> = (0..params.revision_pods)
                .map(|_| {
                    pod_index += 1;
                    Pod {
                        ip: ip([10, 244], pod_index),
                        workload: format!("{deployment};{ns};{name};{revision};Kubernetes"),
                        service_account: format!("spiffe://{TRUST_DOMAIN}/ns/{ns}/sa/default"),
                    }
                })
                .collect();
            vip_index += 1;
            services.push(Service {
                name: revision.clone(),
                namespace: namespace.clone(),
                vip: Some(ip([10, 96], vip_index)),
                ports: vec![Port::new(80, "http", 8012), Port::new(443, "https", 8112)],
                backend: Backend::Pods(activator.clone()),
                role: Role::Public,
                ksvc: Some(i),
            });
            vip_index += 1;
            services.push(Service {
                name: format!("{revision}-private"),
                namespace: namespace.clone(),
                vip: Some(ip([10, 96], vip_index)),
                ports: vec![
                    Port::new(80, "http", 8012),
                    Port::new(443, "https", 8112),
                    Port::new(9090, "http-autometric", 9090),
                    Port::new(9091, "http-usermetric", 9091),
                    Port::new(8022, "http-queueadm", 8022),
                    Port::new(8012, "http-istio", 8012),
                ],
                backend: Backend::Pods(revision_pods),
                role: Role::Private,
                ksvc: Some(i),
            });
            services.push(Service {
                name: name.clone(),
                namespace: namespace.clone(),
                vip: None,
                ports: vec![Port::new(80, "http2", 80)],
                backend: Backend::ExternalName(format!(
                    "knative-local-gateway.istio-system.svc.{CLUSTER_DOMAIN}"
                )),
                role: Role::Placeholder,
                ksvc: Some(i),
            });
            ksvcs.push(Ksvc {
                name,
                namespace,
                revision,
                network_hash: hex_string(i as u64, 64),
            });
        }
        World {
            params,
            ksvcs,
            services,
        }
    }

    fn owner(&self) -> &Ksvc {
        &self.ksvcs[OWNER]
    }

    fn owner_private(&self) -> &Service {
        self.services
            .iter()
            .find(|s| s.ksvc == Some(OWNER) && s.role == Role::Private)
            .expect("the world has at least one Knative service")
    }

    /// Services whose clusters the proxy receives, in generation order.
    fn visible_services(&self, scope: Scope, view: View) -> Vec<&Service> {
        let policies = self.params.policies == PolicySet::All;
        match (view, scope) {
            (View::Sidecar, Scope::AllToAll) | (View::Gateway, Scope::AllToAll | Scope::Scoped) => {
                self.services.iter().collect()
            }
            (View::Sidecar, Scope::Scoped) => {
                let own_ns = &self.owner().namespace;
                self.services
                    .iter()
                    .filter(|s| match s.role {
                        Role::System => {
                            matches!(s.namespace.as_str(), "istio-system" | "knative-serving")
                                || (policies && s.namespace == "ratelimit")
                        }
                        _ => &s.namespace == own_ns,
                    })
                    .collect()
            }
            (View::Sidecar, Scope::Minimal | Scope::Fused) => self
                .services
                .iter()
                .filter(|s| match s.role {
                    Role::System => {
                        matches!(
                            s.name.as_str(),
                            "activator-service" | "knative-local-gateway"
                        ) || (policies && matches!(s.name.as_str(), "ratelimit" | "zipkin"))
                    }
                    _ => s.ksvc == Some(OWNER),
                })
                .collect(),
            (View::Gateway, Scope::Minimal | Scope::Fused) => self
                .services
                .iter()
                .filter(|s| s.role == Role::Public || (policies && s.name == "zipkin"))
                .collect(),
        }
    }
}

// ================================================================================================
// Small builders for protobuf values.
// ================================================================================================

fn dur_ms(ms: i64) -> Option<Duration> {
    Some(Duration {
        seconds: ms / 1000,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    })
}

fn dur_s(s: i64) -> Option<Duration> {
    Some(Duration {
        seconds: s,
        nanos: 0,
    })
}

fn u32v(value: u32) -> Option<UInt32Value> {
    Some(UInt32Value { value })
}

fn boolv(value: bool) -> Option<BoolValue> {
    Some(BoolValue { value })
}

fn any<T: Message + Name>(msg: &T) -> Any {
    Any {
        type_url: T::type_url(),
        value: msg.encode_to_vec(),
    }
}

fn string_value(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_string())),
    }
}

fn struct_of(fields: Vec<(&str, Value)>) -> Struct {
    Struct {
        fields: fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    }
}

fn metadata(entries: Vec<(&str, Struct)>) -> Option<core::Metadata> {
    Some(core::Metadata {
        filter_metadata: entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        ..Default::default()
    })
}

fn exact(s: &str) -> matcher::StringMatcher {
    matcher::StringMatcher {
        match_pattern: Some(matcher::string_matcher::MatchPattern::Exact(s.to_string())),
        ..Default::default()
    }
}

fn prefix(s: &str) -> matcher::StringMatcher {
    matcher::StringMatcher {
        match_pattern: Some(matcher::string_matcher::MatchPattern::Prefix(s.to_string())),
        ..Default::default()
    }
}

fn socket(address: &str, port: u32) -> Option<core::Address> {
    Some(core::Address {
        address: Some(core::address::Address::SocketAddress(core::SocketAddress {
            address: address.to_string(),
            port_specifier: Some(core::socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    })
}

/// `ads: {}` with Istio's `initial_fetch_timeout: 0s`.
fn ads() -> Option<core::ConfigSource> {
    Some(core::ConfigSource {
        config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(
            core::AggregatedConfigSource {},
        )),
        initial_fetch_timeout: dur_s(0),
        resource_api_version: core::ApiVersion::V3 as i32,
        ..Default::default()
    })
}

fn envoy_grpc(cluster_name: &str, authority: &str) -> core::GrpcService {
    core::GrpcService {
        target_specifier: Some(core::grpc_service::TargetSpecifier::EnvoyGrpc(
            core::grpc_service::EnvoyGrpc {
                cluster_name: cluster_name.to_string(),
                authority: authority.to_string(),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

/// An SDS secret served by the Istio agent over `sds-grpc`.
fn sds(name: &str) -> tls::SdsSecretConfig {
    tls::SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(core::ConfigSource {
            config_source_specifier: Some(
                core::config_source::ConfigSourceSpecifier::ApiConfigSource(
                    core::ApiConfigSource {
                        api_type: core::api_config_source::ApiType::Grpc as i32,
                        transport_api_version: core::ApiVersion::V3 as i32,
                        grpc_services: vec![envoy_grpc("sds-grpc", "")],
                        set_node_on_first_message_only: true,
                        ..Default::default()
                    },
                ),
            ),
            initial_fetch_timeout: dur_s(0),
            resource_api_version: core::ApiVersion::V3 as i32,
            ..Default::default()
        }),
    }
}

fn transport_socket(name: &str, typed: Any) -> Option<core::TransportSocket> {
    Some(core::TransportSocket {
        name: name.to_string(),
        config_type: Some(core::transport_socket::ConfigType::TypedConfig(typed)),
    })
}

fn network_filter(name: &str, typed: Any) -> listener::Filter {
    listener::Filter {
        name: name.to_string(),
        config_type: Some(listener::filter::ConfigType::TypedConfig(typed)),
    }
}

fn http_filter(name: &str, typed: Any) -> hcm::HttpFilter {
    hcm::HttpFilter {
        name: name.to_string(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(typed)),
        ..Default::default()
    }
}

fn listener_filter(name: &str, typed: Any) -> listener::ListenerFilter {
    listener::ListenerFilter {
        name: name.to_string(),
        config_type: Some(listener::listener_filter::ConfigType::TypedConfig(typed)),
        ..Default::default()
    }
}

// Istio's own extension protos (istio/proxy), not part of envoy-types: local prost messages with
// the fields Istio sets, sent under Istio's type URLs.

/// `envoy.tcp.metadataexchange.config.MetadataExchange` / `io.istio.http.metadata_exchange.Config`.
#[derive(Clone, PartialEq, prost::Message)]
struct IstioMetadataExchange {
    #[prost(string, tag = "1")]
    protocol: String,
}

/// `istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig`.
#[derive(Clone, PartialEq, prost::Message)]
struct IstioAlpnFilterConfig {
    #[prost(message, repeated, tag = "1")]
    alpn_override: Vec<IstioAlpnOverride>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct IstioAlpnOverride {
    #[prost(int32, tag = "1")]
    upstream_protocol: i32,
    #[prost(string, repeated, tag = "2")]
    alpn_override: Vec<String>,
}

fn istio_any<T: Message>(type_url: &str, msg: &T) -> Any {
    Any {
        type_url: type_url.to_string(),
        value: msg.encode_to_vec(),
    }
}

fn tcp_metadata_exchange() -> Any {
    istio_any(
        "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange",
        &IstioMetadataExchange {
            protocol: "istio-peer-exchange".into(),
        },
    )
}

fn http_metadata_exchange() -> hcm::HttpFilter {
    http_filter(
        "istio.metadata_exchange",
        istio_any(
            "type.googleapis.com/io.istio.http.metadata_exchange.Config",
            &IstioMetadataExchange {
                protocol: "istio-peer-exchange".into(),
            },
        ),
    )
}

fn istio_stats_http() -> hcm::HttpFilter {
    // Istio's default stats configuration: all fields at their defaults (empty payload).
    http_filter(
        "istio.stats",
        Any {
            type_url: "type.googleapis.com/stats.PluginConfig".into(),
            value: Vec::new(),
        },
    )
}

fn istio_stats_network() -> listener::Filter {
    network_filter(
        "istio.stats",
        Any {
            type_url: "type.googleapis.com/stats.PluginConfig".into(),
            value: Vec::new(),
        },
    )
}

fn istio_alpn() -> hcm::HttpFilter {
    let overrides = [
        (0, ["istio-http/1.0", "istio", "http/1.0"]),
        (1, ["istio-http/1.1", "istio", "http/1.1"]),
        (2, ["istio-h2", "istio", "h2"]),
    ];
    http_filter(
        "istio.alpn",
        istio_any(
            "type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig",
            &IstioAlpnFilterConfig {
                alpn_override: overrides
                    .iter()
                    .map(|(p, a)| IstioAlpnOverride {
                        upstream_protocol: *p,
                        alpn_override: a.iter().map(|s| s.to_string()).collect(),
                    })
                    .collect(),
            },
        ),
    )
}

/// Istio's default access-log text format (`EnvoyTextLogFormat`).
const ISTIO_ACCESS_LOG_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n";

fn access_logs(policies: PolicySet) -> Vec<accesslog::AccessLog> {
    if policies == PolicySet::None {
        return Vec::new();
    }
    let file = file_log::FileAccessLog {
        path: "/dev/stdout".into(),
        access_log_format: Some(file_log::file_access_log::AccessLogFormat::LogFormat(
            core::SubstitutionFormatString {
                format: Some(core::substitution_format_string::Format::TextFormatSource(
                    core::DataSource {
                        specifier: Some(core::data_source::Specifier::InlineString(
                            ISTIO_ACCESS_LOG_FORMAT.into(),
                        )),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            },
        )),
    };
    vec![accesslog::AccessLog {
        name: "envoy.access_loggers.file".into(),
        config_type: Some(accesslog::access_log::ConfigType::TypedConfig(any(&file))),
        ..Default::default()
    }]
}

// ================================================================================================
// Clusters and load assignments.
// ================================================================================================

fn circuit_breakers(policies: PolicySet) -> Option<cluster::CircuitBreakers> {
    // Istio's defaults are "unlimited" (u32::MAX); the DestinationRule of the policy set
    // (connectionPool tcp.maxConnections 100, http1MaxPendingRequests 100, http2MaxRequests
    // 1000) replaces them.
    let (conns, pending, requests) = match policies {
        PolicySet::None => (u32::MAX, u32::MAX, u32::MAX),
        PolicySet::All => (100, 100, 1000),
    };
    Some(cluster::CircuitBreakers {
        thresholds: vec![cluster::circuit_breakers::Thresholds {
            max_connections: u32v(conns),
            max_pending_requests: u32v(pending),
            max_requests: u32v(requests),
            max_retries: u32v(u32::MAX),
            track_remaining: true,
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn outlier_detection(policies: PolicySet) -> Option<cluster::OutlierDetection> {
    (policies == PolicySet::All).then(|| cluster::OutlierDetection {
        consecutive_5xx: u32v(5),
        interval: dur_s(10),
        base_ejection_time: dur_s(30),
        max_ejection_percent: u32v(100),
        enforcing_consecutive_5xx: u32v(100),
        enforcing_success_rate: u32v(0),
        consecutive_gateway_failure: u32v(0),
        enforcing_consecutive_gateway_failure: u32v(0),
        ..Default::default()
    })
}

fn http_protocol_options() -> HashMap<String, Any> {
    let opts = upstream_http::HttpProtocolOptions {
        upstream_protocol_options: Some(
            upstream_http::http_protocol_options::UpstreamProtocolOptions::UseDownstreamProtocolConfig(
                upstream_http::http_protocol_options::UseDownstreamHttpConfig {
                    http_protocol_options: Some(core::Http1ProtocolOptions::default()),
                    http2_protocol_options: Some(core::Http2ProtocolOptions::default()),
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    };
    HashMap::from([(upstream_http::HttpProtocolOptions::full_name(), any(&opts))])
}

fn tls_mode_match() -> Struct {
    struct_of(vec![("tlsMode", string_value("istio"))])
}

fn istio_mutual_sockets(
    sni: &str,
    sans: &BTreeSet<&str>,
) -> Vec<cluster::cluster::TransportSocketMatch> {
    let upstream = tls::UpstreamTlsContext {
        common_tls_context: Some(tls::CommonTlsContext {
            alpn_protocols: vec!["istio-peer-exchange".into(), "istio".into()],
            tls_certificate_sds_secret_configs: vec![sds("default")],
            validation_context_type: Some(
                tls::common_tls_context::ValidationContextType::CombinedValidationContext(
                    tls::common_tls_context::CombinedCertificateValidationContext {
                        default_validation_context: Some(tls::CertificateValidationContext {
                            match_typed_subject_alt_names: sans
                                .iter()
                                .map(|s| tls::SubjectAltNameMatcher {
                                    san_type: tls::subject_alt_name_matcher::SanType::Uri as i32,
                                    matcher: Some(exact(s)),
                                    ..Default::default()
                                })
                                .collect(),
                            ..Default::default()
                        }),
                        validation_context_sds_secret_config: Some(sds("ROOTCA")),
                        ..Default::default()
                    },
                ),
            ),
            ..Default::default()
        }),
        sni: sni.to_string(),
        ..Default::default()
    };
    vec![
        cluster::cluster::TransportSocketMatch {
            name: "tlsMode-istio".into(),
            r#match: Some(tls_mode_match()),
            transport_socket: transport_socket("envoy.transport_sockets.tls", any(&upstream)),
        },
        cluster::cluster::TransportSocketMatch {
            name: "tlsMode-disabled".into(),
            r#match: Some(Struct::default()),
            transport_socket: transport_socket(
                "envoy.transport_sockets.raw_buffer",
                any(&raw_buffer::RawBuffer {}),
            ),
        },
    ]
}

fn outbound_name(port: u32, fqdn: &str) -> String {
    format!("outbound|{port}||{fqdn}")
}

// `dns_refresh_rate` and `respect_dns_ttl` are deprecated in newer Envoy protos (moved to the DNS
// cluster extension) but are what Istio 1.20 / Envoy 1.28 set on STRICT_DNS clusters.
#[allow(deprecated)]
fn outbound_cluster(svc: &Service, port: &Port, policies: PolicySet) -> cluster::Cluster {
    let fqdn = svc.fqdn();
    let name = outbound_name(port.number, &fqdn);
    let istio_meta = struct_of(vec![(
        "services",
        Value {
            kind: Some(Kind::ListValue(ListValue {
                values: vec![Value {
                    kind: Some(Kind::StructValue(struct_of(vec![
                        ("host", string_value(&fqdn)),
                        ("name", string_value(&svc.name)),
                        ("namespace", string_value(&svc.namespace)),
                    ]))),
                }],
            })),
        },
    )]);
    let mut c = cluster::Cluster {
        name: name.clone(),
        connect_timeout: dur_s(10),
        lb_policy: cluster::cluster::LbPolicy::LeastRequest as i32,
        circuit_breakers: circuit_breakers(policies),
        outlier_detection: outlier_detection(policies),
        common_lb_config: Some(cluster::cluster::CommonLbConfig {
            locality_config_specifier: Some(
                cluster::cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
                    cluster::cluster::common_lb_config::LocalityWeightedLbConfig {},
                ),
            ),
            ..Default::default()
        }),
        metadata: metadata(vec![("istio", istio_meta)]),
        filters: vec![cluster::Filter {
            name: "istio.metadata_exchange".into(),
            typed_config: Some(tcp_metadata_exchange()),
            ..Default::default()
        }],
        transport_socket_matches: istio_mutual_sockets(
            &format!("outbound_.{}_._.{fqdn}", port.number),
            &svc.service_accounts(),
        ),
        ..Default::default()
    };
    if port.is_http() {
        c.typed_extension_protocol_options = http_protocol_options();
    }
    match &svc.backend {
        Backend::Pods(_) => {
            c.cluster_discovery_type = Some(cluster::cluster::ClusterDiscoveryType::Type(
                cluster::cluster::DiscoveryType::Eds as i32,
            ));
            c.eds_cluster_config = Some(cluster::cluster::EdsClusterConfig {
                eds_config: ads(),
                service_name: name,
            });
        }
        Backend::ExternalName(host) => {
            c.cluster_discovery_type = Some(cluster::cluster::ClusterDiscoveryType::Type(
                cluster::cluster::DiscoveryType::StrictDns as i32,
            ));
            c.dns_lookup_family = cluster::cluster::DnsLookupFamily::V4Only as i32;
            c.dns_refresh_rate = dur_s(60);
            c.respect_dns_ttl = true;
            c.load_assignment = Some(endpoint::ClusterLoadAssignment {
                cluster_name: name,
                endpoints: vec![endpoint::LocalityLbEndpoints {
                    lb_endpoints: vec![endpoint::LbEndpoint {
                        host_identifier: Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(
                            endpoint::Endpoint {
                                address: socket(host, port.number),
                                ..Default::default()
                            },
                        )),
                        load_balancing_weight: u32v(1),
                        ..Default::default()
                    }],
                    load_balancing_weight: u32v(1),
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
    }
    c
}

fn load_assignment(svc: &Service, port: &Port) -> Option<endpoint::ClusterLoadAssignment> {
    let Backend::Pods(pods) = &svc.backend else {
        return None;
    };
    let lb_endpoints: Vec<endpoint::LbEndpoint> = pods
        .iter()
        .map(|pod| endpoint::LbEndpoint {
            host_identifier: Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(
                endpoint::Endpoint {
                    address: socket(&pod.ip, port.target),
                    ..Default::default()
                },
            )),
            health_status: core::HealthStatus::Healthy as i32,
            metadata: metadata(vec![
                ("envoy.transport_socket_match", tls_mode_match()),
                (
                    "istio",
                    struct_of(vec![("workload", string_value(&pod.workload))]),
                ),
            ]),
            load_balancing_weight: u32v(1),
        })
        .collect();
    let endpoints = if lb_endpoints.is_empty() {
        Vec::new()
    } else {
        vec![endpoint::LocalityLbEndpoints {
            locality: Some(core::Locality::default()),
            load_balancing_weight: u32v(lb_endpoints.len() as u32),
            lb_endpoints,
            ..Default::default()
        }]
    };
    Some(endpoint::ClusterLoadAssignment {
        cluster_name: outbound_name(port.number, &svc.fqdn()),
        endpoints,
        ..Default::default()
    })
}

fn special_cluster(
    name: &str,
    kind: cluster::cluster::DiscoveryType,
    inbound: bool,
) -> cluster::Cluster {
    let mut c = cluster::Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(cluster::cluster::ClusterDiscoveryType::Type(kind as i32)),
        connect_timeout: dur_s(10),
        ..Default::default()
    };
    if kind == cluster::cluster::DiscoveryType::OriginalDst {
        c.lb_policy = cluster::cluster::LbPolicy::ClusterProvided as i32;
        c.circuit_breakers = circuit_breakers(PolicySet::None);
        c.typed_extension_protocol_options = http_protocol_options();
    }
    if inbound {
        c.upstream_bind_config = Some(core::BindConfig {
            source_address: Some(core::SocketAddress {
                address: "127.0.0.6".into(),
                port_specifier: Some(core::socket_address::PortSpecifier::PortValue(0)),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    c
}

// ================================================================================================
// Listeners.
// ================================================================================================

fn tracing(policies: PolicySet) -> Option<hcm::http_connection_manager::Tracing> {
    let sampling = match policies {
        PolicySet::None => 1.0,
        PolicySet::All => 100.0,
    };
    let zipkin = trace::ZipkinConfig {
        collector_cluster: "zipkin".into(),
        collector_endpoint: "/api/v2/spans".into(),
        trace_id_128bit: true,
        shared_span_context: boolv(false),
        collector_endpoint_version: trace::zipkin_config::CollectorEndpointVersion::HttpJson as i32,
        ..Default::default()
    };
    let literal = |tag: &str, value: &str| tracing_tag::CustomTag {
        tag: tag.to_string(),
        r#type: Some(tracing_tag::custom_tag::Type::Literal(
            tracing_tag::custom_tag::Literal {
                value: value.to_string(),
            },
        )),
    };
    Some(hcm::http_connection_manager::Tracing {
        client_sampling: Some(types::Percent { value: 100.0 }),
        random_sampling: Some(types::Percent { value: sampling }),
        overall_sampling: Some(types::Percent { value: 100.0 }),
        max_path_tag_length: u32v(256),
        custom_tags: vec![
            literal("istio.canonical_revision", "latest"),
            literal("istio.canonical_service", "unknown"),
            literal("istio.mesh_id", "cluster.local"),
            literal("istio.namespace", "default"),
        ],
        provider: Some(trace::tracing::Http {
            name: "envoy.tracers.zipkin".into(),
            config_type: Some(trace::tracing::http::ConfigType::TypedConfig(any(&zipkin))),
        }),
        ..Default::default()
    })
}

/// The policy filters of Table 1 that live in the inbound HTTP filter chain.
fn policy_http_filters(world: &World) -> Vec<hcm::HttpFilter> {
    let owner = world.owner();
    let issuer = "https://auth.meshsim.example";
    let jwks = format!(
        "{{\"keys\":[{{\"kty\":\"RSA\",\"alg\":\"RS256\",\"use\":\"sig\",\"kid\":\"{}\",\"e\":\"AQAB\",\"n\":\"{}\"}}]}}",
        hex_string(7, 40),
        // A 2048-bit modulus is 342 base64url characters.
        base64url_string(11, 342)
    );
    let provider = jwt::JwtProvider {
        issuer: issuer.into(),
        forward: true,
        payload_in_metadata: issuer.into(),
        from_headers: vec![jwt::JwtHeader {
            name: "Authorization".into(),
            value_prefix: "Bearer ".into(),
        }],
        jwks_source_specifier: Some(jwt::jwt_provider::JwksSourceSpecifier::LocalJwks(
            core::DataSource {
                specifier: Some(core::data_source::Specifier::InlineString(jwks)),
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    let provider_name = format!("origins-{}", hex_string(3, 16));
    let jwt_authn = jwt::JwtAuthentication {
        providers: HashMap::from([(provider_name.clone(), provider)]),
        rules: vec![jwt::RequirementRule {
            r#match: Some(route::RouteMatch {
                path_specifier: Some(route::route_match::PathSpecifier::Prefix("/".into())),
                ..Default::default()
            }),
            requirement_type: Some(jwt::requirement_rule::RequirementType::Requires(
                jwt::JwtRequirement {
                    requires_type: Some(jwt::jwt_requirement::RequiresType::RequiresAny(
                        jwt::JwtRequirementOrList {
                            requirements: vec![
                                jwt::JwtRequirement {
                                    requires_type: Some(
                                        jwt::jwt_requirement::RequiresType::ProviderName(
                                            provider_name,
                                        ),
                                    ),
                                },
                                jwt::JwtRequirement {
                                    requires_type: Some(
                                        jwt::jwt_requirement::RequiresType::AllowMissing(Empty {}),
                                    ),
                                },
                            ],
                        },
                    )),
                },
            )),
        }],
        bypass_cors_preflight: true,
        ..Default::default()
    };
    let header = |name: &str, value: &str| route::HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(route::header_matcher::HeaderMatchSpecifier::StringMatch(
            exact(value),
        )),
        ..Default::default()
    };
    let perm = |rule| rbac::Permission { rule: Some(rule) };
    let principal = |id| rbac::Principal {
        identifier: Some(id),
    };
    let authenticated = |spiffe: String| {
        principal(rbac::principal::Identifier::Authenticated(
            rbac::principal::Authenticated {
                principal_name: Some(exact(&spiffe)),
            },
        ))
    };
    let policy = rbac::Policy {
        permissions: vec![perm(rbac::permission::Rule::AndRules(
            rbac::permission::Set {
                rules: vec![
                    perm(rbac::permission::Rule::OrRules(rbac::permission::Set {
                        rules: vec![
                            perm(rbac::permission::Rule::Header(header(":method", "GET"))),
                            perm(rbac::permission::Rule::Header(header(":method", "POST"))),
                        ],
                    })),
                    perm(rbac::permission::Rule::OrRules(rbac::permission::Set {
                        rules: vec![perm(rbac::permission::Rule::UrlPath(
                            matcher::PathMatcher {
                                rule: Some(matcher::path_matcher::Rule::Path(prefix("/"))),
                            },
                        ))],
                    })),
                ],
            },
        ))],
        principals: vec![principal(rbac::principal::Identifier::AndIds(
            rbac::principal::Set {
                ids: vec![principal(rbac::principal::Identifier::OrIds(
                    rbac::principal::Set {
                        ids: vec![
                            authenticated(format!(
                                "spiffe://{TRUST_DOMAIN}/ns/knative-serving/sa/activator"
                            )),
                            authenticated(format!(
                                "spiffe://{TRUST_DOMAIN}/ns/istio-system/sa/istio-ingressgateway-service-account"
                            )),
                        ],
                    },
                ))],
            },
        ))],
        ..Default::default()
    };
    let rbac_filter = rbac_filter::Rbac {
        rules: Some(rbac::Rbac {
            action: rbac::rbac::Action::Allow as i32,
            policies: HashMap::from([(
                format!(
                    "ns[{}]-policy[{}-allow]-rule[0]",
                    owner.namespace, owner.name
                ),
                policy,
            )]),
            ..Default::default()
        }),
        shadow_rules_stat_prefix: "istio_dry_run_allow_".into(),
        ..Default::default()
    };
    let ratelimit = ratelimit_filter::RateLimit {
        domain: "meshsim".into(),
        timeout: dur_ms(250),
        failure_mode_deny: false,
        rate_limit_service: Some(ratelimit_cfg::RateLimitServiceConfig {
            grpc_service: Some(envoy_grpc(
                &outbound_name(8081, &format!("ratelimit.ratelimit.svc.{CLUSTER_DOMAIN}")),
                &format!("ratelimit.ratelimit.svc.{CLUSTER_DOMAIN}"),
            )),
            transport_api_version: core::ApiVersion::V3 as i32,
        }),
        ..Default::default()
    };
    vec![
        http_filter("envoy.filters.http.jwt_authn", any(&jwt_authn)),
        http_filter("envoy.filters.http.rbac", any(&rbac_filter)),
        http_filter("envoy.filters.http.ratelimit", any(&ratelimit)),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HcmKind {
    Outbound,
    Inbound,
    Gateway,
}

fn http_connection_manager(
    world: &World,
    kind: HcmKind,
    stat_prefix: String,
    routes: hcm::http_connection_manager::RouteSpecifier,
) -> hcm::HttpConnectionManager {
    let policies = world.params.policies;
    let mut filters = vec![http_metadata_exchange()];
    filters.push(http_filter(
        "envoy.filters.http.grpc_stats",
        any(&grpc_stats::FilterConfig {
            emit_filter_state: true,
            per_method_stat_specifier: Some(
                grpc_stats::filter_config::PerMethodStatSpecifier::StatsForAllMethods(BoolValue {
                    value: false,
                }),
            ),
            ..Default::default()
        }),
    ));
    if kind == HcmKind::Outbound {
        filters.push(istio_alpn());
    }
    filters.push(http_filter(
        "envoy.filters.http.fault",
        any(&fault::HttpFault::default()),
    ));
    filters.push(http_filter("envoy.filters.http.cors", any(&cors::Cors {})));
    if kind == HcmKind::Inbound && policies == PolicySet::All {
        filters.extend(policy_http_filters(world));
    }
    filters.push(istio_stats_http());
    filters.push(http_filter(
        "envoy.filters.http.router",
        any(&router::Router::default()),
    ));
    let forward_cert = match kind {
        HcmKind::Gateway => hcm::http_connection_manager::ForwardClientCertDetails::SanitizeSet,
        _ => hcm::http_connection_manager::ForwardClientCertDetails::AppendForward,
    };
    hcm::HttpConnectionManager {
        stat_prefix,
        route_specifier: Some(routes),
        http_filters: filters,
        tracing: tracing(policies),
        access_log: access_logs(policies),
        use_remote_address: boolv(kind == HcmKind::Gateway),
        generate_request_id: boolv(true),
        stream_idle_timeout: dur_s(0),
        normalize_path: boolv(true),
        path_with_escaped_slashes_action:
            hcm::http_connection_manager::PathWithEscapedSlashesAction::KeepUnchanged as i32,
        forward_client_cert_details: forward_cert as i32,
        set_current_client_cert_details: Some(
            hcm::http_connection_manager::SetCurrentClientCertDetails {
                subject: boolv(true),
                dns: true,
                uri: true,
                ..Default::default()
            },
        ),
        upgrade_configs: vec![hcm::http_connection_manager::UpgradeConfig {
            upgrade_type: "websocket".into(),
            ..Default::default()
        }],
        request_id_extension: Some(hcm::RequestIdExtension {
            typed_config: Some(any(&uuid::UuidRequestIdConfig {
                use_request_id_for_trace_sampling: boolv(true),
                ..Default::default()
            })),
        }),
        server_name: "istio-envoy".into(),
        ..Default::default()
    }
}

fn rds(name: &str) -> hcm::http_connection_manager::RouteSpecifier {
    hcm::http_connection_manager::RouteSpecifier::Rds(hcm::Rds {
        config_source: ads(),
        route_config_name: name.to_string(),
    })
}

fn tcp_proxy_filter(cluster_name: &str, policies: PolicySet) -> listener::Filter {
    network_filter(
        "envoy.filters.network.tcp_proxy",
        any(&tcp_proxy::TcpProxy {
            stat_prefix: cluster_name.to_string(),
            cluster_specifier: Some(tcp_proxy::tcp_proxy::ClusterSpecifier::Cluster(
                cluster_name.to_string(),
            )),
            access_log: access_logs(policies),
            ..Default::default()
        }),
    )
}

fn outbound_http_listener(world: &World, port: u32) -> listener::Listener {
    let hcm = http_connection_manager(
        world,
        HcmKind::Outbound,
        format!("outbound_0.0.0.0_{port}"),
        rds(&port.to_string()),
    );
    listener::Listener {
        name: format!("0.0.0.0_{port}"),
        address: socket("0.0.0.0", port),
        filter_chains: vec![listener::FilterChain {
            filters: vec![network_filter(
                "envoy.filters.network.http_connection_manager",
                any(&hcm),
            )],
            ..Default::default()
        }],
        bind_to_port: boolv(false),
        traffic_direction: core::TrafficDirection::Outbound as i32,
        ..Default::default()
    }
}

fn outbound_tcp_listener(
    svc: &Service,
    vip: &str,
    port: &Port,
    policies: PolicySet,
) -> listener::Listener {
    let cluster_name = outbound_name(port.number, &svc.fqdn());
    listener::Listener {
        name: format!("{vip}_{}", port.number),
        address: socket(vip, port.number),
        filter_chains: vec![listener::FilterChain {
            filters: vec![
                istio_stats_network(),
                tcp_proxy_filter(&cluster_name, policies),
            ],
            ..Default::default()
        }],
        bind_to_port: boolv(false),
        traffic_direction: core::TrafficDirection::Outbound as i32,
        ..Default::default()
    }
}

fn virtual_outbound(policies: PolicySet) -> listener::Listener {
    listener::Listener {
        name: "virtualOutbound".into(),
        address: socket("0.0.0.0", 15001),
        use_original_dst: boolv(true),
        filter_chains: vec![
            listener::FilterChain {
                name: "virtualOutbound-blackhole".into(),
                filter_chain_match: Some(listener::FilterChainMatch {
                    destination_port: u32v(15001),
                    ..Default::default()
                }),
                filters: vec![
                    istio_stats_network(),
                    tcp_proxy_filter("BlackHoleCluster", policies),
                ],
                ..Default::default()
            },
            listener::FilterChain {
                name: "PassthroughFilterChain".into(),
                filters: vec![
                    istio_stats_network(),
                    tcp_proxy_filter("PassthroughCluster", policies),
                ],
                ..Default::default()
            },
        ],
        traffic_direction: core::TrafficDirection::Outbound as i32,
        ..Default::default()
    }
}

fn downstream_tls(alpn: &[&str]) -> Option<core::TransportSocket> {
    let ctx = tls::DownstreamTlsContext {
        common_tls_context: Some(tls::CommonTlsContext {
            tls_params: Some(tls::TlsParameters {
                tls_minimum_protocol_version: tls::tls_parameters::TlsProtocol::TlSv12 as i32,
                tls_maximum_protocol_version: tls::tls_parameters::TlsProtocol::TlSv13 as i32,
                cipher_suites: [
                    "ECDHE-ECDSA-AES256-GCM-SHA384",
                    "ECDHE-RSA-AES256-GCM-SHA384",
                    "ECDHE-ECDSA-AES128-GCM-SHA256",
                    "ECDHE-RSA-AES128-GCM-SHA256",
                    "AES256-GCM-SHA384",
                    "AES128-GCM-SHA256",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect(),
                ..Default::default()
            }),
            alpn_protocols: alpn.iter().map(|s| s.to_string()).collect(),
            tls_certificate_sds_secret_configs: vec![sds("default")],
            validation_context_type: Some(
                tls::common_tls_context::ValidationContextType::CombinedValidationContext(
                    tls::common_tls_context::CombinedCertificateValidationContext {
                        default_validation_context: Some(
                            tls::CertificateValidationContext::default(),
                        ),
                        validation_context_sds_secret_config: Some(sds("ROOTCA")),
                        ..Default::default()
                    },
                ),
            ),
            ..Default::default()
        }),
        require_client_certificate: boolv(true),
        ..Default::default()
    };
    transport_socket("envoy.transport_sockets.tls", any(&ctx))
}

fn inbound_route(world: &World, svc: &Service, port: u32) -> route::RouteConfiguration {
    let cluster_name = format!("inbound|{port}||");
    let rate_limits = if world.params.policies == PolicySet::All {
        vec![route::RateLimit {
            actions: vec![
                route::rate_limit::Action {
                    action_specifier: Some(route::rate_limit::action::ActionSpecifier::GenericKey(
                        route::rate_limit::action::GenericKey {
                            descriptor_key: "function".into(),
                            descriptor_value: svc.fqdn(),
                            ..Default::default()
                        },
                    )),
                },
                route::rate_limit::Action {
                    action_specifier: Some(
                        route::rate_limit::action::ActionSpecifier::RequestHeaders(
                            route::rate_limit::action::RequestHeaders {
                                header_name: ":path".into(),
                                descriptor_key: "PATH".into(),
                                ..Default::default()
                            },
                        ),
                    ),
                },
            ],
            ..Default::default()
        }]
    } else {
        Vec::new()
    };
    route::RouteConfiguration {
        name: cluster_name.clone(),
        virtual_hosts: vec![route::VirtualHost {
            name: format!("inbound|http|{port}"),
            domains: vec!["*".into()],
            routes: vec![route::Route {
                name: "default".into(),
                r#match: Some(route::RouteMatch {
                    path_specifier: Some(route::route_match::PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                decorator: Some(route::Decorator {
                    operation: format!("{}:{port}/*", svc.fqdn()),
                    ..Default::default()
                }),
                action: Some(route::route::Action::Route(route::RouteAction {
                    cluster_specifier: Some(route::route_action::ClusterSpecifier::Cluster(
                        cluster_name,
                    )),
                    timeout: dur_s(0),
                    max_stream_duration: Some(route::route_action::MaxStreamDuration {
                        max_stream_duration: dur_s(0),
                        grpc_timeout_header_max: dur_s(0),
                        ..Default::default()
                    }),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            rate_limits,
            ..Default::default()
        }],
        validate_clusters: boolv(false),
        ..Default::default()
    }
}

/// The owner pod's inbound ports (the private service's target ports, deduplicated).
fn inbound_ports(world: &World) -> Vec<Port> {
    let mut seen = BTreeSet::new();
    world
        .owner_private()
        .ports
        .iter()
        .filter(|p| seen.insert(p.target))
        .map(|p| Port::new(p.target, p.name, p.target))
        .collect()
}

fn virtual_inbound(world: &World) -> listener::Listener {
    let policies = world.params.policies;
    let strict = policies == PolicySet::All;
    let svc = world.owner_private();
    let mut chains = vec![listener::FilterChain {
        name: "virtualInbound-blackhole".into(),
        filter_chain_match: Some(listener::FilterChainMatch {
            destination_port: u32v(15006),
            ..Default::default()
        }),
        filters: vec![
            istio_stats_network(),
            tcp_proxy_filter("BlackHoleCluster", policies),
        ],
        ..Default::default()
    }];
    for port in inbound_ports(world) {
        let filters = |tls: bool| {
            let mut filters = Vec::new();
            if tls {
                filters.push(network_filter(
                    "istio.metadata_exchange",
                    tcp_metadata_exchange(),
                ));
            }
            if port.is_http() {
                let hcm = http_connection_manager(
                    world,
                    HcmKind::Inbound,
                    format!("inbound_0.0.0.0_{}", port.number),
                    hcm::http_connection_manager::RouteSpecifier::RouteConfig(inbound_route(
                        world,
                        svc,
                        port.number,
                    )),
                );
                filters.push(network_filter(
                    "envoy.filters.network.http_connection_manager",
                    any(&hcm),
                ));
            } else {
                filters.push(istio_stats_network());
                filters.push(tcp_proxy_filter(
                    &format!("inbound|{}||", port.number),
                    policies,
                ));
            }
            filters
        };
        let alpn: &[&str] = if port.is_http() {
            &["istio-http/1.0", "istio-http/1.1", "istio-h2"]
        } else {
            &["istio-peer-exchange", "istio"]
        };
        chains.push(listener::FilterChain {
            name: format!("0.0.0.0_{}", port.number),
            filter_chain_match: Some(listener::FilterChainMatch {
                destination_port: u32v(port.number),
                transport_protocol: "tls".into(),
                application_protocols: alpn.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }),
            filters: filters(true),
            transport_socket: downstream_tls(&["h2", "http/1.1"]),
            ..Default::default()
        });
        if !strict {
            chains.push(listener::FilterChain {
                name: format!("0.0.0.0_{}", port.number),
                filter_chain_match: Some(listener::FilterChainMatch {
                    destination_port: u32v(port.number),
                    transport_protocol: "raw_buffer".into(),
                    ..Default::default()
                }),
                filters: filters(false),
                ..Default::default()
            });
        }
    }
    // Passthrough for ports the pod serves without a Service.
    chains.push(listener::FilterChain {
        name: "virtualInbound".into(),
        filter_chain_match: Some(listener::FilterChainMatch {
            transport_protocol: "tls".into(),
            ..Default::default()
        }),
        filters: vec![
            istio_stats_network(),
            tcp_proxy_filter("InboundPassthroughClusterIpv4", policies),
        ],
        transport_socket: downstream_tls(&["istio-peer-exchange", "istio", "h2", "http/1.1"]),
        ..Default::default()
    });
    if !strict {
        chains.push(listener::FilterChain {
            name: "virtualInbound".into(),
            filter_chain_match: Some(listener::FilterChainMatch {
                transport_protocol: "raw_buffer".into(),
                ..Default::default()
            }),
            filters: vec![
                istio_stats_network(),
                tcp_proxy_filter("InboundPassthroughClusterIpv4", policies),
            ],
            ..Default::default()
        });
    }
    listener::Listener {
        name: "virtualInbound".into(),
        address: socket("0.0.0.0", 15006),
        filter_chains: chains,
        listener_filters: vec![
            listener_filter(
                "envoy.filters.listener.original_dst",
                any(&original_dst::OriginalDst {}),
            ),
            listener_filter(
                "envoy.filters.listener.tls_inspector",
                any(&tls_inspector::TlsInspector::default()),
            ),
            listener_filter(
                "envoy.filters.listener.http_inspector",
                any(&http_inspector::HttpInspector {}),
            ),
        ],
        listener_filters_timeout: dur_s(0),
        continue_on_listener_filters_timeout: true,
        traffic_direction: core::TrafficDirection::Inbound as i32,
        ..Default::default()
    }
}

fn gateway_listener(world: &World, port: u32) -> listener::Listener {
    let hcm = http_connection_manager(
        world,
        HcmKind::Gateway,
        format!("outbound_0.0.0.0_{port}"),
        rds(&format!("http.{port}")),
    );
    listener::Listener {
        name: format!("0.0.0.0_{port}"),
        address: socket("0.0.0.0", port),
        filter_chains: vec![listener::FilterChain {
            filters: vec![network_filter(
                "envoy.filters.network.http_connection_manager",
                any(&hcm),
            )],
            ..Default::default()
        }],
        traffic_direction: core::TrafficDirection::Outbound as i32,
        ..Default::default()
    }
}

// ================================================================================================
// Routes.
// ================================================================================================

fn retry_policy(policies: PolicySet) -> Option<route::RetryPolicy> {
    let retry_on = match policies {
        PolicySet::None => {
            "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
        }
        PolicySet::All => {
            "5xx,connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
        }
    };
    Some(route::RetryPolicy {
        retry_on: retry_on.into(),
        num_retries: u32v(2),
        retry_host_predicate: vec![route::retry_policy::RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".into(),
            config_type: Some(
                route::retry_policy::retry_host_predicate::ConfigType::TypedConfig(any(
                    &previous_hosts::PreviousHostsPredicate {},
                )),
            ),
        }],
        host_selection_retry_max_attempts: 5,
        retriable_status_codes: vec![503],
        ..Default::default()
    })
}

fn route_action(
    cluster_specifier: route::route_action::ClusterSpecifier,
    policies: PolicySet,
) -> route::RouteAction {
    route::RouteAction {
        cluster_specifier: Some(cluster_specifier),
        timeout: dur_s(0),
        retry_policy: retry_policy(policies),
        max_stream_duration: Some(route::route_action::MaxStreamDuration {
            max_stream_duration: dur_s(0),
            grpc_timeout_header_max: dur_s(0),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn header_value(key: &str, value: &str) -> core::HeaderValueOption {
    core::HeaderValueOption {
        header: Some(core::HeaderValue {
            key: key.to_string(),
            value: value.to_string(),
            ..Default::default()
        }),
        append_action: core::header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }
}

/// The routes of net-istio's VirtualServices for one Knative service: the probe route on the
/// network hash and the main route (100 % to the revision's public service, Knative headers).
fn knative_routes(ksvc: &Ksvc, host: &str, port: u32, policies: PolicySet) -> Vec<route::Route> {
    let rev_fqdn = format!("{}.{}.svc.{CLUSTER_DOMAIN}", ksvc.revision, ksvc.namespace);
    let weighted = || {
        route::route_action::ClusterSpecifier::WeightedClusters(route::WeightedCluster {
            clusters: vec![route::weighted_cluster::ClusterWeight {
                name: outbound_name(80, &rev_fqdn),
                weight: u32v(100),
                request_headers_to_add: vec![
                    header_value("Knative-Serving-Namespace", &ksvc.namespace),
                    header_value("Knative-Serving-Revision", &ksvc.revision),
                ],
                ..Default::default()
            }],
            ..Default::default()
        })
    };
    let decorator = Some(route::Decorator {
        operation: format!("{rev_fqdn}:80/*"),
        ..Default::default()
    });
    let probe = route::Route {
        name: format!("{}.{}-ingress.probe", ksvc.namespace, ksvc.name),
        r#match: Some(route::RouteMatch {
            path_specifier: Some(route::route_match::PathSpecifier::Prefix("/".into())),
            headers: vec![route::HeaderMatcher {
                name: "K-Network-Hash".into(),
                header_match_specifier: Some(
                    route::header_matcher::HeaderMatchSpecifier::StringMatch(exact(
                        &ksvc.network_hash,
                    )),
                ),
                ..Default::default()
            }],
            ..Default::default()
        }),
        decorator: decorator.clone(),
        request_headers_to_add: vec![header_value("K-Network-Hash", &ksvc.network_hash)],
        action: Some(route::route::Action::Route(route_action(
            weighted(),
            policies,
        ))),
        ..Default::default()
    };
    let mut main_action = route_action(weighted(), policies);
    main_action.upgrade_configs = vec![route::route_action::UpgradeConfig {
        upgrade_type: "websocket".into(),
        ..Default::default()
    }];
    let main = route::Route {
        name: format!("{}.{}-ingress.{host}:{port}", ksvc.namespace, ksvc.name),
        r#match: Some(route::RouteMatch {
            path_specifier: Some(route::route_match::PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        decorator,
        action: Some(route::route::Action::Route(main_action)),
        ..Default::default()
    };
    vec![probe, main]
}

/// The domains Istio 1.20 generates for a service's virtual host, seen from `proxy_ns`.
fn service_domains(svc: &Service, port: u32, proxy_ns: &str) -> Vec<String> {
    let mut hosts = vec![
        svc.fqdn(),
        format!("{}.{}.svc", svc.name, svc.namespace),
        format!("{}.{}", svc.name, svc.namespace),
    ];
    if svc.namespace == proxy_ns {
        hosts.push(svc.name.clone());
    }
    if let Some(vip) = &svc.vip {
        hosts.push(vip.clone());
    }
    hosts
        .into_iter()
        .flat_map(|h| [format!("{h}:{port}"), h])
        .collect()
}

fn sidecar_virtual_host(world: &World, svc: &Service, port: &Port) -> route::VirtualHost {
    let policies = world.params.policies;
    let proxy_ns = &world.owner().namespace;
    let routes = match (svc.role, svc.ksvc) {
        // The placeholder carries the `-mesh` VirtualService's routes.
        (Role::Placeholder, Some(i)) => {
            knative_routes(&world.ksvcs[i], &svc.fqdn(), port.number, policies)
        }
        _ => vec![route::Route {
            name: "default".into(),
            r#match: Some(route::RouteMatch {
                path_specifier: Some(route::route_match::PathSpecifier::Prefix("/".into())),
                ..Default::default()
            }),
            decorator: Some(route::Decorator {
                operation: format!("{}:{}/*", svc.fqdn(), port.number),
                ..Default::default()
            }),
            action: Some(route::route::Action::Route(route_action(
                route::route_action::ClusterSpecifier::Cluster(outbound_name(
                    port.number,
                    &svc.fqdn(),
                )),
                policies,
            ))),
            ..Default::default()
        }],
    };
    route::VirtualHost {
        name: format!("{}:{}", svc.fqdn(), port.number),
        domains: service_domains(svc, port.number, proxy_ns),
        routes,
        include_request_attempt_count: true,
        ..Default::default()
    }
}

fn allow_any_virtual_host() -> route::VirtualHost {
    route::VirtualHost {
        name: "allow_any".into(),
        domains: vec!["*".into()],
        routes: vec![route::Route {
            name: "allow_any".into(),
            r#match: Some(route::RouteMatch {
                path_specifier: Some(route::route_match::PathSpecifier::Prefix("/".into())),
                ..Default::default()
            }),
            action: Some(route::route::Action::Route(route::RouteAction {
                cluster_specifier: Some(route::route_action::ClusterSpecifier::Cluster(
                    "PassthroughCluster".into(),
                )),
                timeout: dur_s(0),
                max_stream_duration: Some(route::route_action::MaxStreamDuration {
                    max_stream_duration: dur_s(0),
                    grpc_timeout_header_max: dur_s(0),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        }],
        include_request_attempt_count: true,
        ..Default::default()
    }
}

fn gateway_virtual_host(
    ksvc: &Ksvc,
    host: &str,
    port: u32,
    policies: PolicySet,
) -> route::VirtualHost {
    route::VirtualHost {
        name: format!("{host}:{port}"),
        domains: vec![host.to_string(), format!("{host}:*")],
        routes: knative_routes(ksvc, host, port, policies),
        include_request_attempt_count: true,
        ..Default::default()
    }
}

// ================================================================================================
// One proxy's resources.
// ================================================================================================

/// The resources istiod sends one proxy.
#[derive(Debug, Default)]
struct ResourceSet {
    clusters: Vec<cluster::Cluster>,
    load_assignments: Vec<endpoint::ClusterLoadAssignment>,
    listeners: Vec<listener::Listener>,
    routes: Vec<route::RouteConfiguration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Counts {
    clusters: u64,
    load_assignments: u64,
    endpoints: u64,
    listeners: u64,
    route_configs: u64,
    virtual_hosts: u64,
}

impl ResourceSet {
    fn counts(&self) -> Counts {
        Counts {
            clusters: self.clusters.len() as u64,
            load_assignments: self.load_assignments.len() as u64,
            endpoints: self
                .load_assignments
                .iter()
                .flat_map(|cla| cla.endpoints.iter())
                .map(|l| l.lb_endpoints.len() as u64)
                .sum(),
            listeners: self.listeners.len() as u64,
            route_configs: self.routes.len() as u64,
            virtual_hosts: self
                .routes
                .iter()
                .map(|r| r.virtual_hosts.len() as u64)
                .sum(),
        }
    }
}

fn build(world: &World, scope: Scope, view: View) -> ResourceSet {
    let policies = world.params.policies;
    let visible = world.visible_services(scope, view);
    let mut set = ResourceSet::default();
    for svc in &visible {
        for port in &svc.ports {
            // The minimal gateway receives only the clusters its routes reference.
            if view == View::Gateway
                && matches!(scope, Scope::Minimal | Scope::Fused)
                && svc.role == Role::Public
                && port.number != 80
            {
                continue;
            }
            set.clusters.push(outbound_cluster(svc, port, policies));
            if let Some(cla) = load_assignment(svc, port) {
                set.load_assignments.push(cla);
            }
        }
    }
    set.clusters.push(special_cluster(
        "BlackHoleCluster",
        cluster::cluster::DiscoveryType::Static,
        false,
    ));
    match view {
        View::Sidecar => {
            set.clusters.push(special_cluster(
                "PassthroughCluster",
                cluster::cluster::DiscoveryType::OriginalDst,
                false,
            ));
            set.clusters.push(special_cluster(
                "InboundPassthroughClusterIpv4",
                cluster::cluster::DiscoveryType::OriginalDst,
                true,
            ));
            for port in inbound_ports(world) {
                set.clusters.push(special_cluster(
                    &format!("inbound|{}||", port.number),
                    cluster::cluster::DiscoveryType::OriginalDst,
                    true,
                ));
            }
            set.listeners.push(virtual_outbound(policies));
            set.listeners.push(virtual_inbound(world));
            // One listener per HTTP port, one per (VIP, TCP port).
            let mut http_ports: BTreeMap<u32, Vec<(&Service, &Port)>> = BTreeMap::new();
            for svc in &visible {
                for port in &svc.ports {
                    if port.is_http() {
                        http_ports.entry(port.number).or_default().push((svc, port));
                    } else if let Some(vip) = &svc.vip {
                        set.listeners
                            .push(outbound_tcp_listener(svc, vip, port, policies));
                    }
                }
            }
            for (&number, services) in &http_ports {
                set.listeners.push(outbound_http_listener(world, number));
                let mut virtual_hosts: Vec<route::VirtualHost> = services
                    .iter()
                    .map(|(svc, port)| sidecar_virtual_host(world, svc, port))
                    .collect();
                virtual_hosts.push(allow_any_virtual_host());
                set.routes.push(route::RouteConfiguration {
                    name: number.to_string(),
                    virtual_hosts,
                    validate_clusters: boolv(false),
                    max_direct_response_body_size_bytes: u32v(1_048_576),
                    ignore_port_in_host_matching: true,
                    ..Default::default()
                });
            }
        }
        View::Gateway => {
            set.listeners.push(gateway_listener(world, 8080));
            set.listeners.push(gateway_listener(world, 8081));
            let mut external = Vec::new();
            let mut local = Vec::new();
            for ksvc in &world.ksvcs {
                let host = format!("{}.{}.{EXTERNAL_DOMAIN}", ksvc.name, ksvc.namespace);
                external.push(gateway_virtual_host(ksvc, &host, 8080, policies));
                for host in [
                    format!("{}.{}", ksvc.name, ksvc.namespace),
                    format!("{}.{}.svc", ksvc.name, ksvc.namespace),
                    format!("{}.{}.svc.{CLUSTER_DOMAIN}", ksvc.name, ksvc.namespace),
                ] {
                    local.push(gateway_virtual_host(ksvc, &host, 8081, policies));
                }
            }
            for (name, virtual_hosts) in [("http.8080", external), ("http.8081", local)] {
                set.routes.push(route::RouteConfiguration {
                    name: name.into(),
                    virtual_hosts,
                    validate_clusters: boolv(false),
                    max_direct_response_body_size_bytes: u32v(1_048_576),
                    ..Default::default()
                });
            }
        }
    }
    set
}

// ================================================================================================
// Encoding and measuring.
// ================================================================================================

fn type_url(t: XdsType) -> String {
    match t {
        XdsType::Cds => cluster::Cluster::type_url(),
        XdsType::Eds => endpoint::ClusterLoadAssignment::type_url(),
        XdsType::Lds => listener::Listener::type_url(),
        XdsType::Rds => route::RouteConfiguration::type_url(),
    }
}

/// istiod's response envelope: version `<timestamp>/<push>`, a UUID nonce and its control-plane
/// identifier (JSON with its component, pod and build info).
fn discovery_response(t: XdsType, resources: Vec<Any>) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: "2026-11-25T19:00:00Z/42".into(),
        resources,
        type_url: type_url(t),
        nonce: "6f1c2b7e-3d4a-4c59-9a8e-0b1d2c3e4f5a".into(),
        control_plane: Some(core::ControlPlane {
            identifier: format!(
                "{{\"Component\":\"istiod\",\"ID\":\"istiod-6c8b6f5d8-x2x7k\",\"Info\":{{\"version\":\"1.20.0\",\"revision\":\"{}\",\"golang_version\":\"go1.21.4\",\"status\":\"Clean\",\"tag\":\"1.20.0\"}}}}",
                hex_string(1, 40)
            ),
        }),
        ..Default::default()
    }
}

fn pack<T: Message + Name>(resources: &[T]) -> Vec<Any> {
    resources.iter().map(any).collect()
}

/// Resource bytes and response bytes of one set, per type (CDS, EDS, LDS, RDS).
fn encoded_sizes(set: &ResourceSet) -> ([u64; 4], [u64; 4]) {
    fn sizes<T: Message + Name>(t: XdsType, resources: &[T]) -> (u64, u64) {
        let resource_bytes = resources.iter().map(|r| r.encoded_len() as u64).sum();
        let response = discovery_response(t, pack(resources));
        (resource_bytes, response.encode_to_vec().len() as u64)
    }
    let per_type = [
        sizes(XdsType::Cds, &set.clusters),
        sizes(XdsType::Eds, &set.load_assignments),
        sizes(XdsType::Lds, &set.listeners),
        sizes(XdsType::Rds, &set.routes),
    ];
    (per_type.map(|p| p.0), per_type.map(|p| p.1))
}

fn delivery(scope: Scope, view: View) -> (Delivery, u32) {
    if scope == Scope::Fused && view == View::Sidecar {
        (Delivery::WithSandbox, 0)
    } else {
        // A new proxy's state of the world: CDS, EDS, LDS, RDS, each a response and an ACK.
        (Delivery::Xds, XdsType::ALL.len() as u32)
    }
}

fn measure(world: &World, scope: Scope, view: View) -> Measured {
    let set = build(world, scope, view);
    let c = set.counts();
    let (resource, response) = encoded_sizes(&set);
    let (delivery, xds_round_trips) = delivery(scope, view);
    Measured {
        k: world.params.k as u64,
        scope,
        view,
        policies: world.params.policies,
        delivery,
        xds_round_trips,
        clusters: c.clusters,
        load_assignments: c.load_assignments,
        endpoints: c.endpoints,
        listeners: c.listeners,
        route_configs: c.route_configs,
        virtual_hosts: c.virtual_hosts,
        cds_resource_bytes: resource[0],
        eds_resource_bytes: resource[1],
        lds_resource_bytes: resource[2],
        rds_resource_bytes: resource[3],
        cds_response_bytes: response[0],
        eds_response_bytes: response[1],
        lds_response_bytes: response[2],
        rds_response_bytes: response[3],
        sotw_bytes: response.iter().sum(),
    }
}

/// Times encode (resources to `Any` plus the response) and decode (response plus every `Any`)
/// of one type; returns (response bytes, encode ns/byte, decode ns/byte, iterations per sample).
fn time_type<T: Message + Name + Default>(
    t: XdsType,
    resources: &[T],
    sample: StdDuration,
    repetitions: u32,
) -> (u64, f64, f64, u64) {
    let encode = || discovery_response(t, pack(resources)).encode_to_vec();
    let decode = |bytes: &[u8]| {
        let response = DiscoveryResponse::decode(bytes).expect("decoding what was just encoded");
        let mut n = 0usize;
        for a in &response.resources {
            let r = T::decode(a.value.as_slice()).expect("decoding what was just encoded");
            n += black_box(&r).encoded_len().min(1);
        }
        n
    };
    let bytes = encode();
    assert_eq!(
        decode(&bytes),
        resources.len(),
        "every {t:?} resource decodes from the encoded response"
    );
    let len = bytes.len() as u64;
    let (encode_ns, iterations) = time_calls(
        &|| {
            black_box(encode());
        },
        sample,
        repetitions,
    );
    let (decode_ns, _) = time_calls(
        &|| {
            black_box(decode(black_box(&bytes)));
        },
        sample,
        repetitions,
    );
    let (encode_ns, decode_ns) = (encode_ns / len as f64, decode_ns / len as f64);
    (len, encode_ns, decode_ns, iterations)
}

/// Ns per call of `f` in the fastest of `repetitions` samples of at least `sample` each, and the
/// iterations per sample. The minimum, not the median: on a shared machine every disturbance
/// only adds time, so the fastest sample is the closest to the cost itself.
fn time_calls(f: &dyn Fn(), sample: StdDuration, repetitions: u32) -> (f64, u64) {
    let start = Instant::now();
    f();
    let once = start.elapsed().max(StdDuration::from_micros(1));
    let iterations = (sample.as_nanos() / once.as_nanos()).max(1) as u64;
    let fastest = (0..repetitions.max(1))
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iterations {
                f();
            }
            start.elapsed().as_nanos() as f64 / iterations as f64
        })
        .fold(f64::INFINITY, f64::min);
    (fastest, iterations)
}

fn time_codec(
    world: &World,
    scope: Scope,
    view: View,
    measured_on: String,
    sample: StdDuration,
    repetitions: u32,
) -> Codec {
    let load_average_1m = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0);
    let set = build(world, scope, view);
    let sotw_bytes: u64 = encoded_sizes(&set).1.iter().sum();
    let (build_ns, _) = time_calls(
        &|| {
            let set = build(black_box(world), scope, view);
            black_box(encoded_sizes(&set));
        },
        sample,
        repetitions,
    );
    let rows = [
        (
            XdsType::Cds,
            set.clusters.len(),
            time_type(XdsType::Cds, &set.clusters, sample, repetitions),
        ),
        (
            XdsType::Eds,
            set.load_assignments.len(),
            time_type(XdsType::Eds, &set.load_assignments, sample, repetitions),
        ),
        (
            XdsType::Lds,
            set.listeners.len(),
            time_type(XdsType::Lds, &set.listeners, sample, repetitions),
        ),
        (
            XdsType::Rds,
            set.routes.len(),
            time_type(XdsType::Rds, &set.routes, sample, repetitions),
        ),
    ];
    let total: f64 = rows.iter().map(|r| r.2.0 as f64).sum();
    let weighted = |f: fn(&(u64, f64, f64, u64)) -> f64| {
        rows.iter().map(|r| f(&r.2) * r.2.0 as f64).sum::<f64>() / total
    };
    Codec {
        measured_on,
        encode_ns_per_byte: weighted(|r| r.1),
        decode_ns_per_byte: weighted(|r| r.2),
        build_and_encode_ns_per_byte: build_ns / sotw_bytes as f64,
        sample_ms: sample.as_millis() as u64,
        repetitions,
        load_average_1m,
        per_type: rows
            .iter()
            .map(|(t, n, (bytes, enc, dec, it))| CodecPerType {
                xds_type: *t,
                response_bytes: *bytes,
                resources: *n as u64,
                encode_ns_per_byte: *enc,
                decode_ns_per_byte: *dec,
                iterations: *it,
            })
            .collect(),
    }
}

/// Ordinary least squares with an intercept: `y ~ b0 + b1 x1 + ...`. Returns the coefficients
/// (intercept first) and R², or `None` when the regressors are collinear or constant.
fn least_squares(xs: &[Vec<f64>], ys: &[f64]) -> Option<(Vec<f64>, f64)> {
    let p = xs.first()?.len() + 1;
    if xs.len() < p {
        return None;
    }
    let mut a = vec![vec![0.0f64; p + 1]; p];
    for (x, &y) in xs.iter().zip(ys) {
        let row: Vec<f64> = std::iter::once(1.0).chain(x.iter().copied()).collect();
        for (i, ri) in row.iter().enumerate() {
            for (j, rj) in row.iter().enumerate() {
                a[i][j] += ri * rj;
            }
            a[i][p] += ri * y;
        }
    }
    // Gauss-Jordan with partial pivoting on the normal equations.
    let scale = (0..p).map(|i| a[i][i].abs()).fold(1.0f64, f64::max);
    for col in 0..p {
        let pivot = (col..p).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-9 * scale {
            return None;
        }
        a.swap(col, pivot);
        let pivot_row = a[col].clone();
        for (r, row) in a.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / pivot_row[col];
                for (x, pv) in row.iter_mut().zip(&pivot_row).skip(col) {
                    *x -= f * pv;
                }
            }
        }
    }
    let coef: Vec<f64> = (0..p).map(|i| a[i][p] / a[i][i]).collect();
    let mean = ys.iter().sum::<f64>() / ys.len() as f64;
    let (mut ss_res, mut ss_tot) = (0.0, 0.0);
    for (x, &y) in xs.iter().zip(ys) {
        let pred = coef[0] + x.iter().zip(&coef[1..]).map(|(xi, c)| xi * c).sum::<f64>();
        ss_res += (y - pred).powi(2);
        ss_tot += (y - mean).powi(2);
    }
    let r2 = if ss_tot > 0.0 {
        1.0 - ss_res / ss_tot
    } else {
        1.0
    };
    Some((coef, r2))
}

/// Fits `response_bytes(t)` against the given counts; falls back to the mean resource size when
/// a count does not vary.
fn fit(rows: &[Measured], t: XdsType, counts: &[fn(&Measured) -> u64]) -> Vec<Fit> {
    let xs: Vec<Vec<f64>> = rows
        .iter()
        .map(|m| counts.iter().map(|c| c(m) as f64).collect())
        .collect();
    let ys: Vec<f64> = rows.iter().map(|m| m.response_bytes(t) as f64).collect();
    let points = rows.len() as u32;
    match least_squares(&xs, &ys) {
        Some((coef, r2)) => coef[1..]
            .iter()
            .map(|&bytes| Fit {
                xds_type: t,
                bytes,
                intercept_bytes: coef[0],
                r2,
                method: FitMethod::LeastSquares,
                points,
            })
            .collect(),
        None => counts
            .iter()
            .map(|c| {
                let n: u64 = rows.iter().map(c).sum();
                let bytes: u64 = rows.iter().map(|m| m.resource_bytes(t)).sum();
                Fit {
                    xds_type: t,
                    bytes: if n == 0 { 0.0 } else { bytes as f64 / n as f64 },
                    intercept_bytes: 0.0,
                    r2: 0.0,
                    method: FitMethod::Mean,
                    points,
                }
            })
            .collect(),
    }
}

// ================================================================================================
// Generation.
// ================================================================================================

/// Knobs of [`generate_with`]; [`Options::default`] is what [`generate`] and the CLI use.
#[derive(Debug, Clone)]
pub struct Options {
    /// Numbers of Knative services to sweep.
    pub ks: Vec<usize>,
    /// Functions per namespace.
    pub services_per_namespace: usize,
    /// Activator pods.
    pub activator_pods: usize,
    /// Ready pods per revision in the measured table.
    pub revision_pods: usize,
    /// Revision pod counts used (with `ks`) for the fits.
    pub fit_revision_pods: Vec<usize>,
    /// Minimum duration of one timed codec sample.
    pub timing_sample: StdDuration,
    /// Timed samples per codec figure.
    pub timing_repetitions: u32,
    /// The command recorded in the header.
    pub command: String,
}

/// The default sweep.
pub const DEFAULT_KS: [usize; 6] = [1, 10, 50, 100, 200, 500];

impl Default for Options {
    fn default() -> Self {
        Options {
            ks: DEFAULT_KS.to_vec(),
            services_per_namespace: 10,
            activator_pods: 1,
            revision_pods: 1,
            fit_revision_pods: vec![0, 1, 3],
            timing_sample: StdDuration::from_millis(200),
            timing_repetitions: 7,
            command: "meshsim calibrate xds".into(),
        }
    }
}

fn world(opts: &Options, k: usize, revision_pods: usize, policies: PolicySet) -> World {
    World::new(WorldParams {
        k,
        services_per_namespace: opts.services_per_namespace,
        activator_pods: opts.activator_pods,
        revision_pods,
        policies,
    })
}

fn scope_description(scope: Scope, view: View, s: usize) -> String {
    match (scope, view) {
        (Scope::AllToAll, View::Sidecar) => "Istio default: every service in the mesh".into(),
        (Scope::AllToAll | Scope::Scoped, View::Gateway) => {
            "every service (Sidecar resources do not apply to gateways)".into()
        }
        (Scope::Scoped, View::Sidecar) => format!(
            "Sidecar resource egress ./*, istio-system/*, knative-serving/* (+ ratelimit/* with policies): \
             the {s} functions of its namespace and the Istio/Knative system services"
        ),
        (Scope::Minimal, View::Sidecar) => {
            "deny by default: own service, activator, local gateway (+ rate limit service and trace collector with policies)"
                .into()
        }
        (Scope::Fused, View::Sidecar) => {
            "the minimal set, delivered with the sandbox (Dirigent-style): no xDS round trips".into()
        }
        (Scope::Minimal | Scope::Fused, View::Gateway) => {
            "only the clusters its routes reference (one per function), all routes; over xDS".into()
        }
    }
}

fn counts_of(m: &Measured) -> [u64; 6] {
    [
        m.clusters,
        m.load_assignments,
        m.endpoints,
        m.listeners,
        m.route_configs,
        m.virtual_hosts,
    ]
}

fn scope_counts(opts: &Options, scope: Scope, view: View, policies: PolicySet) -> ScopeCounts {
    // Differences between K = 1 and K = 2 (both within one namespace) give the per-service
    // counts; the cap is where visibility stops growing.
    let at = |k| measure(&world(opts, k, opts.revision_pods, policies), scope, view);
    let one = counts_of(&at(1));
    let two = counts_of(&at(2));
    let linear = |i: usize| {
        let per_service = two[i].saturating_sub(one[i]);
        Linear {
            fixed: one[i] - per_service,
            per_service,
        }
    };
    let services_cap = match (scope, view) {
        (Scope::Scoped, View::Sidecar) => Some(opts.services_per_namespace as u64),
        _ => None,
    };
    let (delivery, xds_round_trips) = delivery(scope, view);
    ScopeCounts {
        scope,
        view,
        policies,
        delivery,
        xds_round_trips,
        services_cap,
        description: scope_description(scope, view, opts.services_per_namespace),
        clusters: linear(0),
        load_assignments: linear(1),
        endpoints: linear(2),
        listeners: linear(3),
        route_configs: linear(4),
        virtual_hosts: linear(5),
    }
}

fn cpu_description() -> (String, u32) {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string());
    let from_cpuinfo = text.lines().filter(|l| l.starts_with("processor")).count() as u32;
    let cores = if from_cpuinfo > 0 {
        from_cpuinfo
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
    };
    (model, cores)
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil_date(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn today_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (y, m, d) = civil_date(secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// The version of a package as resolved in the workspace's Cargo.lock.
fn locked_version(package: &str) -> String {
    const LOCK: &str = include_str!("../../Cargo.lock");
    let needle = format!("name = \"{package}\"\nversion = \"");
    LOCK.find(&needle)
        .and_then(|i| LOCK[i + needle.len()..].split('"').next())
        .unwrap_or("unknown")
        .to_string()
}

/// Generates the resources for every `K` in `ks` (with the default options), measures them and
/// returns the file's contents.
pub fn generate(ks: &[usize]) -> XdsSizes {
    generate_with(&Options {
        ks: ks.to_vec(),
        ..Options::default()
    })
}

/// [`generate`] with explicit options.
pub fn generate_with(opts: &Options) -> XdsSizes {
    let mut ks = opts.ks.clone();
    ks.sort_unstable();
    ks.dedup();
    ks.retain(|&k| k > 0);
    assert!(!ks.is_empty(), "at least one K >= 1");
    let mut measured = Vec::new();
    let mut per_resource = Vec::new();
    let mut scopes = Vec::new();
    for policies in PolicySet::ALL {
        for &k in &ks {
            let w = world(opts, k, opts.revision_pods, policies);
            for view in View::ALL {
                for scope in Scope::ALL {
                    measured.push(measure(&w, scope, view));
                }
            }
        }
        for view in View::ALL {
            let mut rows = Vec::new();
            for &k in &ks {
                for &e in &opts.fit_revision_pods {
                    rows.push(measure(&world(opts, k, e, policies), Scope::AllToAll, view));
                }
            }
            let cluster = fit(&rows, XdsType::Cds, &[|m| m.clusters]);
            let eds = fit(
                &rows,
                XdsType::Eds,
                &[|m| m.load_assignments, |m| m.endpoints],
            );
            let listener = fit(&rows, XdsType::Lds, &[|m| m.listeners]);
            let vhost = fit(&rows, XdsType::Rds, &[|m| m.virtual_hosts]);
            let mut eds = eds.into_iter();
            per_resource.push(PerResource {
                view,
                policies,
                cluster: cluster.into_iter().next().expect("one coefficient"),
                load_assignment: eds.next().expect("two coefficients"),
                endpoint: eds.next().expect("two coefficients"),
                listener: listener.into_iter().next().expect("one coefficient"),
                virtual_host: vhost.into_iter().next().expect("one coefficient"),
            });
            for scope in Scope::ALL {
                scopes.push(scope_counts(opts, scope, view, policies));
            }
        }
    }
    let k_max = *ks.last().expect("non-empty");
    let codec_world = world(opts, k_max, opts.revision_pods, PolicySet::All);
    let build_kind = if cfg!(debug_assertions) {
        "debug"
    } else {
        "optimised"
    };
    let codec = time_codec(
        &codec_world,
        Scope::AllToAll,
        View::Sidecar,
        format!(
            "all-to-all sidecar view, policies all, K = {k_max}: encode = resources to Any + \
             DiscoveryResponse, decode = DiscoveryResponse + every Any; {build_kind} build, \
             one thread"
        ),
        opts.timing_sample,
        opts.timing_repetitions,
    );
    let (model, cores) = cpu_description();
    XdsSizes {
        version: XDS_SIZES_VERSION,
        header: Header {
            date: today_utc(),
            machine: format!("{model} ({cores} cores)"),
            cores,
            envoy_types_version: locked_version("envoy-types"),
            prost_version: locked_version("prost"),
            istio_version: "1.20".into(),
            knative_version: "1.13 (net-istio)".into(),
            command: opts.command.clone(),
        },
        assumptions: Assumptions {
            ks: ks.iter().map(|&k| k as u64).collect(),
            services_per_namespace: opts.services_per_namespace as u64,
            activator_pods: opts.activator_pods as u64,
            revision_pods: opts.revision_pods as u64,
            fit_revision_pods: opts.fit_revision_pods.iter().map(|&e| e as u64).collect(),
            function_names: format!(
                "func-NNNNN (revision func-NNNNN-00001) in namespace tenant-<i / {}>",
                opts.services_per_namespace
            ),
            sidecar_owner: "func-00000 in tenant-0 (its revision pod's sidecar)".into(),
        },
        codec,
        per_resource,
        scopes,
        measured,
    }
}

/// Writes `sizes` to `path` atomically (temporary file + rename).
pub fn write(path: &Path, sizes: &XdsSizes) -> anyhow::Result<()> {
    let mut text = String::from(
        "# xDS payload sizes from real Envoy protos (meshsim experiments::xds_sizes).\n\
         # Generated: do not edit by hand; regenerate with the command in [header].\n\n",
    );
    text.push_str(&sizes.to_toml_string().context("serialising xDS sizes")?);
    crate::output::write_atomic(path, text.as_bytes())
}

/// Reads and validates a file written by [`write()`].
pub fn read(path: &Path) -> anyhow::Result<XdsSizes> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    XdsSizes::from_toml_str(&text).with_context(|| format!("loading {}", path.display()))
}

fn kib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1024.0)
}

/// A readable summary: state-of-the-world KiB per K, scope and view, plus the fits and codec.
pub fn table(sizes: &XdsSizes) -> String {
    let mut out = String::new();
    for policies in PolicySet::ALL {
        out.push_str(&format!(
            "\nstate of the world (CDS+EDS+LDS+RDS responses), KiB, policies = {}\n",
            policies.as_str()
        ));
        out.push_str(&format!("{:>6}", "K"));
        for view in View::ALL {
            for scope in Scope::ALL {
                out.push_str(&format!(
                    " {:>18}",
                    format!("{}/{}", view.as_str(), scope.as_str())
                ));
            }
        }
        out.push('\n');
        for &k in &sizes.assumptions.ks {
            out.push_str(&format!("{k:>6}"));
            for view in View::ALL {
                for scope in Scope::ALL {
                    let cell = sizes
                        .row(k, scope, view, policies)
                        .map_or("-".into(), |m| kib(m.sotw_bytes));
                    out.push_str(&format!(" {cell:>18}"));
                }
            }
            out.push('\n');
        }
    }
    out.push_str("\nper-resource bytes (least squares over all-to-all rows)\n");
    out.push_str(&format!(
        "{:<8} {:<5} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        "view", "pol", "cluster", "cla", "endpoint", "listener", "vhost"
    ));
    for p in &sizes.per_resource {
        out.push_str(&format!(
            "{:<8} {:<5} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}\n",
            p.view.as_str(),
            p.policies.as_str(),
            p.cluster.bytes,
            p.load_assignment.bytes,
            p.endpoint.bytes,
            p.listener.bytes,
            p.virtual_host.bytes
        ));
    }
    out.push_str(&format!(
        "\ncodec on {}: encode {:.2} ns/byte, decode {:.2} ns/byte, build + encode {:.2} ns/byte\n",
        sizes.header.machine,
        sizes.codec.encode_ns_per_byte,
        sizes.codec.decode_ns_per_byte,
        sizes.codec.build_and_encode_ns_per_byte
    ));
    out.push_str(&format!(
        "  (fastest of {} samples of >= {} ms; load average {:.2} at the start)\n",
        sizes.codec.repetitions, sizes.codec.sample_ms, sizes.codec.load_average_1m
    ));
    for c in &sizes.codec.per_type {
        out.push_str(&format!(
            "  {:?}: {} KiB, {} resources, encode {:.2} ns/byte, decode {:.2} ns/byte\n",
            c.xds_type,
            kib(c.response_bytes),
            c.resources,
            c.encode_ns_per_byte,
            c.decode_ns_per_byte
        ));
    }
    out
}

/// `meshsim calibrate xds [--out FILE] [--ks 1,10,...]`: generates, writes `out` and prints the
/// table.
pub fn run_cli(out: &Path, ks: &[usize]) -> anyhow::Result<()> {
    let ks_text: Vec<String> = ks.iter().map(|k| k.to_string()).collect();
    let command = format!(
        "meshsim calibrate xds --out {} --ks {}",
        out.display(),
        ks_text.join(",")
    );
    run_with(
        out,
        &Options {
            ks: ks.to_vec(),
            command,
            ..Options::default()
        },
    )
}

/// [`run_cli`] with explicit options (the header records `opts.command`).
pub fn run_with(out: &Path, opts: &Options) -> anyhow::Result<()> {
    anyhow::ensure!(
        opts.ks.iter().any(|&k| k > 0),
        "--ks needs at least one K >= 1"
    );
    let sizes = generate_with(opts);
    write(out, &sizes)?;
    // Read back what was written: the file must load.
    read(out)?;
    print!("{}", table(&sizes));
    println!("\nwrote {}", out.display());
    Ok(())
}
