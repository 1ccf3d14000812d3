//! The HTTP/1.1 client side of the gateway: one worker's keep-alive connections to the
//! instances, the request written to one of them, and the response read back, its body
//! streamed to the client from the connection itself.
//!
//! Written by hand on `httparse` (the parser hyper uses) rather than on hyper's client
//! because the gateway needs a small part of that client and paid for the rest on every
//! request: hyper drives each client connection from a task of its own, so one proxied
//! request crossed two channels (request in, response out), a body channel and three task
//! wake-ups, and its header map was cloned for every attempt. Here the request's own task
//! writes the request, parses the response head and reads the body straight into the frames
//! it sends on. That took the gateway thread's instructions per proxied request from 43.8k to
//! 35.5k without an edge table and from 57.9k to 49.2k with full security
//! (`bench/gateway_instructions.sh`, `docs/benchmarks.md`). A `101 Switching Protocols` answer
//! to a request that asked for an upgrade hands the connection to the client's side (see
//! [`UpstreamBody::take_upgraded`]); to any other request it ends in a 502.
//!
//! Connections are kept per instance address, handed out most recently used first, taken
//! back once a response body has been read to its end, and closed after
//! [`GatewayConfig::idle_pool_timeout`] unused or as soon as the instance closes them.
//!
//! [`GatewayConfig::idle_pool_timeout`]: crate::GatewayConfig::idle_pool_timeout

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::HeaderValue;
use http::{Method, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use rustc_hash::FxHashMap;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use crate::head::{self, LengthError};
use crate::server::{poll_read, push_field};

/// Header fields accepted in a response head (hyper's default).
const MAX_HEADERS: usize = 100;
/// Largest response head accepted (hyper's default buffer limit).
const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;
/// Longest chunk-size line (with extensions) and largest trailer section accepted, in
/// responses and (by the server side) in requests.
pub(crate) const MAX_CHUNK_LINE: usize = 4096;
pub(crate) const MAX_TRAILERS: usize = 64 * 1024;
/// Read buffer growth; a read is not started with less room than `MIN_READ`.
const READ_CHUNK: usize = 16 * 1024;
const MIN_READ: usize = 4096;
/// A body up to this size goes out in the same write as the head.
const COALESCE_BODY: usize = 64 * 1024;

/// Why a request did not get a response head from the instance.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// No connection: refused, unreachable, or not established within the connect timeout,
    /// or a new connection closed before it took the request. The request certainly did not
    /// reach the instance.
    #[error("connect to {addr} failed: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    /// The instance closed the connection after the request went out and before any
    /// response. On a reused keep-alive connection this is usually the app closing it as
    /// idle just as it was handed out.
    #[error("connection closed before a response")]
    ClosedBeforeResponse,
    /// Any other failure after the request went out (malformed response, reset, …).
    #[error("{0}")]
    Failed(String),
}

impl UpstreamError {
    /// True when the request certainly did not reach the instance, so that sending it to
    /// another one cannot run it twice.
    pub(crate) fn never_sent(&self) -> bool {
        matches!(self, UpstreamError::Connect { .. })
    }
}

/// Why a response body ended before its framing said it would.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("the instance closed the connection in the middle of the body")]
    Closed,
    #[error("malformed chunked body: {0}")]
    Chunked(&'static str),
    #[error("reading the body: {0}")]
    Io(#[from] io::Error),
}

/// A request encoded for the wire once, for every attempt on every connection.
pub(crate) struct Outgoing {
    /// Request line, header fields and, when small, the body.
    wire: Vec<u8>,
    /// A body too large to copy behind the head.
    body: Bytes,
    /// A response to HEAD has no body whatever its header fields say.
    head: bool,
    /// The client asked to switch protocols: a `101` answer hands the connection over.
    upgrade: bool,
}

impl Outgoing {
    /// `target` is the origin-form request target (`/path?query`); `fields` are the request's
    /// header fields as (lower-case name, value), hop-by-hop ones already left out; `host` is
    /// added when they carry none. `Content-Length` is the buffered body's; a client's own is
    /// not copied.
    pub(crate) fn new<'f>(
        method: &Method,
        target: &str,
        fields: impl IntoIterator<Item = (&'f [u8], &'f [u8])>,
        host: Option<&HeaderValue>,
        body: Bytes,
    ) -> Outgoing {
        let coalesce = body.len() <= COALESCE_BODY;
        let mut wire = Vec::with_capacity(1024 + if coalesce { body.len() } else { 0 });
        wire.extend_from_slice(method.as_str().as_bytes());
        wire.push(b' ');
        wire.extend_from_slice(target.as_bytes());
        wire.extend_from_slice(b" HTTP/1.1\r\n");
        let mut has_host = false;
        for (name, value) in fields {
            match name {
                b"content-length" => continue,
                b"host" => has_host = true,
                _ => {}
            }
            push_field(&mut wire, name, value);
        }
        if let Some(host) = host
            && !has_host
        {
            push_field(&mut wire, b"host", host.as_bytes());
        }
        // A body-less POST, PUT or PATCH still says so; other body-less methods say nothing.
        if !body.is_empty() || matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
            push_field(
                &mut wire,
                b"content-length",
                itoa::Buffer::new().format(body.len()).as_bytes(),
            );
        }
        wire.extend_from_slice(b"\r\n");
        let body = if coalesce {
            wire.extend_from_slice(&body);
            Bytes::new()
        } else {
            body
        };
        Outgoing {
            wire,
            body,
            head: *method == Method::HEAD,
            upgrade: false,
        }
    }

    /// Marks the request as a protocol upgrade (a WebSocket handshake): the instance may
    /// answer `101 Switching Protocols`, after which its connection is the client's tunnel.
    pub(crate) fn upgrading(mut self) -> Outgoing {
        self.upgrade = true;
        self
    }
}

