//! The global rate limit's Redis client: the two commands it needs (`INCRBY` + `EXPIRE`,
//! pipelined in one write, as Envoy's rate-limit service sends them; `AUTH` and `SELECT` when
//! a connection opens), over a small pool of plain connections that the request's own task
//! drives: it writes the pipeline and reads both replies itself, so a check costs one send, one
//! receive and no hand-off to a connection task (the `redis` crate's multiplexed connection,
//! used until 2026-11-26, passes every command through a channel to a driver task and back).
//!
//! URL: `redis://[[user]:password@]host[:port][/db]` (`%XX` escapes in user and password; IPv6
//! hosts in brackets; port 6379 and database 0 by default). A connection is taken by one check at
//! a time (at most [`MAX_CONNECTIONS`] at once; more checks wait for one within their timeout)
//! and goes back to the pool once both replies are read. A check that times out drops its
//! connection (its replies are still due), so the pool never holds one with a reply pending.
//! A pooled connection that turns out closed by the server (end of stream, reset or broken pipe
//! before any reply: Redis restarted, or its idle `timeout` struck) is not a failure of Redis:
//! the check is sent once more on a new connection and the other idle connections are closed.

use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// Connections open at once (checks beyond it wait for a free one).
pub const MAX_CONNECTIONS: usize = 32;
/// Longest reply line accepted (the replies here are integers, `+OK` or an error text).
const MAX_LINE: usize = 4096;

/// Where and how to connect, from a `redis://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// ACL user (`AUTH user password`); without it `AUTH password`.
    pub user: Option<String>,
    pub password: Option<String>,
    pub db: u32,
}

impl RedisTarget {
    /// Parses `redis://[[user]:password@]host[:port][/db]`; the error says what is wrong.
    pub fn parse(url: &str) -> Result<RedisTarget, String> {
        let rest = url
            .strip_prefix("redis://")
            .ok_or("must start with redis://")?;
        if rest.contains(['?', '#']) {
            return Err("query parameters and fragments are not supported".into());
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (user, pass) = u.split_once(':').unwrap_or((u, ""));
                let user = percent_decode(user)?;
                let pass = percent_decode(pass)?;
                (
                    (!user.is_empty()).then_some(user),
                    (!pass.is_empty()).then_some(pass),
                )
            }
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or("unclosed '[' in the host")?;
            match after {
                "" => (host, None),
                p => (host, Some(p.strip_prefix(':').ok_or("junk after ']'")?)),
            }
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err("no host".into());
        }
        let port = match port {
            None => 6379,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("port {p:?} is not in 1..=65535"))?,
        };
        let db = match path {
            "" => 0,
            d => d
                .parse::<u32>()
                .map_err(|_| format!("database {d:?} is not a number"))?,
        };
        Ok(RedisTarget {
            host: host.to_owned(),
            port,
            user,
            password,
            db,
        })
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a '%' escape needs two hex digits")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "escapes that are not UTF-8".into())
}

/// Appends one command as a RESP array of bulk strings.
fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    use crate::digits::push_decimal;
    out.push(b'*');
    push_decimal(out, args.len() as u64);
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.push(b'$');
        push_decimal(out, a.len() as u64);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// One reply of the kinds these commands get.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Int(i64),
    Status,
    Error(String),
}

/// Parses the reply line at the start of `buf`: `Some((reply, bytes used))`, `None` when the
/// line is not complete yet.
fn parse_reply(buf: &[u8]) -> io::Result<Option<(Reply, usize)>> {
    let Some(end) = memchr::memmem::find(buf, b"\r\n") else {
        if buf.len() > MAX_LINE {
            return Err(protocol("a reply line longer than 4 KiB"));
        }
        return Ok(None);
    };
    let (kind, text) = (buf.first().copied(), &buf[1.min(end)..end]);
    let reply = match kind {
        Some(b':') => std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.parse::<i64>().ok())
            .map(Reply::Int)
            .ok_or_else(|| protocol("an integer reply that is not a number"))?,
        Some(b'+') => Reply::Status,
        Some(b'-') => Reply::Error(String::from_utf8_lossy(text).into_owned()),
        _ => return Err(protocol("a reply of a type these commands never get")),
    };
    Ok(Some((reply, end + 2)))
}

fn protocol(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("redis protocol: {what}"),
    )
}

