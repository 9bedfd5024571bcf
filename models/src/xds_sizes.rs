//! Schema of `models/xds-sizes.toml`: encoded sizes of the Envoy resources Istio 1.20 pushes
//! for K Knative services, measured from the real Envoy protobuf types by
//! `experiments::xds_sizes` (issue 8; regenerate with the command in the file's `[header]`).
//! The types mirror that module's schema field for field (the experiments crate writes the
//! file, this crate reads it); this module does no I/O.
//!
//! The simulator's xDS model ([`XdsSizes::sotw_bytes`]) computes a response's payload as
//! the fitted `intercept + bytes per resource x resource count` of [`PerResource`], with the
//! counts of [`ScopeCounts`] evaluated at the services a proxy can see.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Schema version of `models/xds-sizes.toml`.
pub const XDS_SIZES_VERSION: u32 = 1;

/// Configuration scope of a proxy: which services' resources it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Istio's default: every proxy sees every service.
    AllToAll,
    /// A Sidecar resource: own namespace plus a fixed egress set.
    Scoped,
    /// The paper's proposal: deny by default, only what a function may reach.
    Minimal,
    /// Dirigent-style: the `minimal` set, delivered with the sandbox (no xDS round trips).
    Fused,
}

impl Scope {
    /// All scopes, in the order they are reported.
    pub const ALL: [Scope; 4] = [Scope::AllToAll, Scope::Scoped, Scope::Minimal, Scope::Fused];

    /// Name used in the file and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::AllToAll => "all-to-all",
            Scope::Scoped => "scoped",
            Scope::Minimal => "minimal",
            Scope::Fused => "fused",
        }
    }
}

/// Which proxy's configuration is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum View {
    /// A function's sidecar.
    Sidecar,
    /// The ingress gateway (serves the Knative ingress and local gateways).
    Gateway,
}

impl View {
    /// Both views.
    pub const ALL: [View; 2] = [View::Sidecar, View::Gateway];

    /// Name used in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            View::Sidecar => "sidecar",
            View::Gateway => "gateway",
        }
    }
}

/// Policy set: none (plain Istio) or all nine policies of the paper's Table 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicySet {
    /// Istio defaults (auto mTLS, default retries, 1 % tracing).
    None,
    /// All nine policies on.
    All,
}

impl PolicySet {
    /// Both policy sets.
    pub const ALL: [PolicySet; 2] = [PolicySet::None, PolicySet::All];

    /// Name used in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicySet::None => "none",
            PolicySet::All => "all",
        }
    }
}

/// How a proxy receives its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Over the ADS stream from istiod (state of the world, each response ACKed).
    Xds,
    /// Shipped with the sandbox image/snapshot: no xDS round trips.
    WithSandbox,
}

/// xDS resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdsType {
    /// Clusters.
    Cds,
    /// Cluster load assignments (endpoints).
    Eds,
    /// Listeners.
    Lds,
    /// Route configurations.
    Rds,
}

impl XdsType {
    /// The four types in istiod's push order.
    pub const ALL: [XdsType; 4] = [XdsType::Cds, XdsType::Eds, XdsType::Lds, XdsType::Rds];
}

/// The whole calibration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XdsSizes {
    /// Schema version ([`XDS_SIZES_VERSION`]).
    pub version: u32,
    /// Where, when and how the file was made.
    pub header: Header,
    /// The cluster that was generated.
    pub assumptions: Assumptions,
    /// Encode/decode cost per byte on the generating machine.
    pub codec: Codec,
    /// Per-resource sizes, fitted per view and policy set.
    pub per_resource: Vec<PerResource>,
    /// Resource counts as functions of `K`, per scope, view and policy set.
    pub scopes: Vec<ScopeCounts>,
    /// The measured table: one row per `K`, scope, view and policy set.
    pub measured: Vec<Measured>,
}

/// Provenance of the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// UTC date the file was generated (YYYY-MM-DD).
    pub date: String,
    /// `<cpu model> (<n> cores)` from /proc/cpuinfo.
    pub machine: String,
    /// Logical cores of the machine.
    pub cores: u32,
    /// Version of the `envoy-types` crate whose protos were encoded.
    pub envoy_types_version: String,
    /// Version of `prost` that encoded them.
    pub prost_version: String,
    /// Istio version whose resource generation is modelled.
    pub istio_version: String,
    /// Knative version whose objects are modelled.
    pub knative_version: String,
    /// The command that generated the file.
    pub command: String,
}