#[cfg(test)]
impl Outgoing {
    /// The request line, fields and coalesced body as they go out.
    pub(crate) fn wire_for_test(&self) -> &[u8] {
        &self.wire
    }
}

/// One worker's idle connections, by instance address (hashed with FxHash: the addresses come
/// from the routing table, not from clients).
pub(crate) struct UpstreamPool {
    idle: Mutex<FxHashMap<SocketAddr, Vec<Idle>>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

impl Idle {
    /// Not idle past `timeout` at `now`, and not closed by the instance.
    fn usable(&self, now: Instant, timeout: Duration) -> bool {
        now.duration_since(self.since) < timeout && self.conn.still_idle()
    }
}

/// An open connection and what was read from it but not yet used.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    /// The last read returned less than there was room for: the socket had nothing more.
    drained: bool,
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: BytesMut::new(),
            drained: false,
        }
    }

    /// Called as the connection goes idle after a clean response. Tokio reports a socket
    /// readable until a read ends in `WouldBlock`, which after the last read of a response
    /// would take one more system call per request. A read that returned less than it had
    /// room for emptied the socket just as well (nginx reasons the same way), so the
    /// readiness is dropped without that call: what arrives later (the instance closing the
    /// connection, stray bytes) is a new event that makes it readable again, and
    /// [`Conn::still_idle`] then looks. Tokio clears only the readiness it had seen when this
    /// runs, never one from a later event, and never the "closed" part.
    fn settle(&self) {
        if self.drained {
            let _ = self.stream.try_io(Interest::READABLE, || {
                Err::<(), _>(io::ErrorKind::WouldBlock.into())
            });
        }
    }

    /// False once the instance closed the connection or sent something unasked while it sat
    /// idle. Costs no system call unless the socket was reported readable since
    /// [`Conn::settle`].
    fn still_idle(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        if self.stream.poll_read_ready(&mut cx).is_pending() {
            return true;
        }
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(err) if err.kind() == io::ErrorKind::WouldBlock)
    }

    async fn write(&mut self, request: &Outgoing) -> io::Result<()> {
        self.stream.write_all(&request.wire).await?;
        if !request.body.is_empty() {
            self.stream.write_all(&request.body).await?;
        }
        Ok(())
    }

    /// More bytes for a body that is not complete: the end of the stream is an error here.
    fn poll_more(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BodyError>> {
        match ready!(self.poll_fill(cx)) {
            Ok(0) => Poll::Ready(Err(BodyError::Closed)),
            Ok(_) => Poll::Ready(Ok(())),
            Err(err) => Poll::Ready(Err(err.into())),
        }
    }

    /// Reads what the socket has into the buffer; `Ok(0)` is the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < MIN_READ {
            self.buf.reserve(READ_CHUNK);
        }
        let room = self.buf.capacity() - self.buf.len();
        let result = ready!(poll_read(&self.stream, &mut self.buf, cx));
        self.drained = matches!(result, Ok(n) if n > 0 && n < room);
        Poll::Ready(result)
    }
}

impl UpstreamPool {
    pub(crate) fn new(connect_timeout: Duration, idle_timeout: Duration) -> Arc<Self> {
        Arc::new(UpstreamPool {
            idle: Mutex::new(FxHashMap::default()),
            connect_timeout,
            idle_timeout,
        })
    }