/// One connection, used by one check at a time.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(t: &RedisTarget) -> io::Result<Conn> {
        let stream = TcpStream::connect((t.host.as_str(), t.port)).await?;
        stream.set_nodelay(true)?;
        let mut conn = Conn {
            stream,
            buf: Vec::with_capacity(64),
        };
        let (mut cmd, mut n) = (Vec::new(), 0);
        if let Some(p) = &t.password {
            match &t.user {
                Some(u) => encode(&mut cmd, &[b"AUTH", u.as_bytes(), p.as_bytes()]),
                None => encode(&mut cmd, &[b"AUTH", p.as_bytes()]),
            }
            n += 1;
        }
        if t.db != 0 {
            encode(&mut cmd, &[b"SELECT", t.db.to_string().as_bytes()]);
            n += 1;
        }
        if n > 0 {
            let mut replies = [Reply::Status, Reply::Status];
            conn.round_trip(&cmd, &mut replies[..n]).await?;
            if let Some(Reply::Error(e)) =
                replies[..n].iter().find(|r| matches!(r, Reply::Error(_)))
            {
                return Err(io::Error::new(io::ErrorKind::PermissionDenied, e.clone()));
            }
        }
        Ok(conn)
    }

    /// Writes `cmd` (one write) and reads one reply per slot of `out`.
    async fn round_trip(&mut self, cmd: &[u8], out: &mut [Reply]) -> io::Result<()> {
        self.buf.clear();
        self.stream.write_all(cmd).await?;
        let mut pos = 0;
        for slot in out.iter_mut() {
            loop {
                if let Some((reply, used)) = parse_reply(&self.buf[pos..])? {
                    *slot = reply;
                    pos += used;
                    break;
                }
                if self.stream.read_buf(&mut self.buf).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
        }
        if pos != self.buf.len() {
            return Err(protocol("more replies than commands"));
        }
        Ok(())
    }
}

/// Whether `e`, on a connection that had received nothing of its replies yet, says that the
/// server had closed the connection before the command arrived (end of stream, reset, broken
/// pipe), rather than that it answered badly.
fn stale(e: &io::Error, conn: &Conn) -> bool {
    use io::ErrorKind::*;
    conn.buf.is_empty()
        && matches!(
            e.kind(),
            UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
        )
}

/// Why a check failed: the server's error reply (the connection is still good), or the
/// connection itself (refused, reset, closed, protocol error).
enum Failure {
    Server(String),
    Connection(io::Error),
}

struct Pool {
    idle: Vec<Conn>,
    /// No new connection is tried before this instant after a connection failure.
    failed_until: Option<Instant>,
}

/// A lazily (re)connecting Redis handle: after a connection failure (refused, reset, closed,
/// protocol error), the idle connections are closed and no connection is tried for `backoff`,
/// so an outage costs requests nothing but a lock. A reply slower than the timeout fails only
/// that request.
pub struct RedisHandle {
    target: Result<RedisTarget, String>,
    timeout: Duration,
    backoff: Duration,
    pool: Mutex<Pool>,
    permits: Semaphore,
}

