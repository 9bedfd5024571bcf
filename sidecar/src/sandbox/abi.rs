//! The host <-> guest ABI of the per-request policy sandbox.
//!
//! A guest module exports `memory`, an immutable i32 global `input_base` and
//! `run(input_ptr: i32, input_len: i32) -> i32` returning the address of its output record. It
//! may import, from module `host`: `rand() -> i64` (the tracing id generator), `rl_local_take()
//! -> i32` (the local token bucket: 1 = token taken) and `cache_incr(key_ptr, key_len, by: i64)
//! -> i64` (the node-local shared counter cache; `by = 0` reads). Nothing else is reachable
//! and nothing else survives the call: every request gets a fresh instance.
//!
//! All integers are little-endian, all pointers are absolute guest addresses, strings are
//! `(ptr: u32, len: u32)` pairs.
//!
//! **Input** (written by the host at `input_base`):
//!
//! | offset | field |
//! |---|---|
//! | 0 | local port |
//! | 4 | protocol: 1 = HTTP/1.x, 2 = HTTP/2, 0 = other |
//! | 8, 12, 16 | has verified peer (0/1), peer SPIFFE id |
//! | 20, 24 | remote IP (text) |
//! | 28, 32 | method |
//! | 36, 40 | path (no query) |
//! | 44 | JWT result: 0 = policy off, 1 = verified, 2 = refused |
//! | 48, 52 | JWT refusal reason |
//! | 56, 60 | claim header count, array of `(name, value)` (16 bytes each) |
//! | 64, 68 | header count, array of `(name, value, is_text)` (20 bytes each): only the headers the configured policies read, every value in arrival order, lower-case names |
//!
//! **Config** (the rule table, built by [`ConfigBlob`], written by the host at [`CONFIG_BASE`]
//! of every chain instance before the call; the input follows it, 8-aligned):
//!
//! | offset | field |
//! |---|---|
//! | 0 | flags: 1 mtls, 2 mtls strict, 4 ports, 8 jwt, 16 authz, 32 rate limit, 64 local bucket, 128 tracing |
//! | 4, 8 | own SPIFFE id |
//! | 12, 16 | allowed port count, array of u32 |
//! | 20 | allowed protocol mask (1 = HTTP/1.x, 2 = HTTP/2) |
//! | 24 | rate-limit key: 0 global, 1 source, 2 header |
//! | 28, 32 | rate-limit key header name |
//! | 40 | tracing sampling threshold (u64) |
//! | 48 | tracing always samples (threshold = u64::MAX) |
//! | 52, 56 | authz rule count, array of rules (36 bytes: action 0 allow / 1 deny, then count + array for sources, methods, paths, each an array of strings, and headers, an array of `(name, value count, value array)`, 16 bytes each) |
//!
//! **Output** (80 bytes at the returned address):
//!
//! | offset | field |
//! |---|---|
//! | 0 | status: 0 = allow, else the HTTP status of the local reply |
//! | 4 | denying layer: 1 mtls, 2 ports, 3 jwt, 4 authz, 5 local rate limit |
//! | 8, 12 | denial message |
//! | 16, 20 | header edit count, array of `(op, name, value)` (20 bytes each; op 1 = set, 2 = remove) |
//! | 24, 28, 32 | global rate limit needed (0/1), key part |
//! | 36, 40 | trace context present (0/1), sampled (0/1) |
//! | 48, 56, 64, 72 | trace id high, low, span id, parent span id (u64) |

use http::{HeaderName, HeaderValue};

use crate::policy::tracing::TraceCtx;

/// Where the rule table is placed in guest memory.
pub const CONFIG_BASE: u32 = 1024;
/// Size of the output record.
pub const OUTPUT_LEN: usize = 80;
/// At most this many header edits are accepted from a guest.
pub const MAX_EDITS: usize = 1024;
/// At most this many bytes of denial message are used.
pub const MAX_MESSAGE: usize = 1024;