    /// Sends `request` to the instance at `addr` on an idle connection, or on a new one when
    /// none is left or `fresh` asks for one, and reads the response head. The body streams
    /// from the connection, which goes back to the pool when the body has been read to its
    /// end.
    pub(crate) async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        request: &Outgoing,
        fresh: bool,
    ) -> Result<(ResponseHead, UpstreamBody), UpstreamError> {
        while let Some(mut conn) = (!fresh).then(|| self.checkout(addr)).flatten() {
            // A write error: the instance closed the idle connection before the request was
            // all in it, so it cannot have run it. Next one.
            if conn.write(request).await.is_ok() {
                return self.read_head(addr, conn, request).await;
            }
        }
        let mut conn = self.connect(addr).await?;
        if let Err(err) = conn.write(request).await {
            return Err(UpstreamError::Connect {
                addr,
                reason: err.to_string(),
            });
        }
        self.read_head(addr, conn, request).await
    }

    async fn read_head(
        self: &Arc<Self>,
        addr: SocketAddr,
        mut conn: Conn,
        request: &Outgoing,
    ) -> Result<(ResponseHead, UpstreamBody), UpstreamError> {
        // Anything read yet, interim responses included: after that a closed connection is
        // a failure of this request, not a stale connection.
        let mut answered = false;
        loop {
            if !conn.buf.is_empty() {
                answered = true;
                if let Some(head) = parse_head(&mut conn.buf)? {
                    let status = head.response.status;
                    if status == StatusCode::SWITCHING_PROTOCOLS && !request.upgrade {
                        return Err(UpstreamError::Failed(
                            "the instance switched protocols unasked".to_owned(),
                        ));
                    }
                    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
                        // 100 Continue, 103 Early Hints: the final response follows.
                        continue;
                    }
                    return Ok(self.response(addr, conn, head, request.head));
                }
                if conn.buf.len() > MAX_HEAD_BYTES {
                    return Err(UpstreamError::Failed(format!(
                        "response head larger than {MAX_HEAD_BYTES} bytes"
                    )));
                }
            }
            match poll_fn(|cx| conn.poll_fill(cx)).await {
                Ok(0) if answered => {
                    return Err(UpstreamError::Failed(
                        "connection closed in the middle of the response head".to_owned(),
                    ));
                }
                Ok(0) => return Err(UpstreamError::ClosedBeforeResponse),
                Ok(_) => {}
                Err(err)
                    if !answered
                        && matches!(
                            err.kind(),
                            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                        ) =>
                {
                    return Err(UpstreamError::ClosedBeforeResponse);
                }
                Err(err) => return Err(UpstreamError::Failed(err.to_string())),
            }
        }
    }

    fn response(
        self: &Arc<Self>,
        addr: SocketAddr,
        conn: Conn,
        head: Head,
        head_request: bool,
    ) -> (ResponseHead, UpstreamBody) {
        let Head {
            response,
            framing,
            keep_alive,
        } = head;
        let status = response.status;
        let upgraded = status == StatusCode::SWITCHING_PROTOCOLS;
        let framing = if head_request
            || upgraded
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            Framing::Length(0)
        } else {
            framing
        };
        // After a 101 the connection speaks another protocol: it is the client's now.
        let reusable = keep_alive && !upgraded && !matches!(framing, Framing::UntilClose);
        let body = UpstreamBody {
            conn: Some(conn),
            framing,
            reusable,
            upgraded,
            pool: Arc::clone(self),
            addr,
        };
        (response, body)
    }

    /// The most recently returned idle connection to `addr` still open; closed and expired
    /// ones met on the way are dropped (which closes them).
    fn checkout(&self, addr: SocketAddr) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let list = idle.get_mut(&addr)?;
        let now = Instant::now();
        while let Some(entry) = list.pop() {
            if entry.usable(now, self.idle_timeout) {
                return Some(entry.conn);
            }
        }
        None
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Conn, UpstreamError> {
        let failed = |reason: String| UpstreamError::Connect { addr, reason };
        let stream =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Err(_elapsed) => {
                    return Err(failed(format!(
                        "timed out after {:?}",
                        self.connect_timeout
                    )));
                }
                Ok(Err(err)) => return Err(failed(err.to_string())),
                Ok(Ok(stream)) => stream,
            };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%addr, error = %err, "cannot set TCP_NODELAY upstream");
        }
        Ok(Conn::new(stream))
    }

    /// Puts a connection that is ready for its next request back in the idle list.
    fn put_back(&self, addr: SocketAddr, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.entry(addr).or_default().push(Idle {
            conn,
            since: Instant::now(),
        });
    }

    /// Closes the connections idle for longer than the idle timeout or closed by the
    /// instance, and forgets addresses left with none (instances that were stopped).
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|_, list| {
            list.retain(|entry| entry.usable(now, self.idle_timeout));
            !list.is_empty()
        });
    }

    /// Idle connections held, for tests.
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.values().map(Vec::len).sum()
    }
}