/// Parameters of the generated cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assumptions {
    /// The numbers of Knative services of the sweep.
    pub ks: Vec<u64>,
    /// Functions per namespace (what `scoped` sees of other functions).
    pub services_per_namespace: u64,
    /// Activator pods (the public services' endpoints in proxy mode).
    pub activator_pods: u64,
    /// Ready pods per revision in the measured table (the private services' endpoints).
    pub revision_pods: u64,
    /// Revision pod counts combined with `ks` for the least-squares fits.
    pub fit_revision_pods: Vec<u64>,
    /// Naming of the generated functions.
    pub function_names: String,
    /// Whose sidecar the `sidecar` view is.
    pub sidecar_owner: String,
}

/// Serialisation cost per byte.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Codec {
    /// What was encoded and decoded.
    pub measured_on: String,
    /// Istio-side marshalling: resources to `Any` plus the `DiscoveryResponse`, ns per response
    /// byte, all four types together.
    pub encode_ns_per_byte: f64,
    /// Envoy-side unmarshalling: the `DiscoveryResponse` plus every `Any` to its typed resource.
    pub decode_ns_per_byte: f64,
    /// Building the typed resources (which marshals their nested typed configs, such as HCM
    /// filters and TLS contexts, into `Any`) plus encoding the four responses, ns per response
    /// byte. `encode_ns_per_byte` counts only the outer marshalling of already-built resources,
    /// whose nested `Any`s are copied as bytes (hence LDS's low figure); istiod pays both.
    pub build_and_encode_ns_per_byte: f64,
    /// Minimum wall time of one timed sample (ms).
    pub sample_ms: u64,
    /// Timed samples per figure; the fastest is reported (the least disturbed sample on a
    /// machine shared with other work).
    pub repetitions: u32,
    /// 1-minute load average when the timing started (/proc/loadavg), for judging the figures.
    pub load_average_1m: f64,
    /// The same per resource type.
    pub per_type: Vec<CodecPerType>,
}

/// Encode/decode cost of one resource type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodecPerType {
    /// Resource type.
    pub xds_type: XdsType,
    /// Encoded `DiscoveryResponse` bytes.
    pub response_bytes: u64,
    /// Resources in the response.
    pub resources: u64,
    /// Encode ns per response byte (fastest sample).
    pub encode_ns_per_byte: f64,
    /// Decode ns per response byte (fastest sample).
    pub decode_ns_per_byte: f64,
    /// Encodes (and decodes) per timed sample.
    pub iterations: u64,
}

/// How a per-resource size was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FitMethod {
    /// Least squares of response bytes against counts (with an intercept).
    LeastSquares,
    /// The count does not vary over the sweep: mean resource bytes per resource.
    Mean,
}

/// One fitted per-resource size: `response_bytes ~= intercept_bytes + bytes * count (+ ...)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fit {
    /// Response whose bytes were fitted.
    pub xds_type: XdsType,
    /// Bytes per resource (the slope).
    pub bytes: f64,
    /// Intercept of the fit, bytes: the response envelope plus how far the K-independent
    /// resources (system services, inbound and special clusters) deviate from `bytes` each; it
    /// is negative where those are smaller than a Knative service's resources.
    pub intercept_bytes: f64,
    /// Coefficient of determination of the fit.
    pub r2: f64,
    /// How the size was obtained.
    pub method: FitMethod,
    /// Data points used.
    pub points: u32,
}

/// Per-resource sizes for one view and policy set (fitted on the `all-to-all` rows, `ks` x
/// `fit_revision_pods`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerResource {
    /// Proxy view.
    pub view: View,
    /// Policy set.
    pub policies: PolicySet,
    /// CDS bytes per cluster.
    pub cluster: Fit,
    /// EDS bytes per `ClusterLoadAssignment` (fitted jointly with `endpoint`).
    pub load_assignment: Fit,
    /// EDS bytes per endpoint (fitted jointly with `load_assignment`).
    pub endpoint: Fit,
    /// LDS bytes per listener.
    pub listener: Fit,
    /// RDS bytes per virtual host.
    pub virtual_host: Fit,
}

/// A resource count as a function of `K`: `fixed + per_service * min(K, cap)` (no cap: `K`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Linear {
    /// Resources independent of `K`.
    pub fixed: u64,
    /// Resources per visible Knative service.
    pub per_service: u64,
}

