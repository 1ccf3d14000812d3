//! The HTTP/1.1 server side of the gateway: one client connection, its request heads and
//! bodies read, each request run through the phases, and each answer written back.
//!
//! Written by hand on `httparse` (as the client side in `upstream` is) rather than on
//! hyper's server, because the gateway never needs a request as a header map, and hyper's
//! server built one for every request and encoded one for every response: the request head is
//! read into a [`RequestHead`] of ranges over its own bytes, and the instance's response head
//! is passed through, its fields copied from the bytes they arrived in. The request body is
//! read whole, when the body phase asks for it (so the WAF can read it and a retry can send it
//! again); the response body streams from the upstream connection.
//!
//! What it keeps of HTTP/1.1 (RFC 9112): keep-alive and pipelining; `Content-Length` and
//! chunked request bodies; `Expect: 100-continue`; responses framed by `Content-Length`, by
//! chunked encoding to HTTP/1.1 clients, or by the close to HTTP/1.0 ones; `HEAD`, 204 and
//! 304 without a body; a `Date` on every response. What it refuses: ambiguous framing (both
//! `Transfer-Encoding` and `Content-Length`, conflicting lengths, a coding other than chunked
//! last; the request smuggling patterns) with 400, obsolete line folding, more than one `Host`
//! and any target that is not origin form, absolute form or `OPTIONS *` with 400, a head larger than the
//! connection's buffer or with too many fields with 431. A protocol upgrade (a WebSocket
//! handshake) the instance accepts with `101` becomes a tunnel (see [`tunnel`]). A client that
//! has sent no complete
//! head within the header read timeout, on a new connection or between requests on a kept-alive
//! one, is disconnected without an answer. A connection the client may still be writing to is
//! closed lingering (see [`ClientConn::close`]).

use std::future::poll_fn;
use std::io::{self, Write as _};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, StatusCode, Version};
use http_body::Body;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::head::{BodyFraming, HeadError, RequestHead};
use crate::phases::{self, Peer, Shared};
use crate::record::ResponseBody;
use crate::timer::Deadline;
use crate::upstream::{self, MAX_CHUNK_LINE, MAX_TRAILERS, ResponseHead};

/// Read buffer growth; a read is not started with less room than `MIN_READ`.
const READ_CHUNK: usize = 8 * 1024;
const MIN_READ: usize = 2048;
/// Body bytes up to this size are copied behind the head (or the previous frame) and go out in
/// one write with it; larger frames are written on their own, and what is gathered is written
/// once it reaches this size.
const COALESCE: usize = 16 * 1024;
/// What a client may pipeline behind a request in flight before the gateway stops reading.
const MAX_PIPELINED: usize = 64 * 1024;
/// The smallest read buffer a connection gets, whatever `max_header_bytes` says.
const MIN_HEAD_BUFFER: usize = 8192;
/// Field slots when `max_headers` is not above this (hyper's default cap, kept as it was).
const DEFAULT_FIELD_CAP: usize = 100;
/// How long, and for how many bytes at most, a closing connection reads what the client still
/// sends (see [`ClientConn::close`]).
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 16 * 1024 * 1024;

/// The gateway's answer to one request: the instance's response head passed through, or the
/// gateway's own, and the body.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    /// The instance's head, whose end-to-end fields are copied to the client.
    pub(crate) upstream: Option<ResponseHead>,
    /// Fields the gateway adds, encoded (`name: value\r\n` each).
    pub(crate) fields: Vec<u8>,
    pub(crate) body: ResponseBody,
    /// Close the connection after this answer.
    pub(crate) close: bool,
}