/// A parsed response head.
struct Head {
    response: ResponseHead,
    framing: Framing,
    keep_alive: bool,
}

/// An instance's response head as it arrived: its bytes and where each field sits in them,
/// names in lower case, for the client's answer to copy from.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    pub(crate) status: StatusCode,
    bytes: Bytes,
    fields: Vec<(Range<usize>, Range<usize>)>,
}

impl ResponseHead {
    /// Every field as (lower-case name, value), in the order received.
    pub(crate) fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields
            .iter()
            .map(|(name, value)| (&self.bytes[name.clone()], &self.bytes[value.clone()]))
    }

    /// The values of the fields named `name` (lower case), in order.
    pub(crate) fn values<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields()
            .filter(move |(n, _)| *n == name)
            .map(|(_, v)| v)
    }
}

/// How the end of a response body is known (RFC 9112, section 6.3).
#[derive(Debug)]
enum Framing {
    /// `Content-Length`: the bytes still to come.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked(Chunk),
    /// Neither: the body ends when the instance closes the connection.
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk: its bytes still to come.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields (ignored) up to an empty line; the bytes of
    /// them seen so far.
    Trailers(usize),
    Done,
}

/// Parses a complete response head off the front of `buf`, or returns `None` when more bytes
/// are needed.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, UpstreamError> {
    let malformed = |what: String| UpstreamError::Failed(format!("malformed response: {what}"));
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(err) => return Err(malformed(err.to_string())),
    };
    let status = parsed
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| malformed("status code".to_owned()))?;
    let version = if parsed.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // Where each field sits in the head; names are lower-cased in place below.
    let base = buf.as_ptr() as usize;
    let at = |part: &[u8]| head::place(base, part);
    let mut fields: Vec<(Range<usize>, Range<usize>)> = parsed
        .headers
        .iter()
        .map(|h| (at(h.name.as_bytes()), at(h.value)))
        .collect();
    let mut close = version == Version::HTTP_10;
    let mut chunked = None;
    let mut length: Option<u64> = None;
    for (name, value) in &fields {
        buf[name.clone()].make_ascii_lowercase();
        let value = &buf[value.clone()];
        match &buf[name.clone()] {
            b"connection" => {
                for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        close = false;
                    }
                }
            }
            // Only the last coding matters: chunked, or the body runs to the close.
            b"transfer-encoding" => chunked = Some(head::chunked_last(value)),
            b"content-length" => {
                head::content_length(value, &mut length).map_err(|err| match err {
                    LengthError::Malformed => malformed("Content-Length".to_owned()),
                    LengthError::Conflicting => {
                        malformed("conflicting Content-Length values".to_owned())
                    }
                })?;
            }
            _ => {}
        }
    }
    let framing = match (chunked, length) {
        (Some(true), _) => Framing::Chunked(Chunk::Size),
        // A Transfer-Encoding without chunked last: only the close ends it.
        (Some(false), _) => Framing::UntilClose,
        (None, Some(n)) => Framing::Length(n),
        (None, None) => Framing::UntilClose,
    };
    let bytes = buf.split_to(len).freeze();
    // Framed by both fields: Transfer-Encoding wins, and the connection is not reused.
    if chunked.is_some() && length.is_some() {
        close = true;
        fields.retain(|(name, _)| &bytes[name.clone()] != b"content-length");
    }
    Ok(Some(Head {
        response: ResponseHead {
            status,
            bytes,
            fields,
        },
        framing,
        keep_alive: !close,
    }))
}

/// A response body read from the instance's connection as the client takes it; the
/// connection goes back to the pool when the body has ended cleanly, and is closed when the
/// body is dropped before its end.
pub(crate) struct UpstreamBody {
    conn: Option<Conn>,
    framing: Framing,
    reusable: bool,
    /// The answer was `101 Switching Protocols` (see [`UpstreamBody::take_upgraded`]).
    upgraded: bool,
    pool: Arc<UpstreamPool>,
    addr: SocketAddr,
}

impl UpstreamBody {
    /// The connection of a `101 Switching Protocols` answer, and what the instance already
    /// sent in its new protocol; `None` for any other answer, or once taken.
    pub(crate) fn take_upgraded(&mut self) -> Option<(TcpStream, BytesMut)> {
        if !self.upgraded {
            return None;
        }
        self.conn.take().map(|conn| (conn.stream, conn.buf))
    }

    fn at_end(&self) -> bool {
        matches!(
            self.framing,
            Framing::Length(0) | Framing::Chunked(Chunk::Done)
        )
    }