/// Resource counts of one scope, view and policy set, derived from the generated resources.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeCounts {
    /// Config scope.
    pub scope: Scope,
    /// Proxy view.
    pub view: View,
    /// Policy set.
    pub policies: PolicySet,
    /// How the configuration reaches the proxy.
    pub delivery: Delivery,
    /// Request/response round trips of a new proxy's initial state of the world.
    pub xds_round_trips: u32,
    /// Visible services are `min(K, services_cap)`; absent: all `K`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services_cap: Option<u64>,
    /// What the proxy sees.
    pub description: String,
    /// Clusters (CDS).
    pub clusters: Linear,
    /// Cluster load assignments (EDS).
    pub load_assignments: Linear,
    /// Endpoints in those assignments (at `activator_pods` and `revision_pods`).
    pub endpoints: Linear,
    /// Listeners (LDS).
    pub listeners: Linear,
    /// Route configurations (RDS).
    pub route_configs: Linear,
    /// Virtual hosts in those route configurations.
    pub virtual_hosts: Linear,
}

impl ScopeCounts {
    /// Visible Knative services at `k` services in the cluster.
    pub fn visible_services(&self, k: u64) -> u64 {
        self.services_cap.map_or(k, |cap| k.min(cap))
    }
}

/// One measured row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measured {
    /// Knative services in the cluster.
    pub k: u64,
    /// Config scope.
    pub scope: Scope,
    /// Proxy view.
    pub view: View,
    /// Policy set.
    pub policies: PolicySet,
    /// How the configuration reaches the proxy.
    pub delivery: Delivery,
    /// Round trips of the initial state of the world.
    pub xds_round_trips: u32,
    /// Clusters.
    pub clusters: u64,
    /// Cluster load assignments.
    pub load_assignments: u64,
    /// Endpoints in them.
    pub endpoints: u64,
    /// Listeners.
    pub listeners: u64,
    /// Route configurations.
    pub route_configs: u64,
    /// Virtual hosts.
    pub virtual_hosts: u64,
    /// Encoded bytes of the clusters (sum of the messages).
    pub cds_resource_bytes: u64,
    /// Encoded bytes of the load assignments.
    pub eds_resource_bytes: u64,
    /// Encoded bytes of the listeners.
    pub lds_resource_bytes: u64,
    /// Encoded bytes of the route configurations.
    pub rds_resource_bytes: u64,
    /// Encoded CDS `DiscoveryResponse` (resources as `Any`).
    pub cds_response_bytes: u64,
    /// Encoded EDS `DiscoveryResponse`.
    pub eds_response_bytes: u64,
    /// Encoded LDS `DiscoveryResponse`.
    pub lds_response_bytes: u64,
    /// Encoded RDS `DiscoveryResponse`.
    pub rds_response_bytes: u64,
    /// The whole state of the world: the four responses.
    pub sotw_bytes: u64,
}

impl Measured {
    /// Response bytes of one type.
    pub fn response_bytes(&self, t: XdsType) -> u64 {
        match t {
            XdsType::Cds => self.cds_response_bytes,
            XdsType::Eds => self.eds_response_bytes,
            XdsType::Lds => self.lds_response_bytes,
            XdsType::Rds => self.rds_response_bytes,
        }
    }

    /// Resource bytes of one type.
    pub fn resource_bytes(&self, t: XdsType) -> u64 {
        match t {
            XdsType::Cds => self.cds_resource_bytes,
            XdsType::Eds => self.eds_resource_bytes,
            XdsType::Lds => self.lds_resource_bytes,
            XdsType::Rds => self.rds_resource_bytes,
        }
    }
}

/// Error loading an xDS size file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum XdsSizesError {
    /// Not valid TOML for the schema (the message names the field, line and column).
    Parse(String),
    /// Parsed, but a value is out of range or inconsistent.
    Invalid {
        /// Path of the offending field, e.g. `measured[3].sotw_bytes`.
        field: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
}

impl fmt::Display for XdsSizesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XdsSizesError::Parse(msg) => write!(f, "invalid xDS size file: {msg}"),
            XdsSizesError::Invalid { field, reason } => {
                write!(f, "invalid xDS size file: field `{field}`: {reason}")
            }
        }
    }
}

impl std::error::Error for XdsSizesError {}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> XdsSizesError {
    XdsSizesError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

fn check_positive(field: &str, v: f64) -> Result<(), XdsSizesError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("must be a finite number > 0, got {v}"),
        ))
    }
}

