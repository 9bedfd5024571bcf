//! A passive HTTP/1 framing scanner over the client byte stream.
//!
//! hyper resolves a request carrying both `Content-Length` and `Transfer-Encoding` by
//! preferring chunked and dropping `Content-Length` (RFC 9112 §6.3 allows that), so the
//! service never sees the conflict. A proxy should refuse such requests outright (they are
//! the request-smuggling vector), so this wrapper watches the bytes hyper reads, follows
//! message framing (heads, `Content-Length` bodies, chunked bodies) and raises a
//! per-connection flag when a head has both headers. The front layer answers 400 and closes.
//! The scanner never alters bytes; on anything it does not understand (HTTP/2 preface,
//! upgrades, oversized heads that hyper will refuse anyway) it stops watching.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body(u64),
    ChunkSize { value: u64, digits: u32, ext: bool },
    ChunkData(u64),
    ChunkDataEnd,
    Trailer { line_len: usize },
    Off,
}

/// The scanner state for one connection.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    head: Vec<u8>,
    max_head: usize,
    conflict: Arc<AtomicBool>,
}

impl Scanner {
    /// New scanner raising `conflict`.
    pub fn new(max_head: usize, conflict: Arc<AtomicBool>) -> Scanner {
        Scanner {
            state: State::Head,
            head: Vec::new(),
            max_head,
            conflict,
        }
    }

    /// Stop scanning (e.g. HTTP/2 negotiated by ALPN).
    pub fn disable(&mut self) {
        self.state = State::Off;
        self.head = Vec::new();
    }