/// A little-endian blob with absolute addresses starting at `base`.
#[derive(Debug)]
pub struct Blob {
    base: u32,
    bytes: Vec<u8>,
}

impl Blob {
    /// Empty blob placed at `base`.
    pub fn new(base: u32) -> Blob {
        Blob {
            base,
            bytes: Vec::with_capacity(512),
        }
    }

    /// Reserve `n` zero bytes, 8-aligned; returns their address.
    pub fn alloc(&mut self, n: usize) -> u32 {
        let pad = (8 - self.bytes.len() % 8) % 8;
        self.bytes.resize(self.bytes.len() + pad, 0);
        let at = self.bytes.len();
        self.bytes.resize(at + n, 0);
        self.base.saturating_add(at as u32)
    }

    /// Write a u32 at an address inside the blob (ignored when out of range).
    pub fn put_u32(&mut self, addr: u32, v: u32) {
        let at = addr.wrapping_sub(self.base) as usize;
        if let Some(dst) = self.bytes.get_mut(at..at + 4) {
            dst.copy_from_slice(&v.to_le_bytes());
        }
    }

    /// Write a u64 at an address inside the blob.
    pub fn put_u64(&mut self, addr: u32, v: u64) {
        let at = addr.wrapping_sub(self.base) as usize;
        if let Some(dst) = self.bytes.get_mut(at..at + 8) {
            dst.copy_from_slice(&v.to_le_bytes());
        }
    }

    /// Append bytes (unaligned); returns `(addr, len)`.
    pub fn bytes(&mut self, b: &[u8]) -> (u32, u32) {
        let at = self.base.saturating_add(self.bytes.len() as u32);
        self.bytes.extend_from_slice(b);
        (at, b.len() as u32)
    }

    /// Write a string pair at `addr`.
    pub fn put_str(&mut self, addr: u32, s: (u32, u32)) {
        self.put_u32(addr, s.0);
        self.put_u32(addr + 4, s.1);
    }

    /// An array of string pairs; returns its address.
    pub fn str_array<'a>(&mut self, items: impl IntoIterator<Item = &'a [u8]>) -> (u32, u32) {
        let pairs: Vec<(u32, u32)> = items.into_iter().map(|s| self.bytes(s)).collect();
        let arr = self.alloc(pairs.len() * 8);
        for (i, p) in pairs.iter().enumerate() {
            self.put_str(arr + 8 * i as u32, *p);
        }
        (pairs.len() as u32, arr)
    }

    /// The encoded bytes.
    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }

    /// Encoded length so far.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Rate-limit key kinds as the guest knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    /// One counter.
    Global,
    /// Per peer identity (or remote IP).
    Source,
    /// Per value of a header (lower-case name).
    Header(String),
}

/// One authz rule in guest form.
#[derive(Debug, Clone)]
pub struct RuleSpec {
    /// Deny (true) or allow.
    pub deny: bool,
    /// Source patterns.
    pub sources: Vec<String>,
    /// Methods.
    pub methods: Vec<String>,
    /// Path patterns.
    pub paths: Vec<String>,
    /// Lower-case header name -> value patterns.
    pub headers: Vec<(String, Vec<String>)>,
}

/// The chain's configuration, in the form the guest reads.
#[derive(Debug, Clone, Default)]
pub struct ConfigBlob {
    /// mTLS on: (strict, own SPIFFE id).
    pub mtls: Option<(bool, String)>,
    /// Ports on: (allowed ports, protocol mask).
    pub ports: Option<(Vec<u16>, u32)>,
    /// JWT on.
    pub jwt: bool,
    /// Authz rules (None = policy off).
    pub authz: Option<Vec<RuleSpec>>,
    /// Rate limit on: (key, local bucket present).
    pub rate_limit: Option<(KeyKind, bool)>,
    /// Tracing on: sampling threshold (u64::MAX = always).
    pub tracing: Option<u64>,
}