impl XdsSizes {
    /// Parses and validates a file's text.
    pub fn from_toml_str(text: &str) -> Result<Self, XdsSizesError> {
        let sizes: XdsSizes =
            toml::from_str(text).map_err(|e| XdsSizesError::Parse(e.to_string()))?;
        sizes.validate()?;
        Ok(sizes)
    }

    /// Serialises to TOML (after validating).
    pub fn to_toml_string(&self) -> Result<String, XdsSizesError> {
        self.validate()?;
        toml::to_string(self).map_err(|e| XdsSizesError::Parse(e.to_string()))
    }

    /// Checks ranges and internal consistency; the error names the field.
    pub fn validate(&self) -> Result<(), XdsSizesError> {
        if self.version != XDS_SIZES_VERSION {
            return Err(invalid(
                "version",
                format!(
                    "unsupported version {} (this build reads {XDS_SIZES_VERSION})",
                    self.version
                ),
            ));
        }
        if self.header.cores == 0 {
            return Err(invalid("header.cores", "must be >= 1"));
        }
        for (field, v) in [
            ("header.date", &self.header.date),
            ("header.machine", &self.header.machine),
            (
                "header.envoy_types_version",
                &self.header.envoy_types_version,
            ),
            ("header.command", &self.header.command),
        ] {
            if v.trim().is_empty() {
                return Err(invalid(field, "must not be empty"));
            }
        }
        let a = &self.assumptions;
        if a.ks.is_empty() {
            return Err(invalid("assumptions.ks", "must list at least one K"));
        }
        if a.ks[0] == 0 || a.ks.windows(2).any(|w| w[0] >= w[1]) {
            return Err(invalid(
                "assumptions.ks",
                "must be strictly increasing and >= 1",
            ));
        }
        if a.services_per_namespace == 0 {
            return Err(invalid(
                "assumptions.services_per_namespace",
                "must be >= 1",
            ));
        }
        if a.activator_pods == 0 {
            return Err(invalid("assumptions.activator_pods", "must be >= 1"));
        }
        check_positive("codec.encode_ns_per_byte", self.codec.encode_ns_per_byte)?;
        check_positive("codec.decode_ns_per_byte", self.codec.decode_ns_per_byte)?;
        check_positive(
            "codec.build_and_encode_ns_per_byte",
            self.codec.build_and_encode_ns_per_byte,
        )?;
        if !(self.codec.load_average_1m.is_finite() && self.codec.load_average_1m >= 0.0) {
            return Err(invalid("codec.load_average_1m", "must be finite and >= 0"));
        }
        if self.codec.per_type.is_empty() {
            return Err(invalid("codec.per_type", "must list the four xDS types"));
        }
        for (i, c) in self.codec.per_type.iter().enumerate() {
            check_positive(
                &format!("codec.per_type[{i}].encode_ns_per_byte"),
                c.encode_ns_per_byte,
            )?;
            check_positive(
                &format!("codec.per_type[{i}].decode_ns_per_byte"),
                c.decode_ns_per_byte,
            )?;
            if c.response_bytes == 0 {
                return Err(invalid(
                    format!("codec.per_type[{i}].response_bytes"),
                    "must be > 0",
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for (i, p) in self.per_resource.iter().enumerate() {
            if !seen.insert((p.view, p.policies)) {
                return Err(invalid(
                    format!("per_resource[{i}]"),
                    "duplicate view and policies",
                ));
            }
            for (name, fit) in [
                ("cluster", &p.cluster),
                ("load_assignment", &p.load_assignment),
                ("endpoint", &p.endpoint),
                ("listener", &p.listener),
                ("virtual_host", &p.virtual_host),
            ] {
                let field = format!("per_resource[{i}].{name}");
                if !fit.bytes.is_finite() || fit.bytes < 0.0 {
                    return Err(invalid(format!("{field}.bytes"), "must be finite and >= 0"));
                }
                if !fit.intercept_bytes.is_finite() {
                    return Err(invalid(
                        format!("{field}.intercept_bytes"),
                        "must be finite",
                    ));
                }
                if !(fit.r2.is_finite() && fit.r2 <= 1.0) {
                    return Err(invalid(format!("{field}.r2"), "must be finite and <= 1"));
                }
                if fit.points == 0 {
                    return Err(invalid(format!("{field}.points"), "must be >= 1"));
                }
            }
        }
        let mut seen = BTreeSet::new();
        for (i, s) in self.scopes.iter().enumerate() {
            if !seen.insert((s.scope, s.view, s.policies)) {
                return Err(invalid(
                    format!("scopes[{i}]"),
                    "duplicate scope, view and policies",
                ));
            }
            if s.services_cap == Some(0) {
                return Err(invalid(
                    format!("scopes[{i}].services_cap"),
                    "must be >= 1 or absent",
                ));
            }
            if (s.delivery == Delivery::WithSandbox) != (s.xds_round_trips == 0) {
                return Err(invalid(
                    format!("scopes[{i}].xds_round_trips"),
                    "must be 0 exactly when delivery is \"with-sandbox\"",
                ));
            }
        }
        if self.measured.is_empty() {
            return Err(invalid("measured", "must have at least one row"));
        }
        for (i, m) in self.measured.iter().enumerate() {
            let field = |f: &str| format!("measured[{i}].{f}");
            if !a.ks.contains(&m.k) {
                return Err(invalid(
                    field("k"),
                    format!("{} is not in assumptions.ks", m.k),
                ));
            }
            for t in XdsType::ALL {
                let name = format!("{:?}", t).to_lowercase();
                if m.resource_bytes(t) > m.response_bytes(t) {
                    return Err(invalid(
                        field(&format!("{name}_resource_bytes")),
                        format!("exceeds {name}_response_bytes"),
                    ));
                }
            }
            let sum: u64 = XdsType::ALL.iter().map(|&t| m.response_bytes(t)).sum();
            if m.sotw_bytes != sum {
                return Err(invalid(
                    field("sotw_bytes"),
                    format!(
                        "must equal the sum of the four responses ({sum}), got {}",
                        m.sotw_bytes
                    ),
                ));
            }
            if m.clusters == 0 || m.listeners == 0 {
                return Err(invalid(
                    field("clusters"),
                    "a proxy has at least one cluster and listener",
                ));
            }
            if (m.delivery == Delivery::WithSandbox) != (m.xds_round_trips == 0) {
                return Err(invalid(
                    field("xds_round_trips"),
                    "must be 0 exactly when delivery is \"with-sandbox\"",
                ));
            }
        }
        Ok(())
    }

    /// The measured row for one point, if present.
    pub fn row(&self, k: u64, scope: Scope, view: View, policies: PolicySet) -> Option<&Measured> {
        self.measured
            .iter()
            .find(|m| m.k == k && m.scope == scope && m.view == view && m.policies == policies)
    }
}

impl XdsSizes {
    /// The fitted per-resource sizes of one view and policy set.
    pub fn per_resource(&self, view: View, policies: PolicySet) -> Option<&PerResource> {
        self.per_resource
            .iter()
            .find(|p| p.view == view && p.policies == policies)
    }

    /// The resource counts of one scope, view and policy set.
    pub fn scope_counts(
        &self,
        scope: Scope,
        view: View,
        policies: PolicySet,
    ) -> Option<&ScopeCounts> {
        self.scopes
            .iter()
            .find(|s| s.scope == scope && s.view == view && s.policies == policies)
    }

    /// The four state-of-the-world response sizes (CDS, EDS, LDS, RDS order), bytes, of a proxy
    /// with `view` and `scope` in a cluster of `k` Knative services, `extra_endpoints` endpoints
    /// more (or fewer) than the file's `assumptions.revision_pods` per visible revision. `None`
    /// when the file has no row for the combination.
    pub fn sotw_bytes(
        &self,
        scope: Scope,
        view: View,
        policies: PolicySet,
        k: u64,
        extra_endpoints: i64,
    ) -> Option<[u64; 4]> {
        let s = self.scope_counts(scope, view, policies)?;
        let p = self.per_resource(view, policies)?;
        let v = s.visible_services(k);
        let n = |l: &Linear| (l.fixed + l.per_service * v) as f64;
        let fit = |f: &Fit, count: f64| (f.intercept_bytes + f.bytes * count).max(f.bytes * count);
        let endpoints = (n(&s.endpoints) + extra_endpoints as f64).max(0.0);
        let eds = (p.load_assignment.intercept_bytes
            + p.load_assignment.bytes * n(&s.load_assignments)
            + p.endpoint.bytes * endpoints)
            .max(p.load_assignment.bytes * n(&s.load_assignments));
        Some([
            fit(&p.cluster, n(&s.clusters)).round() as u64,
            eds.round() as u64,
            fit(&p.listener, n(&s.listeners)).round() as u64,
            fit(&p.virtual_host, n(&s.virtual_hosts)).round() as u64,
        ])
    }
}