impl std::fmt::Debug for RedisHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHandle")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl RedisHandle {
    /// Handle for `url` (an unparsable URL fails every check with the parse error; config
    /// validation refuses such URLs before a handle is made).
    pub fn new(url: &str, timeout: Duration) -> RedisHandle {
        RedisHandle {
            target: RedisTarget::parse(url),
            timeout,
            backoff: Duration::from_millis(500),
            pool: Mutex::new(Pool {
                idle: Vec::new(),
                failed_until: None,
            }),
            permits: Semaphore::new(MAX_CONNECTIONS),
        }
    }

    /// `INCRBY key 1; EXPIRE key ttl_s` pipelined; returns the new count.
    pub async fn incr(&self, key: &str, ttl_s: u64) -> Result<u64, String> {
        let target = self
            .target
            .as_ref()
            .map_err(|e| format!("bad redis url: {e}"))?;
        if let Ok(p) = self.pool.lock()
            && p.failed_until.is_some_and(|t| Instant::now() < t)
        {
            return Err("redis unavailable (backing off)".into());
        }
        let mut cmd = Vec::with_capacity(64 + 2 * key.len());
        encode(&mut cmd, &[b"INCRBY", key.as_bytes(), b"1"]);
        let ttl = &mut [0u8; 20];
        encode(
            &mut cmd,
            &[
                b"EXPIRE",
                key.as_bytes(),
                crate::digits::decimal(ttl_s, ttl),
            ],
        );
        match tokio::time::timeout(self.timeout, self.check(target, &cmd)).await {
            Ok(Ok(n)) => Ok(n),
            // The server answered: the connection is fine (it went back to the pool).
            Ok(Err(Failure::Server(e))) => Err(format!("redis: {e}")),
            Ok(Err(Failure::Connection(e))) => {
                self.mark_failed();
                Err(format!("redis: {e}"))
            }
            // A slow reply fails this request only; its connection was dropped with it.
            Err(_) => Err("redis timeout".into()),
        }
    }

    async fn check(&self, target: &RedisTarget, cmd: &[u8]) -> Result<u64, Failure> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Failure::Server("closed".into()))?;
        let idle = self.pool.lock().ok().and_then(|mut p| p.idle.pop());
        let reused = idle.is_some();
        let mut conn = match idle {
            Some(c) => c,
            None => Conn::open(target).await.map_err(Failure::Connection)?,
        };
        let mut replies = [Reply::Status, Reply::Status];
        if let Err(e) = conn.round_trip(cmd, &mut replies).await {
            // A pooled connection the server closed while it sat idle (Redis restarted, or
            // its `timeout` closed idle clients): the command never reached a live server, so
            // it is sent once more on a new connection, and the other idle connections, as
            // old as this one, are closed. Anything else is a connection failure.
            if !(reused && stale(&e, &conn)) {
                return Err(Failure::Connection(e));
            }
            if let Ok(mut p) = self.pool.lock() {
                p.idle.clear();
            }
            conn = Conn::open(target).await.map_err(Failure::Connection)?;
            conn.round_trip(cmd, &mut replies)
                .await
                .map_err(Failure::Connection)?;
        }
        if let Ok(mut p) = self.pool.lock() {
            p.idle.push(conn);
        }
        match &replies {
            [Reply::Int(n), Reply::Int(_)] if *n >= 0 => Ok(*n as u64),
            [Reply::Error(e), _] | [_, Reply::Error(e)] => Err(Failure::Server(e.clone())),
            _ => Err(Failure::Server("unexpected reply to INCRBY/EXPIRE".into())),
        }
    }

    fn mark_failed(&self) {
        if let Ok(mut p) = self.pool.lock() {
            p.idle.clear();
            p.failed_until = Some(Instant::now() + self.backoff);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_encoded_as_formatting_would() {
        let mut cmd = Vec::new();
        let key = "meshsim_rl:fn:10.0.0.1:123456789012";
        encode(&mut cmd, &[b"INCRBY", key.as_bytes(), b"1"]);
        encode(&mut cmd, &[b"EXPIRE", key.as_bytes(), b"60"]);
        let expect = format!(
            "*3\r\n$6\r\nINCRBY\r\n${}\r\n{key}\r\n$1\r\n1\r\n*3\r\n$6\r\nEXPIRE\r\n${}\r\n{key}\r\n$2\r\n60\r\n",
            key.len(),
            key.len()
        );
        assert_eq!(String::from_utf8(cmd).unwrap_or_default(), expect);
    }

    #[test]
    fn urls_parse_with_their_defaults_and_errors_say_why() {
        let t = RedisTarget::parse("redis://127.0.0.1:6379/").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.db), ("127.0.0.1", 6379, 0));
        assert_eq!((t.user, t.password), (None, None));
        let t = RedisTarget::parse("redis://redis.local").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.db), ("redis.local", 6379, 0));
        let t = RedisTarget::parse("redis://:s%40cret@[::1]:7000/3").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.db), ("::1", 7000, 3));
        assert_eq!((t.user, t.password.as_deref()), (None, Some("s@cret")));
        let t = RedisTarget::parse("redis://rl:pw@h/").unwrap();
        assert_eq!(
            (t.user.as_deref(), t.password.as_deref()),
            (Some("rl"), Some("pw"))
        );
        for (bad, why) in [
            ("http://h", "redis://"),
            ("redis://", "no host"),
            ("redis://h:0", "port"),
            ("redis://h:99999", "port"),
            ("redis://h/x", "database"),
            ("redis://h?protocol=resp3", "query"),
            ("redis://[::1", "unclosed"),
            ("redis://:%4@h", "hex"),
        ] {
            let e = RedisTarget::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn replies_parse_whole_lines_only() {
        assert_eq!(
            parse_reply(b":12\r\n:1").unwrap(),
            Some((Reply::Int(12), 5))
        );
        assert_eq!(parse_reply(b":12\r").unwrap(), None);
        assert_eq!(parse_reply(b"+OK\r\n").unwrap(), Some((Reply::Status, 5)));
        assert_eq!(
            parse_reply(b"-WRONGTYPE no\r\n").unwrap(),
            Some((Reply::Error("WRONGTYPE no".into()), 15))
        );
        for bad in [&b":x\r\n"[..], b"$3\r\nabc\r\n", b"*1\r\n", b"\r\n"] {
            assert!(parse_reply(bad).is_err(), "{bad:?}");
        }
        assert!(parse_reply(&[b'+'; MAX_LINE + 1]).is_err());
        let mut cmd = Vec::new();
        encode(&mut cmd, &[b"INCRBY", b"k", b"1"]);
        assert_eq!(cmd, b"*3\r\n$6\r\nINCRBY\r\n$1\r\nk\r\n$1\r\n1\r\n");
    }

    /// A scripted server on loopback: answers each accepted connection's first read with the
    /// next reply of `replies` (or closes it on an empty one).
    async fn fake_server(replies: Vec<&'static [u8]>) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            for reply in replies {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                if !reply.is_empty() {
                    let _ = s.write_all(reply).await;
                    let _ = s.read(&mut buf).await;
                }
            }
        });
        format!("redis://{addr}/")
    }

    #[tokio::test]
    async fn server_errors_fail_the_check_and_connection_errors_back_off() {
        // An error reply: the check fails, the connection stays usable, no back-off.
        let url = fake_server(vec![b"-WRONGTYPE not a counter\r\n:1\r\n"]).await;
        let h = RedisHandle::new(&url, Duration::from_secs(2));
        let e = h.incr("k", 1).await.unwrap_err();
        assert!(e.contains("WRONGTYPE"), "{e}");
        assert!(h.pool.lock().unwrap().failed_until.is_none());
        assert_eq!(h.pool.lock().unwrap().idle.len(), 1);
        // Garbage and a closed connection: protocol / EOF errors start the back-off.
        for reply in [&b"$3\r\nabc\r\n"[..], b""] {
            let h = RedisHandle::new(&fake_server(vec![reply]).await, Duration::from_secs(2));
            assert!(h.incr("k", 1).await.is_err());
            let e = h.incr("k", 1).await.unwrap_err();
            assert!(e.contains("backing off"), "{e}");
        }
        // A server that never answers: the check times out, without a back-off.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}/", l.local_addr().unwrap());
        let h = RedisHandle::new(&url, Duration::from_millis(50));
        assert_eq!(h.incr("k", 1).await.unwrap_err(), "redis timeout");
        assert!(h.pool.lock().unwrap().failed_until.is_none());
        assert!(
            h.pool.lock().unwrap().idle.is_empty(),
            "a connection with replies due is not kept"
        );
        drop(l);
    }

    #[tokio::test]
    async fn a_pooled_connection_the_server_closed_is_replaced_without_a_back_off() {
        // The server answers the first check, then closes that connection when the second
        // check arrives on it (as after a restart, or Redis's idle `timeout`), and answers it
        // on a new connection.
        let url = fake_server(vec![b":1\r\n:1\r\n", b":2\r\n:1\r\n"]).await;
        let h = RedisHandle::new(&url, Duration::from_secs(2));
        assert_eq!(h.incr("k", 1).await, Ok(1));
        assert_eq!(h.pool.lock().unwrap().idle.len(), 1);
        assert_eq!(h.incr("k", 1).await, Ok(2));
        assert!(h.pool.lock().unwrap().failed_until.is_none());
        // A fresh connection that fails the same way is a connection failure: back-off.
        let h = RedisHandle::new(&fake_server(vec![b""]).await, Duration::from_secs(2));
        assert!(h.incr("k", 1).await.is_err());
        assert!(h.pool.lock().unwrap().failed_until.is_some());
    }

    #[tokio::test]
    async fn auth_and_select_are_sent_when_a_connection_opens() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let (mut seen, mut buf) = (Vec::new(), [0u8; 512]);
            for reply in [&b"+OK\r\n+OK\r\n"[..], b":7\r\n:1\r\n"] {
                let n = s.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
                s.write_all(reply).await.unwrap();
            }
            seen
        });
        let h = RedisHandle::new(
            &format!("redis://user:p%40ss@{addr}/2"),
            Duration::from_secs(2),
        );
        assert_eq!(h.incr("k", 60).await, Ok(7));
        let seen = String::from_utf8(server.await.unwrap()).unwrap();
        let expected = "*3\r\n$4\r\nAUTH\r\n$4\r\nuser\r\n$4\r\np@ss\r\n\
                        *2\r\n$6\r\nSELECT\r\n$1\r\n2\r\n\
                        *3\r\n$6\r\nINCRBY\r\n$1\r\nk\r\n$1\r\n1\r\n\
                        *3\r\n$6\r\nEXPIRE\r\n$1\r\nk\r\n$2\r\n60\r\n";
        assert_eq!(seen, expected);
    }
}