impl ConfigBlob {
    /// Serialise at [`CONFIG_BASE`].
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Blob::new(CONFIG_BASE);
        let head = b.alloc(64);
        let mut flags = 0u32;
        if let Some((strict, own)) = &self.mtls {
            flags |= 1 | if *strict { 2 } else { 0 };
            let s = b.bytes(own.as_bytes());
            b.put_str(head + 4, s);
        }
        if let Some((ports, mask)) = &self.ports {
            flags |= 4;
            let arr = b.alloc(ports.len() * 4);
            for (i, p) in ports.iter().enumerate() {
                b.put_u32(arr + 4 * i as u32, u32::from(*p));
            }
            b.put_u32(head + 12, ports.len() as u32);
            b.put_u32(head + 16, arr);
            b.put_u32(head + 20, *mask);
        }
        if self.jwt {
            flags |= 8;
        }
        if let Some((key, local)) = &self.rate_limit {
            flags |= 32 | if *local { 64 } else { 0 };
            match key {
                KeyKind::Global => b.put_u32(head + 24, 0),
                KeyKind::Source => b.put_u32(head + 24, 1),
                KeyKind::Header(name) => {
                    b.put_u32(head + 24, 2);
                    let s = b.bytes(name.as_bytes());
                    b.put_str(head + 28, s);
                }
            }
        }
        if let Some(threshold) = self.tracing {
            flags |= 128;
            b.put_u64(head + 40, threshold);
            b.put_u32(head + 48, u32::from(threshold == u64::MAX));
        }
        if let Some(rules) = &self.authz {
            flags |= 16;
            let encoded: Vec<[u32; 9]> = rules
                .iter()
                .map(|r| {
                    let src = b.str_array(r.sources.iter().map(|s| s.as_bytes()));
                    let meth = b.str_array(r.methods.iter().map(|s| s.as_bytes()));
                    let path = b.str_array(r.paths.iter().map(|s| s.as_bytes()));
                    let hdrs: Vec<((u32, u32), (u32, u32))> = r
                        .headers
                        .iter()
                        .map(|(name, vals)| {
                            let n = b.bytes(name.as_bytes());
                            (n, b.str_array(vals.iter().map(|s| s.as_bytes())))
                        })
                        .collect();
                    let harr = b.alloc(hdrs.len() * 16);
                    for (i, (n, (cnt, arr))) in hdrs.iter().enumerate() {
                        let at = harr + 16 * i as u32;
                        b.put_str(at, *n);
                        b.put_u32(at + 8, *cnt);
                        b.put_u32(at + 12, *arr);
                    }
                    [
                        u32::from(r.deny),
                        src.0,
                        src.1,
                        meth.0,
                        meth.1,
                        path.0,
                        path.1,
                        hdrs.len() as u32,
                        harr,
                    ]
                })
                .collect();
            let arr = b.alloc(encoded.len() * 36);
            for (i, r) in encoded.iter().enumerate() {
                for (j, v) in r.iter().enumerate() {
                    b.put_u32(arr + 36 * i as u32 + 4 * j as u32, *v);
                }
            }
            b.put_u32(head + 52, encoded.len() as u32);
            b.put_u32(head + 56, arr);
        }
        b.put_u32(head, flags);
        b.finish()
    }
}

/// The JWT layer's (native) result, as guest input.
#[derive(Debug, Clone, Copy)]
pub enum JwtInput<'a> {
    /// Policy off.
    Off,
    /// Verified; the claim headers to forward.
    Verified(&'a [(HeaderName, HeaderValue)]),
    /// Refused, with the reason.
    Refused(&'a str),
}

/// What the guest sees of one request.
#[derive(Debug, Clone)]
pub struct RequestView<'a> {
    /// Local port of the connection.
    pub local_port: u16,
    /// 1 = HTTP/1.x, 2 = HTTP/2, 0 = other.
    pub protocol: u32,
    /// Verified peer identity.
    pub peer: Option<&'a str>,
    /// Remote IP as text.
    pub remote_ip: &'a str,
    /// Method.
    pub method: &'a str,
    /// Path without query.
    pub path: &'a str,
    /// JWT result.
    pub jwt: JwtInput<'a>,
    /// The headers that matter: (lower-case name, value bytes, value is text).
    pub headers: Vec<(&'a str, &'a [u8], bool)>,
}