    /// Done with the connection: back to the pool if the body ended as framed and nothing
    /// unasked follows it, else closed.
    fn release(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.reusable
            && self.at_end()
            && conn.buf.is_empty()
        {
            conn.settle();
            self.pool.put_back(self.addr, conn);
        }
    }

    fn poll_chunked(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        loop {
            let Framing::Chunked(state) = self.framing else {
                return Poll::Ready(None);
            };
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let buf = &mut conn.buf;
            let next = match state {
                Chunk::Done => return Poll::Ready(None),
                Chunk::Data(left) if !buf.is_empty() => {
                    let (data, left) = take_up_to(buf, left);
                    self.framing = Framing::Chunked(if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    });
                    return Poll::Ready(Some(Ok(data)));
                }
                Chunk::DataEnd if buf.len() >= 2 => {
                    if &buf[..2] != b"\r\n" {
                        return Poll::Ready(Some(Err(BodyError::Chunked("no CRLF after data"))));
                    }
                    let _ = buf.split_to(2);
                    Some(Chunk::Size)
                }
                Chunk::Size => match take_line(buf, MAX_CHUNK_LINE) {
                    Err(what) => return Poll::Ready(Some(Err(BodyError::Chunked(what)))),
                    Ok(None) => None,
                    Ok(Some(line)) => match chunk_size(&line) {
                        Some(0) => Some(Chunk::Trailers(0)),
                        Some(size) => Some(Chunk::Data(size)),
                        None => return Poll::Ready(Some(Err(BodyError::Chunked("chunk size")))),
                    },
                },
                Chunk::Trailers(seen) => {
                    let limit = MAX_TRAILERS.saturating_sub(seen);
                    match take_line(buf, limit) {
                        Err(_) => {
                            return Poll::Ready(Some(Err(BodyError::Chunked(
                                "trailer section too large",
                            ))));
                        }
                        Ok(None) => None,
                        Ok(Some(line)) if line.is_empty() => Some(Chunk::Done),
                        Ok(Some(line)) => Some(Chunk::Trailers(seen + line.len() + 2)),
                    }
                }
                Chunk::Data(_) | Chunk::DataEnd => None,
            };
            match next {
                Some(next) => {
                    self.framing = Framing::Chunked(next);
                    if next == Chunk::Done {
                        self.release();
                        return Poll::Ready(None);
                    }
                }
                None => {
                    if let Err(err) = ready!(conn.poll_more(cx)) {
                        return Poll::Ready(Some(Err(err)));
                    }
                }
            }
        }
    }
}

/// Up to `left` bytes off the front of `buf`, and how many are still to come after them.
fn take_up_to(buf: &mut BytesMut, left: u64) -> (Bytes, u64) {
    let n = usize::try_from(left).map_or(buf.len(), |left| left.min(buf.len()));
    (buf.split_to(n).freeze(), left - n as u64)
}

/// Takes one CRLF-terminated line (without its CRLF) off the front of `buf`, or `None` when
/// it is not all there yet; a line longer than `limit` is an error.
pub(crate) fn take_line(
    buf: &mut BytesMut,
    limit: usize,
) -> Result<Option<BytesMut>, &'static str> {
    match buf.iter().position(|b| *b == b'\n') {
        Some(end) if end > limit => Err("line too long"),
        Some(end) if end == 0 || buf[end - 1] != b'\r' => Err("bare LF"),
        Some(end) => {
            let mut line = buf.split_to(end + 1);
            line.truncate(end - 1);
            Ok(Some(line))
        }
        None if buf.len() > limit => Err("line too long"),
        None => Ok(None),
    }
}