    /// Feed bytes read from the client.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.state {
                State::Off => return,
                State::Head if self.head.is_empty() => {
                    // Fast path (a whole head in one read, the common case): parse it in place,
                    // no copy and no allocation.
                    match find(data, b"\r\n\r\n") {
                        Some(pos) => {
                            let end = pos + 4;
                            self.state = self.on_head(&data[..end]);
                            data = &data[end..];
                        }
                        None => {
                            if data.len() > self.max_head {
                                self.disable();
                                return;
                            }
                            self.head.extend_from_slice(data);
                            return;
                        }
                    }
                }
                State::Head => {
                    let old = self.head.len();
                    self.head.extend_from_slice(data);
                    let from = old.saturating_sub(3);
                    match find(&self.head[from..], b"\r\n\r\n") {
                        Some(pos) => {
                            let end = from + pos + 4;
                            let consumed = end - old;
                            let head = std::mem::take(&mut self.head);
                            self.state = self.on_head(&head[..end]);
                            // Keep the buffer's capacity for the next split head.
                            self.head = head;
                            self.head.clear();
                            data = &data[consumed..];
                        }
                        None => {
                            if self.head.len() > self.max_head {
                                self.disable();
                            }
                            return;
                        }
                    }
                }
                State::Body(n) => {
                    let take = (data.len() as u64).min(n);
                    data = &data[take as usize..];
                    self.state = if take == n {
                        State::Head
                    } else {
                        State::Body(n - take)
                    };
                }
                State::ChunkData(n) => {
                    let take = (data.len() as u64).min(n);
                    data = &data[take as usize..];
                    self.state = if take == n {
                        State::ChunkDataEnd
                    } else {
                        State::ChunkData(n - take)
                    };
                }
                State::ChunkDataEnd => {
                    let b = data[0];
                    data = &data[1..];
                    if b == b'\n' {
                        self.state = State::ChunkSize {
                            value: 0,
                            digits: 0,
                            ext: false,
                        };
                    }
                }
                State::ChunkSize { value, digits, ext } => {
                    let b = data[0];
                    data = &data[1..];
                    self.state = match b {
                        b'\n' if digits == 0 => State::Off,
                        b'\n' if value == 0 => State::Trailer { line_len: 0 },
                        b'\n' => State::ChunkData(value),
                        b'\r' => State::ChunkSize { value, digits, ext },
                        _ if ext => State::ChunkSize { value, digits, ext },
                        b';' | b' ' | b'\t' => State::ChunkSize {
                            value,
                            digits,
                            ext: true,
                        },
                        _ => match (b as char).to_digit(16) {
                            Some(d) if digits < 15 => State::ChunkSize {
                                value: value * 16 + u64::from(d),
                                digits: digits + 1,
                                ext,
                            },
                            _ => State::Off,
                        },
                    };
                }
                State::Trailer { line_len } => {
                    let b = data[0];
                    data = &data[1..];
                    self.state = match b {
                        b'\n' if line_len == 0 => State::Head,
                        b'\n' => State::Trailer { line_len: 0 },
                        b'\r' => State::Trailer { line_len },
                        _ => State::Trailer {
                            line_len: line_len + 1,
                        },
                    };
                }
            }
        }
    }

    fn on_head(&self, head: &[u8]) -> State {
        // Byte-level line splitting with memchr (header names are ASCII; values are compared
        // as bytes): no UTF-8 conversion, and only lines that can be one of the three headers
        // looked at (by their first non-blank byte) are split at the colon.
        let mut lines = memchr::memchr_iter(b'\n', head)
            .chain(std::iter::once(head.len()))
            .scan(0, |start, end| {
                let line = &head[*start..end];
                *start = end + 1;
                Some(line.strip_suffix(b"\r").unwrap_or(line))
            })
            .skip_while(|l| l.is_empty());
        let Some(request_line) = lines.next() else {
            return State::Head;
        };
        if request_line.starts_with(b"PRI ") || request_line.starts_with(b"CONNECT ") {
            return State::Off;
        }
        let (mut cl, mut te, mut chunked, mut upgrade) = (None::<u64>, false, false, false);
        for line in lines {
            if !matches!(
                line.trim_ascii_start().first(),
                Some(b'c' | b'C' | b't' | b'T' | b'u' | b'U')
            ) {
                continue;
            }
            let Some(colon) = memchr::memchr(b':', line) else {
                continue;
            };
            let name = line[..colon].trim_ascii();
            let value = line[colon + 1..].trim_ascii();
            if name.eq_ignore_ascii_case(b"content-length") {
                cl = std::str::from_utf8(value)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .or(Some(u64::MAX));
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                te = true;
                chunked = value
                    .rsplit(|b| *b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if name.eq_ignore_ascii_case(b"upgrade") {
                upgrade = true;
            }
        }
        if te && cl.is_some() {
            self.conflict.store(true, Ordering::Relaxed);
            return State::Off;
        }
        if upgrade {
            return State::Off;
        }
        match (te, chunked, cl) {
            (true, true, _) => State::ChunkSize {
                value: 0,
                digits: 0,
                ext: false,
            },
            (true, false, _) => State::Off,
            (false, _, Some(0)) | (false, _, None) => State::Head,
            (false, _, Some(u64::MAX)) => State::Off,
            (false, _, Some(n)) => State::Body(n),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// An IO wrapper feeding everything read through a [`Scanner`].
#[derive(Debug)]
pub struct Scanned<T> {
    inner: T,
    scanner: Scanner,
}

impl<T> Scanned<T> {
    /// Wrap `inner`.
    pub fn new(inner: T, scanner: Scanner) -> Scanned<T> {
        Scanned { inner, scanner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Scanned<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            this.scanner.feed(&buf.filled()[before..]);
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Scanned<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> bool {
        let flag = Arc::new(AtomicBool::new(false));
        let mut s = Scanner::new(16 * 1024, flag.clone());
        for c in chunks {
            s.feed(c);
        }
        flag.load(Ordering::Relaxed)
    }

    #[test]
    fn conflict_is_flagged_in_either_order() {
        assert!(scan(&[b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"]));
        assert!(scan(&[
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n0\r\n\r\n"
        ]));
    }

    #[test]
    fn conflict_hidden_after_bodies_is_found() {
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: v\r\n\r\n";
        let cl = b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n\r\n\r\nabc\r\n\r\n";
        let bad = b"GET / HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut all = Vec::new();
        all.extend_from_slice(chunked);
        all.extend_from_slice(cl);
        all.extend_from_slice(bad);
        assert!(scan(&[&all]));
        // Byte by byte as well.
        let bytes: Vec<&[u8]> = all.chunks(1).collect();
        assert!(scan(&bytes));
        // Without the last request: no conflict (the body of the CL request looks like a head).
        assert!(!scan(&[chunked, cl]));
    }

    #[test]
    fn clean_traffic_is_not_flagged() {
        assert!(!scan(&[
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\n\r\n"
        ]));
        assert!(!scan(&[
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nContent-Length: 1\r\nTransfer-Encoding: x\r\n\r\n"
        ]));
    }

    #[test]
    fn heads_split_across_reads_use_the_slow_path_the_same_way() {
        let clean = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let bad = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        for split in 1..bad.len() {
            let (a, b) = bad.split_at(split);
            assert!(scan(&[clean, a, b]), "split at {split}");
            // A clean head split the same way, then the conflict in one read (the buffer is
            // emptied between heads, so the fast path takes over again).
            let (c, d) = clean.split_at(split.min(clean.len() - 1));
            assert!(scan(&[c, d, bad]), "clean split at {split}");
        }
        // Blanks before a name (obs-fold style) do not hide it from the first-byte filter.
        assert!(scan(&[
            b"POST / HTTP/1.1\r\nAuthorization: Bearer x\r\n\tContent-Length: 1\r\n Transfer-Encoding: chunked\r\n\r\n"
        ]));
        // Non-UTF-8 bytes in a value do not hide a conflict.
        assert!(scan(&[
            b"POST / HTTP/1.1\r\nX: \xff\xfe\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
    }
}