impl RequestView<'_> {
    /// Encode for placement at `base`.
    pub fn encode(&self, base: u32) -> Vec<u8> {
        let mut b = Blob::new(base);
        let head = b.alloc(72);
        b.put_u32(head, u32::from(self.local_port));
        b.put_u32(head + 4, self.protocol);
        if let Some(peer) = self.peer {
            b.put_u32(head + 8, 1);
            let s = b.bytes(peer.as_bytes());
            b.put_str(head + 12, s);
        }
        let s = b.bytes(self.remote_ip.as_bytes());
        b.put_str(head + 20, s);
        let s = b.bytes(self.method.as_bytes());
        b.put_str(head + 28, s);
        let s = b.bytes(self.path.as_bytes());
        b.put_str(head + 36, s);
        match self.jwt {
            JwtInput::Off => {}
            JwtInput::Verified(claims) => {
                b.put_u32(head + 44, 1);
                let pairs: Vec<_> = claims
                    .iter()
                    .map(|(n, v)| (b.bytes(n.as_str().as_bytes()), b.bytes(v.as_bytes())))
                    .collect();
                let arr = b.alloc(pairs.len() * 16);
                for (i, (n, v)) in pairs.iter().enumerate() {
                    b.put_str(arr + 16 * i as u32, *n);
                    b.put_str(arr + 16 * i as u32 + 8, *v);
                }
                b.put_u32(head + 56, pairs.len() as u32);
                b.put_u32(head + 60, arr);
            }
            JwtInput::Refused(msg) => {
                b.put_u32(head + 44, 2);
                let s = b.bytes(msg.as_bytes());
                b.put_str(head + 48, s);
            }
        }
        let entries: Vec<_> = self
            .headers
            .iter()
            .map(|(n, v, text)| (b.bytes(n.as_bytes()), b.bytes(v), *text))
            .collect();
        let arr = b.alloc(entries.len() * 20);
        for (i, (n, v, text)) in entries.iter().enumerate() {
            let at = arr + 20 * i as u32;
            b.put_str(at, *n);
            b.put_str(at + 8, *v);
            b.put_u32(at + 16, u32::from(*text));
        }
        b.put_u32(head + 64, entries.len() as u32);
        b.put_u32(head + 68, arr);
        b.finish()
    }
}

/// One header edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Insert (replacing every existing value).
    Set(HeaderName, HeaderValue),
    /// Remove every value.
    Remove(HeaderName),
}

/// A denial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// HTTP status (100..=599).
    pub status: u16,
    /// Layer id (see the output table).
    pub layer: u32,
    /// Message.
    pub message: String,
}

/// The guest's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// `Some` when the request is answered locally.
    pub deny: Option<Denial>,
    /// Header edits to apply when allowed, in order.
    pub edits: Vec<Edit>,
    /// The global rate-limit key part, when the host must consult the global counter.
    pub rate_limit_key: Option<String>,
    /// This hop's trace context.
    pub trace: Option<TraceCtx>,
}