/// Appends one field line, `name: value\r\n`.
pub(crate) fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Why reading a request body failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyReadError {
    #[error("request body larger than the limit")]
    TooLarge,
    #[error("the client closed the connection in the middle of the body")]
    Closed,
    #[error("malformed chunked body: {0}")]
    Chunked(&'static str),
    #[error("reading the body: {0}")]
    Io(#[from] io::Error),
}

/// The state of the current request's body on the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unread {
    /// Read whole (or there is none).
    Nothing,
    /// Not read; framed as the head said.
    Framed(BodyFraming),
    /// Reading failed midway: the rest cannot be found, the connection must close.
    Broken,
}

/// A client connection: the socket and what was read from it but not used yet.
pub(crate) struct ClientConn {
    stream: TcpStream,
    send_timeout: Duration,
    buf: BytesMut,
    body: Unread,
    expect_continue: bool,
    /// The client closed its end (or the connection failed) while a request was in flight.
    gone: bool,
}

impl ClientConn {
    fn new(stream: TcpStream, send_timeout: Duration) -> Self {
        ClientConn {
            stream,
            send_timeout,
            buf: BytesMut::with_capacity(READ_CHUNK),
            body: Unread::Nothing,
            expect_continue: false,
            gone: false,
        }
    }

    fn sender(&self) -> Sender<'_> {
        Sender {
            stream: &self.stream,
            timeout: self.send_timeout,
        }
    }

    /// True when the request has a body not read yet.
    pub(crate) fn has_body(&self) -> bool {
        !matches!(
            self.body,
            Unread::Nothing | Unread::Framed(BodyFraming::Length(0))
        )
    }

    /// The request body, whole, refusing one over `limit` bytes (a declared length over it
    /// before reading anything). Sends `100 Continue` first when the client waits for it.
    pub(crate) async fn read_body(&mut self, limit: usize) -> Result<Bytes, BodyReadError> {
        let framing = match self.body {
            Unread::Nothing => return Ok(Bytes::new()),
            Unread::Broken => return Err(BodyReadError::Closed),
            Unread::Framed(framing) => framing,
        };
        if let BodyFraming::Length(n) = framing
            && n > limit as u64
        {
            return Err(BodyReadError::TooLarge);
        }
        self.body = Unread::Broken;
        if self.expect_continue {
            self.expect_continue = false;
            self.sender().send(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        let body = match framing {
            BodyFraming::Length(n) => {
                // Checked against `limit` above.
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                self.buf.reserve(n.saturating_sub(self.buf.len()));
                while self.buf.len() < n {
                    self.more().await?;
                }
                self.buf.split_to(n).freeze()
            }
            BodyFraming::Chunked => self.read_chunked(limit).await?,
        };
        self.body = Unread::Nothing;
        Ok(body)
    }

    async fn read_chunked(&mut self, limit: usize) -> Result<Bytes, BodyReadError> {
        let mut body = BytesMut::new();
        loop {
            let line = loop {
                match upstream::take_line(&mut self.buf, MAX_CHUNK_LINE) {
                    Err(what) => return Err(BodyReadError::Chunked(what)),
                    Ok(Some(line)) => break line,
                    Ok(None) => self.more().await?,
                }
            };
            let size = upstream::chunk_size(&line).ok_or(BodyReadError::Chunked("chunk size"))?;
            if size == 0 {
                break;
            }
            let size = usize::try_from(size).map_err(|_| BodyReadError::TooLarge)?;
            if body.len().saturating_add(size) > limit {
                return Err(BodyReadError::TooLarge);
            }
            while self.buf.len() < size + 2 {
                self.more().await?;
            }
            body.extend_from_slice(&self.buf[..size]);
            if &self.buf[size..size + 2] != b"\r\n" {
                return Err(BodyReadError::Chunked("no CRLF after data"));
            }
            let _ = self.buf.split_to(size + 2);
        }
        // Trailer fields are read and dropped, up to the empty line.
        let mut seen = 0;
        loop {
            match upstream::take_line(&mut self.buf, MAX_TRAILERS.saturating_sub(seen)) {
                Err(_) => return Err(BodyReadError::Chunked("trailer section too large")),
                Ok(Some(line)) if line.is_empty() => break,
                Ok(Some(line)) => seen += line.len() + 2,
                Ok(None) => self.more().await?,
            }
        }
        Ok(body.freeze())
    }

    /// More bytes of a body: the end of the stream is an error here.
    async fn more(&mut self) -> Result<(), BodyReadError> {
        match self.fill().await? {
            0 => Err(BodyReadError::Closed),
            _ => Ok(()),
        }
    }

    /// Resolves when the client goes away (closes its end or resets) while its request is in
    /// flight; never otherwise. What it sends meanwhile (a pipelined request) is kept for
    /// later, up to [`MAX_PIPELINED`]; past that the socket is no longer watched. Safe to
    /// cancel: bytes read are in the buffer.
    pub(crate) async fn gone(&mut self) {
        while self.buf.len() < MAX_PIPELINED {
            match self.fill().await {
                Ok(0) | Err(_) => {
                    self.gone = true;
                    return;
                }
                Ok(_) => {}
            }
        }
        std::future::pending::<()>().await;
    }

    /// Closes the connection: the write side at once, so the client sees the end of the
    /// answer. When the client may still be sending (a body not read, a refused head), what
    /// it sends is read and dropped for a while first (nginx's lingering close): closing a
    /// socket with unread bytes resets the connection, and a reset can destroy the answer in
    /// the client's receive buffer before the client has read it.
    async fn close(mut self, linger: bool) {
        let _ = self.stream.shutdown().await;
        if !linger {
            return;
        }
        let drain = async {
            let mut read = 0;
            while read < LINGER_BYTES {
                self.buf.clear();
                match self.fill().await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => read += n,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    }

    /// Reads what the socket has into the buffer; `Ok(0)` is the end of the stream.
    async fn fill(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < MIN_READ {
            self.buf.reserve(READ_CHUNK);
        }
        poll_fn(|cx| poll_read(&self.stream, &mut self.buf, cx)).await
    }
}

/// One read of what `stream` has into `buf`, waiting until it has something (both sides of
/// the gateway read this way).
pub(crate) fn poll_read(
    stream: &TcpStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    loop {
        match stream.try_read_buf(buf) {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                ready!(stream.poll_read_ready(cx))?;
            }
            result => return Poll::Ready(result),
        }
    }
}

/// The limits a connection reads heads under.
struct HeadLimits {
    /// Buffered bytes without a complete head beyond which the head is refused (431).
    max_buffer: usize,
    max_fields: usize,
    timeout: Duration,
}

/// Serves one client connection until the client closes it, an answer closes it, or `stopped`
/// turns true (an idle connection closes at once, one with a request in flight after its
/// answer).
pub(crate) async fn serve_connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: Peer,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let config = &shared.config;
    let limits = HeadLimits {
        max_buffer: config
            .max_header_bytes
            .saturating_mul(2)
            .max(MIN_HEAD_BUFFER),
        max_fields: if config.max_headers > DEFAULT_FIELD_CAP {
            config.max_headers.saturating_mul(2)
        } else {
            DEFAULT_FIELD_CAP
        },
        timeout: config.header_read_timeout,
    };
    let mut conn = ClientConn::new(stream, config.send_timeout);
    let mut out = Vec::with_capacity(1024);
    loop {
        let head = match read_head(&mut conn, &limits, &mut stopped).await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(err) => {
                let status = match err {
                    HeadError::Malformed(_) => StatusCode::BAD_REQUEST,
                    HeadError::TooManyFields | HeadError::TooLarge => {
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
                    }
                };
                tracing::debug!(client = %peer.addr, error = %err, "request head refused");
                bare_answer(&conn.sender(), status).await;
                conn.close(true).await;
                return;
            }
        };
        let version = head.version();
        let keep_alive = head.keep_alive;
        let head_request = *head.method() == Method::HEAD;
        conn.body = Unread::Framed(head.body);
        conn.expect_continue = head.expect_continue;
        let handled = phases::handle(Arc::clone(&shared), peer.clone(), head, &mut conn).await;
        let Some(mut reply) = handled.filter(|_| !conn.gone) else {
            // Nobody to answer; the request was recorded as the client's going away.
            return;
        };
        // The instance accepted a protocol upgrade: its connection becomes the client's.
        let upgraded = if reply.status == StatusCode::SWITCHING_PROTOCOLS {
            reply.body.take_upgraded()
        } else {
            None
        };
        // A body not read (the request was answered before the body phase) is not looked for:
        // the connection closes instead.
        let keep = keep_alive && !reply.close && !conn.has_body() && !*stopped.borrow();
        let sender = conn.sender();
        let written = write_reply(&sender, &mut out, reply, version, head_request, keep).await;
        if let Some((instance, sent)) = upgraded {
            if written.is_ok() {
                tunnel(conn, instance, sent).await;
            }
            return;
        }
        if !written.unwrap_or(false) {
            let unread = conn.has_body() || !conn.buf.is_empty();
            conn.close(unread).await;
            return;
        }
    }
}

/// Reads the next request head: `Ok(None)` when the client closed the connection between
/// requests, sent nothing complete within the header read timeout, or the gateway stops while
/// the connection waits for one.
async fn read_head(
    conn: &mut ClientConn,
    limits: &HeadLimits,
    stopped: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<Option<RequestHead>, HeadError> {
    let mut deadline = None;
    // The bytes already looked at for the end of the head. A head is parsed again only when
    // what came since may end it (and once at first, so that garbage is refused at once): a
    // client sending its head a byte at a time would otherwise have the whole buffer parsed
    // once per byte.
    let mut scanned = None;
    loop {
        if !conn.buf.is_empty()
            && scanned.is_none_or(|from| may_end_head(&conn.buf, from))
            && let Some(head) = RequestHead::parse(&mut conn.buf, limits.max_fields)?
        {
            return Ok(Some(head));
        }
        if conn.buf.len() > limits.max_buffer {
            return Err(HeadError::TooLarge);
        }
        if !conn.buf.is_empty() {
            scanned = Some(conn.buf.len());
        }
        let deadline = deadline.get_or_insert_with(|| Deadline::after(limits.timeout));
        let read = tokio::select! {
            biased;
            read = conn.fill() => read,
            () = deadline => return Ok(None),
            _ = stopped.wait_for(|stop| *stop), if conn.buf.is_empty() => return Ok(None),
        };
        match read {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

/// Carries bytes both ways between the client and the instance after a `101 Switching
/// Protocols`, starting with what either sent early, until both ends have closed or one
/// fails. The gateway does not look inside: a WebSocket's frames are not inspected.
async fn tunnel(mut conn: ClientConn, mut instance: TcpStream, sent: BytesMut) {
    if !sent.is_empty() && conn.sender().send(&sent).await.is_err() {
        return;
    }
    if !conn.buf.is_empty() && instance.write_all(&conn.buf).await.is_err() {
        return;
    }
    if let Err(err) = tokio::io::copy_bidirectional(&mut conn.stream, &mut instance).await {
        tracing::debug!(error = %err, "upgraded connection ended with an error");
    }
}

/// True when `buf[from..]` (with the two bytes before it) holds an empty line after a line
/// feed: `\n\n` or `\n\r\n`, which a complete head ends with.
fn may_end_head(buf: &[u8], from: usize) -> bool {
    let from = from.saturating_sub(2);
    memchr::memchr_iter(b'\n', &buf[from..]).any(|i| {
        let rest = &buf[from + i + 1..];
        rest.first() == Some(&b'\n') || rest.starts_with(b"\r\n")
    })
}

/// Writes `reply` to the client: the status line, the instance's end-to-end fields, the
/// gateway's, the framing, `Date` and `Connection`, then the body. `keep` says whether the
/// connection stays open after it. An error (the client went away, or the instance's body
/// failed midway) means the connection must close.
async fn write_reply(
    stream: &Sender<'_>,
    out: &mut Vec<u8>,
    reply: Reply,
    version: Version,
    head_request: bool,
    keep: bool,
) -> io::Result<bool> {
    let Reply {
        status,
        upstream,
        fields,
        mut body,
        close: _,
    } = reply;
    let no_body = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let length = body.size_hint().exact();
    // A 101 keeps the instance's `Upgrade` and says `Connection: upgrade`; the connection is
    // then a tunnel (see `tunnel`).
    let upgraded = status == StatusCode::SWITCHING_PROTOCOLS;
    let mut keep = keep && !upgraded;
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status.as_u16()).as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut has_date = false;
    if let Some(upstream) = &upstream {
        let hop =
            crate::head::HopByHop::new(upstream.values(b"connection")).passing_upgrade(upgraded);
        for (name, value) in upstream.fields() {
            let keep_field = match name {
                b"x-request-id" => false,
                // The length a GET would have had, on a response that has no body.
                b"content-length" => no_body && status != StatusCode::NO_CONTENT,
                b"date" => {
                    has_date = true;
                    true
                }
                _ => !hop.drops(name),
            };
            if keep_field {
                push_field(out, name, value);
            }
        }
    }
    out.extend_from_slice(&fields);
    // Without a length, the body is chunked for HTTP/1.1 clients and ends with the
    // connection for HTTP/1.0 ones.
    let mut chunked = false;
    match length {
        Some(n) if !no_body || upstream.is_none() => {
            push_field(
                out,
                b"content-length",
                itoa::Buffer::new().format(n).as_bytes(),
            );
        }
        Some(_) => {}
        None if no_body => {}
        None if version == Version::HTTP_11 => {
            push_field(out, b"transfer-encoding", b"chunked");
            chunked = true;
        }
        None => keep = false,
    }
    if !has_date {
        date::with(|date| push_field(out, b"date", date));
    }
    if upgraded {
        push_field(out, b"connection", b"upgrade");
    } else if !keep {
        push_field(out, b"connection", b"close");
    } else if version == Version::HTTP_10 {
        push_field(out, b"connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
    if no_body {
        // Dropping the body records the request (and gives an instance's connection back).
        drop(body);
        write_all(stream, out).await?;
        return Ok(keep);
    }
    loop {
        // What is ready joins the bytes waiting to go out; the socket is written when the
        // body has to wait, or when a frame is too large to copy.
        let ready = Pin::new(&mut body).poll_frame(&mut Context::from_waker(Waker::noop()));
        let next = match ready {
            Poll::Ready(next) => next,
            Poll::Pending => {
                write_all(stream, out).await?;
                poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            }
        };
        let data = match next {
            None => break,
            Some(Err(err)) => {
                // Whatever came is passed on; the missing end tells the client it is cut short.
                write_all(stream, out).await?;
                return Err(io::Error::other(err));
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                // Trailers are not passed on.
                _ => continue,
            },
        };
        if chunked {
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{:x}\r\n", data.len());
        }
        if data.len() <= COALESCE {
            out.extend_from_slice(&data);
        } else {
            write_all(stream, out).await?;
            stream.send(&data).await?;
        }
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
        // A body that keeps coming as fast as it is asked for goes out in pieces, not whole.
        if out.len() >= COALESCE {
            write_all(stream, out).await?;
        }
    }
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    write_all(stream, out).await?;
    Ok(keep)
}

/// Writes and empties `out`.
async fn write_all(stream: &Sender<'_>, out: &mut Vec<u8>) -> io::Result<()> {
    stream.send(out).await?;
    out.clear();
    Ok(())
}

/// The write side of a client connection, with its send timeout.
struct Sender<'a> {
    stream: &'a TcpStream,
    timeout: Duration,
}

impl Sender<'_> {
    /// Writes `bytes` whole. The client must take some of them at least every `timeout` when
    /// it has let the socket's buffer fill up; writes that fit go out without a timer.
    async fn send(&self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match self.stream.try_write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    match tokio::time::timeout(self.timeout, self.stream.writable()).await {
                        Ok(ready) => ready?,
                        Err(_elapsed) => {
                            return Err(io::Error::new(
                                io::ErrorKind::TimedOut,
                                "the client took none of its answer within the send timeout",
                            ));
                        }
                    }
                }
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}

/// An answer for a request refused before it was parsed: no body, and the connection closes.
async fn bare_answer(stream: &Sender<'_>, status: StatusCode) {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status.as_u16()).as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\ncontent-length: 0\r\nconnection: close\r\n");
    date::with(|date| push_field(&mut out, b"date", date));
    out.extend_from_slice(b"\r\n");
    let _ = stream.send(&out).await;
}

/// The `Date` field's value, formatted once a second per thread.
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }

    /// Calls `f` with the current date as an IMF-fixdate (`Sun, 06 Dec 2026 14:40:54 GMT`).
    pub(super) fn with<R>(f: impl FnOnce(&[u8]) -> R) -> R {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        DATE.with(|cached| {
            let mut cached = cached.borrow_mut();
            if cached.0 != second {
                *cached = (second, httpdate::fmt_http_date(now));
            }
            f(cached.1.as_bytes())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_a_head_is_found_across_reads() {
        let head = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n";
        assert!(may_end_head(head, 0));
        // Every split of the head into what was scanned and what came since.
        for from in 0..head.len() {
            assert!(may_end_head(head, from), "{from}");
        }
        assert!(!may_end_head(b"GET / HTTP/1.1\r\nhost: a\r\n", 0));
        assert!(may_end_head(b"GET / HTTP/1.1\nhost: a\n\n", 20));
        assert!(!may_end_head(
            b"GET / HTTP/1.1\r\nhost: a\r\nx-b: 1\r\n",
            26
        ));
    }
}