/// The size of a chunk-size line (`1a`, `1a;ext=v`, `1a ;ext`), or `None` when malformed.
pub(crate) fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if digits == 0 || digits > 16 {
        return None;
    }
    let rest = line[digits..].trim_ascii_start();
    if !(rest.is_empty() || rest[0] == b';') {
        return None;
    }
    let hex = std::str::from_utf8(&line[..digits]).ok()?;
    u64::from_str_radix(hex, 16).ok()
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.framing {
                Framing::Length(0) => {
                    this.release();
                    return Poll::Ready(None);
                }
                Framing::Length(left) => {
                    if conn.buf.is_empty() {
                        if let Err(err) = ready!(conn.poll_more(cx)) {
                            return Poll::Ready(Some(Err(err)));
                        }
                        continue;
                    }
                    let (data, left) = take_up_to(&mut conn.buf, left);
                    this.framing = Framing::Length(left);
                    if left == 0 {
                        // Given back now, before the client has the bytes: the next request
                        // may want this connection while they are being written.
                        this.release();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::UntilClose => {
                    if !conn.buf.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(conn.buf.split().freeze()))));
                    }
                    match ready!(conn.poll_fill(cx)) {
                        Ok(0) => {
                            this.conn = None;
                            return Poll::Ready(None);
                        }
                        Ok(_) => {}
                        Err(err) => return Poll::Ready(Some(Err(err.into()))),
                    }
                }
                Framing::Chunked(_) => {
                    return this
                        .poll_chunked(cx)
                        .map(|polled| polled.map(|result| result.map(Frame::data)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.at_end() || self.conn.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(left) => SizeHint::with_exact(left),
            _ => SizeHint::default(),
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // A body that ended without being polled to its end (no body at all: HEAD, 204, 304)
        // still gives its connection back; any other is closed.
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;

    /// An upstream that answers "ok" and counts the connections it accepted.
    async fn upstream() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_req| async {
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                            b"ok",
                        ))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, accepted)
    }

    /// An upstream that reads each request head (and a `content-length` body) and answers
    /// with the next of `answers`, written as they are; it closes the connection after an
    /// answer that ends with `"<close>"` (the marker is not sent). Returns the address, the
    /// connection count and the requests it read.
    async fn raw_upstream(
        answers: Vec<&'static str>,
    ) -> (SocketAddr, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (counter, requests) = (Arc::clone(&accepted), Arc::clone(&seen));
        let answers = Arc::new(Mutex::new(answers.into_iter()));
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let (answers, requests) = (Arc::clone(&answers), Arc::clone(&requests));
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            let mut chunk = [0u8; 4096];
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
                        let body_len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        while buf.len() < end + 4 + body_len {
                            let mut chunk = [0u8; 4096];
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let request = String::from_utf8_lossy(&buf[..end + 4 + body_len]);
                        requests.lock().expect("lock").push(request.into_owned());
                        buf.drain(..end + 4 + body_len);
                        let Some(answer) = answers.lock().expect("lock").next() else {
                            return;
                        };
                        let (answer, close) = match answer.strip_suffix("<close>") {
                            Some(answer) => (answer, true),
                            None => (answer, false),
                        };
                        if stream.write_all(answer.as_bytes()).await.is_err() || close {
                            return;
                        }
                    }
                });
            }
        });
        (addr, accepted, seen)
    }

    fn get(addr: SocketAddr) -> Outgoing {
        let host = addr.to_string();
        Outgoing::new(
            &Method::GET,
            "/x",
            [(&b"host"[..], host.as_bytes())],
            None,
            Bytes::new(),
        )
    }

    const NO_FIELDS: [(&[u8], &[u8]); 0] = [];

    /// One whole exchange: send, read the body to its end, and let the connection settle
    /// as the next request would.
    async fn exchange(pool: &Arc<UpstreamPool>, request: &Outgoing, addr: SocketAddr) -> Bytes {
        let (_, body) = pool.send(addr, request, false).await.expect("response");
        let body = body.collect().await.expect("body").to_bytes();
        tokio::task::yield_now().await;
        body
    }

    fn pool() -> Arc<UpstreamPool> {
        UpstreamPool::new(Duration::from_secs(2), Duration::from_secs(30))
    }

    #[tokio::test]
    async fn a_connection_is_reused_after_its_body_ends() {
        let (addr, accepted) = upstream().await;
        let pool = pool();
        for _ in 0..5 {
            assert_eq!(&exchange(&pool, &get(addr), addr).await[..], b"ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn fresh_asks_for_a_new_connection() {
        let (addr, accepted) = upstream().await;
        let pool = pool();
        for fresh in [false, false, true] {
            let (_, body) = pool.send(addr, &get(addr), fresh).await.expect("response");
            body.collect().await.expect("body");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        // Both connections are idle now: the pool keeps them for the next requests.
        assert_eq!(pool.idle_count(), 2);
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_closes_the_connection() {
        let (addr, accepted, _) = raw_upstream(vec![
            "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n01234",
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        ])
        .await;
        let pool = pool();
        let response = pool.send(addr, &get(addr), false).await.expect("response");
        drop(response);
        assert_eq!(pool.idle_count(), 0);
        assert_eq!(&exchange(&pool, &get(addr), addr).await[..], b"ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn connections_idle_past_the_timeout_are_swept() {
        let (addr, _) = upstream().await;
        let pool = UpstreamPool::new(Duration::from_secs(2), Duration::from_millis(50));
        exchange(&pool, &get(addr), addr).await;
        assert_eq!(pool.idle_count(), 1);
        tokio::time::sleep(Duration::from_millis(80)).await;
        pool.sweep();
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn a_refused_connection_is_never_sent() {
        // Bind and drop: the port is (almost certainly) closed now.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("address");
        match pool().send(addr, &get(addr), false).await {
            Ok(_) => panic!("a closed port answered"),
            Err(err) => assert!(err.never_sent(), "{err}"),
        }
    }

    #[tokio::test]
    async fn the_request_goes_out_as_encoded() {
        let (addr, _, seen) = raw_upstream(vec!["HTTP/1.1 204 No Content\r\n\r\n"; 3]).await;
        let pool = pool();
        let headers: [(&[u8], &[u8]); 3] = [
            (b"content-length", b"99"),
            (b"x-multi", b"a"),
            (b"x-multi", b"b"),
        ];
        let host = HeaderValue::from_static("app.internal");
        let post = Outgoing::new(
            &Method::POST,
            "/p?q=1",
            headers,
            Some(&host),
            Bytes::from_static(b"hello"),
        );
        exchange(&pool, &post, addr).await;
        let empty_put = Outgoing::new(&Method::PUT, "/", NO_FIELDS, Some(&host), Bytes::new());
        exchange(&pool, &empty_put, addr).await;
        exchange(&pool, &get(addr), addr).await;
        let seen = seen.lock().expect("lock").clone();
        assert_eq!(
            seen[0],
            "POST /p?q=1 HTTP/1.1\r\nx-multi: a\r\nx-multi: b\r\nhost: app.internal\r\n\
             content-length: 5\r\n\r\nhello"
        );
        assert_eq!(
            seen[1],
            "PUT / HTTP/1.1\r\nhost: app.internal\r\ncontent-length: 0\r\n\r\n"
        );
        assert_eq!(seen[2], format!("GET /x HTTP/1.1\r\nhost: {addr}\r\n\r\n"));
    }

    #[tokio::test]
    async fn a_large_body_goes_out_whole() {
        let (addr, _, seen) =
            raw_upstream(vec!["HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"]).await;
        let body = Bytes::from(vec![b'z'; COALESCE_BODY * 3 + 7]);
        let post = Outgoing::new(&Method::POST, "/", NO_FIELDS, None, body.clone());
        exchange(&pool(), &post, addr).await;
        let seen = seen.lock().expect("lock").clone();
        assert!(
            seen[0].ends_with(&"z".repeat(body.len())),
            "{}",
            seen[0].len()
        );
    }

    #[tokio::test]
    async fn chunked_bodies_are_decoded_and_the_connection_reused() {
        let (addr, accepted, _) = raw_upstream(vec![
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
             5\r\nhello\r\n1;ext=\"x\"\r\n,\r\n6 ; e\r\n world\r\n0\r\nx-trailer: t\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        ])
        .await;
        let pool = pool();
        assert_eq!(
            &exchange(&pool, &get(addr), addr).await[..],
            b"hello, world"
        );
        assert_eq!(pool.idle_count(), 1);
        assert_eq!(&exchange(&pool, &get(addr), addr).await[..], b"ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn malformed_chunked_bodies_fail_and_close() {
        for answer in [
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n11111111111111111\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel<close>",
        ] {
            let (addr, _, _) = raw_upstream(vec![answer]).await;
            let pool = pool();
            let (_, body) = pool.send(addr, &get(addr), false).await.expect("head");
            assert!(body.collect().await.is_err(), "{answer:?}");
            assert_eq!(pool.idle_count(), 0, "{answer:?}");
        }
    }

    #[tokio::test]
    async fn bodies_framed_by_the_close_are_read_to_it_and_not_reused() {
        let (addr, accepted, _) = raw_upstream(vec![
            "HTTP/1.1 200 OK\r\n\r\nuntil the end<close>",
            "HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
        ])
        .await;
        let pool = pool();
        assert_eq!(
            &exchange(&pool, &get(addr), addr).await[..],
            b"until the end"
        );
        assert_eq!(pool.idle_count(), 0);
        // HTTP/1.0 without keep-alive, and `Connection: close`: not kept either.
        assert_eq!(&exchange(&pool, &get(addr), addr).await[..], b"ok");
        assert_eq!(pool.idle_count(), 0);
        assert_eq!(&exchange(&pool, &get(addr), addr).await[..], b"ok");
        assert_eq!(pool.idle_count(), 0);
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn responses_without_a_body_keep_the_connection() {
        let (addr, accepted, _) = raw_upstream(vec![
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\ncontent-length: 7\r\n\r\n",
            "HTTP/1.1 304 Not Modified\r\ncontent-length: 7\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n",
        ])
        .await;
        let pool = pool();
        let (head, body) = pool.send(addr, &get(addr), false).await.expect("204");
        assert_eq!(head.status, StatusCode::NO_CONTENT);
        assert!(body.is_end_stream());
        drop(body);
        assert_eq!(pool.idle_count(), 1);
        assert!(exchange(&pool, &get(addr), addr).await.is_empty());
        let head = Outgoing::new(&Method::HEAD, "/", NO_FIELDS, None, Bytes::new());
        let (head, body) = pool.send(addr, &head, false).await.expect("HEAD");
        let length: Vec<&[u8]> = head.values(b"content-length").collect();
        assert_eq!(length, [b"7"]);
        assert_eq!(body.size_hint().exact(), Some(0));
        drop(body);
        assert_eq!(pool.idle_count(), 1);
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn malformed_heads_are_failures() {
        for (answer, why) in [
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 2, 3\r\n\r\nok",
                "conflicting",
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
                "Content-Length",
            ),
            (
                "HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
                "malformed response",
            ),
            (
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
                "switched protocols unasked",
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-le<close>",
                "middle of the response head",
            ),
        ] {
            let (addr, _, _) = raw_upstream(vec![answer]).await;
            match pool().send(addr, &get(addr), false).await {
                Ok(_) => panic!("{answer:?} was accepted"),
                Err(err) => assert!(err.to_string().contains(why), "{answer:?}: {err}"),
            }
        }
    }

    #[tokio::test]
    async fn a_switch_of_protocols_asked_for_hands_the_connection_over() {
        let (addr, accepted, _) = raw_upstream(vec![
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\nearly",
        ])
        .await;
        let pool = pool();
        let (head, mut body) = pool
            .send(addr, &get(addr).upgrading(), false)
            .await
            .expect("101");
        assert_eq!(head.status, StatusCode::SWITCHING_PROTOCOLS);
        let (_stream, sent) = body.take_upgraded().expect("the connection");
        assert_eq!(&sent[..], b"early");
        assert!(body.take_upgraded().is_none(), "taken once");
        drop(body);
        assert_eq!(pool.idle_count(), 0, "never back in the pool");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_closed_before_answering_is_reported_as_such() {
        let (addr, _, _) = raw_upstream(vec!["<close>"]).await;
        match pool().send(addr, &get(addr), false).await {
            Ok(_) => panic!("answered"),
            Err(err) => assert!(matches!(err, UpstreamError::ClosedBeforeResponse), "{err}"),
        }
    }

    #[tokio::test]
    async fn an_idle_connection_the_instance_closed_is_not_used() {
        // The first answer closes the connection after a body that promised keep-alive.
        let (addr, accepted, _) = raw_upstream(vec![
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok<close>",
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nnew",
        ])
        .await;
        let pool = pool();
        exchange(&pool, &get(addr), addr).await;
        assert_eq!(pool.idle_count(), 1);
        // Let the close arrive and the runtime see it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(&exchange(&pool, &get(addr), addr).await[..], b"new");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_close_seen_before_the_body_was_taken_is_not_forgotten() {
        // The instance closes right after its response; the runtime sees the close before
        // the body is read and the connection goes idle.
        let (addr, accepted, _) = raw_upstream(vec![
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok<close>",
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nnew",
        ])
        .await;
        let pool = pool();
        let (_, body) = pool.send(addr, &get(addr), false).await.expect("response");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let body = body.collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"ok");
        assert_eq!(&exchange(&pool, &get(addr), addr).await[..], b"new");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn stray_bytes_after_an_idle_connection_settled_are_noticed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
            tokio::time::sleep(Duration::from_millis(30)).await;
            // Unasked: a second response nobody requested, on a connection left open.
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nstray")
                .await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let pool = pool();
        assert_eq!(&exchange(&pool, &get(addr), addr).await[..], b"ok");
        assert_eq!(pool.idle_count(), 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The stray response must not be taken for the answer to a new request: the
        // connection is dropped and a new one is refused (the listener accepted only once).
        assert!(pool.checkout(addr).is_none());
    }

    #[tokio::test]
    async fn bytes_after_the_body_keep_the_connection_out_of_the_pool() {
        let (addr, _, _) =
            raw_upstream(vec!["HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA"]).await;
        let pool = pool();
        assert_eq!(&exchange(&pool, &get(addr), addr).await[..], b"ok");
        assert_eq!(pool.idle_count(), 0);
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(chunk_size(b"1a"), Some(26));
        assert_eq!(chunk_size(b"1A;name=value"), Some(26));
        assert_eq!(chunk_size(b"0 ; x"), Some(0));
        assert_eq!(chunk_size(b"ffffffffffffffff"), Some(u64::MAX));
        for bad in [&b""[..], b"x", b"1 2", b"-1", b"11111111111111111", b";x"] {
            assert_eq!(chunk_size(bad), None, "{bad:?}");
        }
    }
}