/// A malformed output record (a guest bug): the request is denied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed sandbox output: {0}")]
pub struct BadOutput(pub &'static str);

fn u32_at(mem: &[u8], at: usize) -> Result<u32, BadOutput> {
    mem.get(at..at.wrapping_add(4))
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(BadOutput("pointer out of bounds"))
}

fn u64_at(mem: &[u8], at: usize) -> Result<u64, BadOutput> {
    mem.get(at..at.wrapping_add(8))
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or(BadOutput("pointer out of bounds"))
}

fn slice_at(mem: &[u8], ptr: u32, len: u32) -> Result<&[u8], BadOutput> {
    let (p, l) = (ptr as usize, len as usize);
    mem.get(p..p.checked_add(l).ok_or(BadOutput("length overflow"))?)
        .ok_or(BadOutput("string out of bounds"))
}

impl Decision {
    /// Decode the output record at `out` in guest memory `mem`. Every pointer is checked.
    pub fn decode(mem: &[u8], out: u32) -> Result<Decision, BadOutput> {
        let o = out as usize;
        if mem.len() < o.saturating_add(OUTPUT_LEN) {
            return Err(BadOutput("output record out of bounds"));
        }
        let status = u32_at(mem, o)?;
        let deny = if status == 0 {
            None
        } else {
            let status = u16::try_from(status)
                .ok()
                .filter(|s| (100..=599).contains(s))
                .ok_or(BadOutput("invalid status"))?;
            let msg = slice_at(mem, u32_at(mem, o + 8)?, u32_at(mem, o + 12)?)?;
            let msg = &msg[..msg.len().min(MAX_MESSAGE)];
            Some(Denial {
                status,
                layer: u32_at(mem, o + 4)?,
                message: String::from_utf8_lossy(msg).into_owned(),
            })
        };
        let mut edits = Vec::new();
        let mut rate_limit_key = None;
        let mut trace = None;
        if deny.is_none() {
            let n = u32_at(mem, o + 16)? as usize;
            if n > MAX_EDITS {
                return Err(BadOutput("too many edits"));
            }
            let arr = u32_at(mem, o + 20)? as usize;
            for i in 0..n {
                let e = arr.saturating_add(20 * i);
                let op = u32_at(mem, e)?;
                let name = slice_at(mem, u32_at(mem, e + 4)?, u32_at(mem, e + 8)?)?;
                let name =
                    HeaderName::from_bytes(name).map_err(|_| BadOutput("invalid header name"))?;
                match op {
                    1 => {
                        let v = slice_at(mem, u32_at(mem, e + 12)?, u32_at(mem, e + 16)?)?;
                        // Like the shared layers: a value that is not a valid header value is
                        // not set (never the case for ids and verified claims in practice).
                        if let Ok(v) = HeaderValue::from_bytes(v) {
                            edits.push(Edit::Set(name, v));
                        }
                    }
                    2 => edits.push(Edit::Remove(name)),
                    _ => return Err(BadOutput("unknown edit op")),
                }
            }
            if u32_at(mem, o + 24)? == 1 {
                let k = slice_at(mem, u32_at(mem, o + 28)?, u32_at(mem, o + 32)?)?;
                rate_limit_key = Some(String::from_utf8_lossy(k).into_owned());
            }
            if u32_at(mem, o + 36)? == 1 {
                trace = Some(TraceCtx {
                    trace_id: (u128::from(u64_at(mem, o + 48)?) << 64)
                        | u128::from(u64_at(mem, o + 56)?),
                    span_id: u64_at(mem, o + 64)?,
                    parent_id: u64_at(mem, o + 72)?,
                    sampled: u32_at(mem, o + 40)? == 1,
                });
            }
        }
        Ok(Decision {
            deny,
            edits,
            rate_limit_key,
            trace,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_rejects_out_of_bounds_pointers() {
        let mut mem = vec![0u8; 128];
        mem[16..20].copy_from_slice(&1u32.to_le_bytes());
        mem[20..24].copy_from_slice(&10_000u32.to_le_bytes());
        assert!(Decision::decode(&mem, 0).is_err());
        assert!(Decision::decode(&mem, 100).is_err());
        assert!(Decision::decode(&mem, u32::MAX).is_err());
        let mut mem = vec![0u8; 128];
        mem[0..4].copy_from_slice(&403u32.to_le_bytes());
        mem[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        mem[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Decision::decode(&mem, 0).is_err());
    }

    #[test]
    fn empty_output_allows() {
        let d = Decision::decode(&[0u8; 80], 0).expect("valid");
        assert!(d.deny.is_none() && d.edits.is_empty() && d.trace.is_none());
    }
}
