//! The gateway's HTTP/1.1 server as a client on the wire sees it: raw bytes written to a real
//! gateway over TCP on 127.0.0.1, and the answers read back byte for byte, so that nothing
//! between the test and the gateway normalizes either side.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use rollgate_gateway::GatewayConfig;
use support::{TestGateway, TestUpstream, backend, one_instance, table};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A guard against a hung test, not a timing assertion.
const PATIENCE: Duration = Duration::from_secs(20);

/// One response as read off the wire.
#[derive(Debug)]
struct Wire {
    status: u16,
    /// Field names in lower case, values as sent.
    fields: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Wire {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A client connection that keeps what it read past one response for the next.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        Client {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Reads more; false at the end of the stream.
    async fn more(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(PATIENCE, self.stream.read(&mut chunk))
            .await
            .expect("the gateway answers in time")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// The next response; `head_request` says it has no body whatever its fields say.
    async fn response(&mut self, head_request: bool) -> Wire {
        let (status, fields, len) = loop {
            let mut slots = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut slots);
            if let httparse::Status::Complete(len) = parsed.parse(&self.buf).expect("a response") {
                let fields: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                break (parsed.code.expect("status"), fields, len);
            }
            assert!(self.more().await, "closed before a whole head");
        };
        self.buf.drain(..len);
        let mut wire = Wire {
            status,
            fields,
            body: Vec::new(),
        };
        if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
            return wire;
        }
        if wire.field("transfer-encoding") == Some("chunked") {
            loop {
                let line_end = loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    assert!(self.more().await, "closed inside a chunk-size line");
                };
                let size = usize::from_str_radix(
                    std::str::from_utf8(&self.buf[..line_end]).expect("hex"),
                    16,
                )
                .expect("chunk size");
                while self.buf.len() < line_end + 2 + size + 2 {
                    assert!(self.more().await, "closed inside a chunk");
                }
                wire.body
                    .extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
                assert_eq!(&self.buf[line_end + 2 + size..][..2], b"\r\n");
                self.buf.drain(..line_end + 2 + size + 2);
                if size == 0 {
                    return wire;
                }
            }
        }
        match wire.field("content-length") {
            Some(len) => {
                let len: usize = len.parse().expect("length");
                while self.buf.len() < len {
                    assert!(self.more().await, "closed inside the body");
                }
                wire.body = self.buf.drain(..len).collect();
            }
            None => {
                while self.more().await {}
                wire.body = std::mem::take(&mut self.buf);
            }
        }
        wire
    }

    /// True when the gateway closes the connection without sending anything more.
    async fn closed(&mut self) -> bool {
        !self.more().await && self.buf.is_empty()
    }
}

async fn gateway_with(config: GatewayConfig) -> (TestGateway, TestUpstream) {
    let upstream = TestUpstream::start("blue").await;
    let gateway =
        TestGateway::serving(config, table("api", vec![backend(1, 1000, &[&upstream])])).await;
    (gateway, upstream)
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (gateway, _upstream) = gateway_with(GatewayConfig::default()).await;
    let mut client = Client::connect(gateway.addr).await;
    client
        .write(
            b"GET /1 HTTP/1.1\r\nhost: a\r\nx-request-id: first\r\n\r\n\
              POST /2 HTTP/1.1\r\nhost: a\r\nx-request-id: second\r\ncontent-length: 3\r\n\r\nabc\
              GET /3 HTTP/1.1\r\nhost: a\r\nx-request-id: third\r\n\r\n",
        )
        .await;
    for (id, body_len) in [("first", "0"), ("second", "3"), ("third", "0")] {
        let answer = client.response(false).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.field("x-request-id"), Some(id));
        assert_eq!(answer.field("x-seen-body-len"), Some(body_len));
        assert_eq!(answer.body, b"blue");
        assert!(answer.field("date").is_some(), "{answer:?}");
    }
    gateway.stop().await;
}

#[tokio::test]
async fn a_head_arriving_in_pieces_is_read_whole() {
    let (gateway, _upstream) = gateway_with(GatewayConfig::default()).await;
    let mut client = Client::connect(gateway.addr).await;
    let head = b"GET /pieces HTTP/1.1\r\nhost: a\r\nx-request-id: pieces\r\n\r\n";
    // Cut inside the request line, inside a field, and inside the final empty line.
    for piece in [
        &head[..7],
        &head[7..30],
        &head[30..head.len() - 1],
        &head[head.len() - 1..],
    ] {
        client.write(piece).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answer = client.response(false).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.field("x-request-id"), Some("pieces"));
    gateway.stop().await;
}

#[tokio::test]
async fn a_chunked_request_body_arrives_whole_and_the_connection_goes_on() {
    let (gateway, _upstream) = gateway_with(GatewayConfig::default()).await;
    let mut client = Client::connect(gateway.addr).await;
    client
        .write(
            b"POST /up HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n\
              5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: dropped\r\n\r\n",
        )
        .await;
    let answer = client.response(false).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.field("x-seen-body-len"), Some("11"));
    client
        .write(b"GET /again HTTP/1.1\r\nhost: a\r\n\r\n")
        .await;
    assert_eq!(client.response(false).await.status, 200);
    gateway.stop().await;
}

#[tokio::test]
async fn expect_100_continue_gets_the_interim_answer_before_the_body_is_sent() {
    let (gateway, _upstream) = gateway_with(GatewayConfig::default()).await;
    let mut client = Client::connect(gateway.addr).await;
    client
        .write(b"PUT /up HTTP/1.1\r\nhost: a\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n")
        .await;
    let interim = client.response(false).await;
    assert_eq!(interim.status, 100);
    client.write(b"hello").await;
    let answer = client.response(false).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.field("x-seen-body-len"), Some("5"));
    gateway.stop().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_without_asking_for_it() {
    let (gateway, _upstream) = gateway_with(GatewayConfig {
        max_body_bytes: 4,
        ..GatewayConfig::default()
    })
    .await;
    let mut client = Client::connect(gateway.addr).await;
    client
        .write(b"PUT /up HTTP/1.1\r\nhost: a\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n")
        .await;
    // No 100 Continue: the final answer comes first, and the connection closes (the body
    // that might still come is not read).
    let answer = client.response(false).await;
    assert_eq!(answer.status, 413, "{answer:?}");
    assert_eq!(answer.field("connection"), Some("close"));
    assert!(client.closed().await);
    drop(client);
    gateway.stop().await;
}

#[tokio::test]
async fn a_client_still_sending_a_refused_body_reads_the_answer_whole() {
    let (gateway, _upstream) = gateway_with(GatewayConfig {
        max_body_bytes: 1024,
        ..GatewayConfig::default()
    })
    .await;
    let mut client = Client::connect(gateway.addr).await;
    // Larger than what the sockets' buffers take in: the write completes only if the gateway
    // reads it.
    let len = 12 * 1024 * 1024;
    let mut request =
        format!("POST /up HTTP/1.1\r\nhost: a\r\ncontent-length: {len}\r\n\r\n").into_bytes();
    request.resize(request.len() + len, b'z');
    // The gateway answers 413 on the head and closes; the body still on its way is read and
    // dropped meanwhile, so neither the write nor the answer is cut off by a reset.
    client.write(&request).await;
    let answer = client.response(false).await;
    assert_eq!(answer.status, 413, "{answer:?}");
    assert!(client.closed().await);
    drop(client);
    gateway.stop().await;
}

#[tokio::test]
async fn ambiguous_framing_and_malformed_heads_get_400_and_the_connection_closes() {
    let (gateway, _upstream) = gateway_with(GatewayConfig::default()).await;
    for request in [
        // The request smuggling patterns: a front end and a back end could each pick another
        // of the two framings, or another of the two lengths.
        &b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 4\r\ncontent-length: 5\r\n\r\nabcde",
        b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked, identity\r\n\r\n",
        b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: xchunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 0x10\r\n\r\n",
        // Obsolete line folding, a bad name, a target that is no path.
        b"GET / HTTP/1.1\r\nhost: a\r\nx-folded: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: a\r\nbad name: 1\r\n\r\n",
        b"GET example.com HTTP/1.1\r\nhost: a\r\n\r\n",
        // Two Hosts: routing and the app could each read another.
        b"GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ] {
        let mut client = Client::connect(gateway.addr).await;
        client.write(request).await;
        let answer = client.response(false).await;
        let shown = String::from_utf8_lossy(request);
        assert_eq!(answer.status, 400, "{shown}");
        assert_eq!(answer.field("connection"), Some("close"), "{shown}");
        assert!(client.closed().await, "{shown}");
    }
    // A malformed chunked body is found as it is read: 400, and closed.
    let mut client = Client::connect(gateway.addr).await;
    client
        .write(b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n")
        .await;
    let answer = client.response(false).await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(client.closed().await);
    gateway.stop().await;
}

#[tokio::test]
async fn too_many_fields_for_the_connection_is_a_bare_431() {
    let (gateway, _upstream) = gateway_with(GatewayConfig::default()).await;
    let mut request = b"GET / HTTP/1.1\r\nhost: a\r\n".to_vec();
    for i in 0..120 {
        request.extend_from_slice(format!("x-f{i}: 1\r\n").as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    let mut client = Client::connect(gateway.addr).await;
    client.write(&request).await;
    let answer = client.response(false).await;
    assert_eq!(answer.status, 431);
    assert!(client.closed().await);
    gateway.stop().await;
}

#[tokio::test]
async fn head_answers_carry_the_length_and_no_body_and_the_connection_goes_on() {
    let (gateway, _upstream) = gateway_with(GatewayConfig::default()).await;
    let mut client = Client::connect(gateway.addr).await;
    // From the instance, and the gateway's own (no route for that host).
    client.write(b"HEAD /x HTTP/1.1\r\nhost: a\r\n\r\n").await;
    let answer = client.response(true).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.field("content-length"), Some("4"));
    client.write(b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n").await;
    assert_eq!(client.response(false).await.body, b"blue");
    gateway.routes.set(rollgate_gateway::RouteTable::default());
    client.write(b"HEAD /x HTTP/1.1\r\nhost: a\r\n\r\n").await;
    let answer = client.response(true).await;
    assert_eq!(answer.status, 404);
    let length: usize = answer
        .field("content-length")
        .and_then(|l| l.parse().ok())
        .expect("length of the JSON body");
    assert!(length > 0);
    client.write(b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n").await;
    let answer = client.response(false).await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.body.len(), length);
    gateway.stop().await;
}

/// An instance on a port the OS chose, serving each connection it accepts with `serve`.
async fn instance<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    addr
}

/// An instance answering every request with a chunked body of two chunks.
async fn chunked_instance() -> SocketAddr {
    instance(move |mut stream| async move {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                buf.drain(..end + 4);
                let answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: keep-alive, x-hop\r\nx-hop: 1\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
                if stream.write_all(answer).await.is_err() {
                    return;
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_body_without_length_is_chunked_for_http_1_1_and_ends_with_the_close_for_1_0() {
    let addr = chunked_instance().await;
    let gateway = TestGateway::serving(
        // Longer than the client's patience: the body's end must be the gateway's close.
        GatewayConfig {
            header_read_timeout: PATIENCE * 2,
            ..GatewayConfig::default()
        },
        one_instance("chunked", addr),
    )
    .await;
    let mut client = Client::connect(gateway.addr).await;
    client.write(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await;
    let answer = client.response(false).await;
    assert_eq!(answer.field("transfer-encoding"), Some("chunked"));
    assert_eq!(answer.body, b"hello world");
    // Hop-by-hop fields of the instance's connection stay behind.
    assert_eq!(answer.field("x-hop"), None, "{answer:?}");
    assert_eq!(answer.field("connection"), None, "{answer:?}");
    client.write(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await;
    assert_eq!(client.response(false).await.body, b"hello world");

    let mut old = Client::connect(gateway.addr).await;
    old.write(b"GET / HTTP/1.0\r\nhost: a\r\nconnection: keep-alive\r\n\r\n")
        .await;
    let answer = old.response(false).await;
    assert_eq!(answer.field("transfer-encoding"), None, "{answer:?}");
    assert_eq!(answer.field("connection"), Some("close"));
    assert_eq!(answer.body, b"hello world");
    gateway.stop().await;
}

/// An instance answering every request with a body of `len` bytes, written as fast as the
/// gateway takes them.
async fn large_instance(len: usize) -> SocketAddr {
    instance(move |mut stream| async move {
        let mut head = [0u8; 4096];
        if stream.read(&mut head).await.unwrap_or(0) == 0 {
            return;
        }
        let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n");
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        let chunk = vec![b'x'; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(chunk.len());
            if stream.write_all(&chunk[..n]).await.is_err() {
                return;
            }
            left -= n;
        }
    })
    .await
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_after_the_send_timeout() {
    let len = 64 * 1024 * 1024;
    let addr = large_instance(len).await;
    let gateway = TestGateway::serving(
        GatewayConfig {
            send_timeout: Duration::from_millis(300),
            ..GatewayConfig::default()
        },
        one_instance("large", addr),
    )
    .await;
    let mut client = Client::connect(gateway.addr).await;
    client
        .write(b"GET /large HTTP/1.1\r\nhost: a\r\n\r\n")
        .await;
    // Reads nothing for longer than the send timeout, with far more on its way than the
    // sockets' buffers hold: the gateway gives up on it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut received = 0;
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        match tokio::time::timeout(PATIENCE, client.stream.read(&mut chunk))
            .await
            .expect("the gateway closes in time")
        {
            Ok(0) | Err(_) => break,
            Ok(n) => received += n,
        }
    }
    assert!(received > 0 && received < len, "{received} of {len} bytes");
    drop(client);
    // A client that reads gets the whole body.
    let mut reader = Client::connect(gateway.addr).await;
    reader
        .write(b"GET /large HTTP/1.1\r\nhost: a\r\n\r\n")
        .await;
    assert_eq!(reader.response(false).await.body.len(), len);
    gateway.stop().await;
}

#[tokio::test]
async fn an_http_1_0_client_asking_for_keep_alive_keeps_its_connection() {
    let (gateway, _upstream) = gateway_with(GatewayConfig::default()).await;
    let mut client = Client::connect(gateway.addr).await;
    for _ in 0..2 {
        client
            .write(b"GET / HTTP/1.0\r\nhost: a\r\nconnection: keep-alive\r\n\r\n")
            .await;
        let answer = client.response(false).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.field("connection"), Some("keep-alive"));
    }
    gateway.stop().await;
}

#[tokio::test]
async fn a_kept_alive_connection_idle_past_the_header_timeout_is_closed() {
    let (gateway, _upstream) = gateway_with(GatewayConfig {
        header_read_timeout: Duration::from_millis(300),
        ..GatewayConfig::default()
    })
    .await;
    let mut client = Client::connect(gateway.addr).await;
    client.write(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await;
    assert_eq!(client.response(false).await.status, 200);
    // Nothing more: the gateway closes the connection without an answer.
    assert!(client.closed().await);
    gateway.stop().await;
}

#[tokio::test]
async fn stopping_closes_idle_connections_and_lets_a_request_in_flight_finish() {
    let (gateway, _upstream) = gateway_with(GatewayConfig::default()).await;
    let mut idle = Client::connect(gateway.addr).await;
    idle.write(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n").await;
    assert_eq!(idle.response(false).await.status, 200);
    let mut busy = Client::connect(gateway.addr).await;
    busy.write(b"GET / HTTP/1.1\r\nhost: a\r\nx-test-sleep-ms: 300\r\n\r\n")
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopped = tokio::spawn(gateway.stop());
    assert!(idle.closed().await);
    let answer = busy.response(false).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.field("connection"), Some("close"));
    assert!(busy.closed().await);
    stopped.await.expect("stopped");
}

/// An instance that answers every request with `101 Switching Protocols` (naming in
/// `x-seen-upgrade` the `Upgrade` and `Connection` it was sent), says hello in the new
/// protocol, and then echoes what it reads.
async fn switching_instance() -> SocketAddr {
    instance(move |mut stream| async move {
        let mut head = Vec::new();
        let mut chunk = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let seen = format!(
            "{}/{}",
            head.contains("\r\nupgrade: websocket\r\n"),
            head.contains("\r\nconnection: upgrade\r\n")
        );
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nx-seen-upgrade: {seen}\r\n\r\nhello"
        );
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if stream.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_websocket_handshake_becomes_a_tunnel_to_the_instance() {
    let addr = switching_instance().await;
    let gateway = TestGateway::serving(GatewayConfig::default(), one_instance("ws", addr)).await;
    let mut client = Client::connect(gateway.addr).await;
    client
        .write(
            b"GET /chat HTTP/1.1\r\nhost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await;
    let answer = client.response(false).await;
    assert_eq!(answer.status, 101, "{answer:?}");
    assert_eq!(answer.field("x-seen-upgrade"), Some("true/true"));
    assert_eq!(answer.field("upgrade"), Some("websocket"));
    assert_eq!(answer.field("connection"), Some("upgrade"));
    assert_eq!(
        answer.field("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert!(answer.field("x-request-id").is_some());
    // What the instance sent right after its answer, then an echo of what the client sends.
    while client.buf.len() < 5 {
        assert!(client.more().await);
    }
    assert_eq!(client.buf.drain(..5).collect::<Vec<u8>>(), b"hello");
    for message in [&b"ping"[..], b"\x81\x05frame", b"GET / HTTP/1.1\r\n\r\n"] {
        client.write(message).await;
        while client.buf.len() < message.len() {
            assert!(client.more().await, "tunnel closed");
        }
        assert_eq!(
            client.buf.drain(..message.len()).collect::<Vec<u8>>(),
            message
        );
    }
    // The client closing its end closes the tunnel.
    client.stream.shutdown().await.expect("shutdown");
    assert!(client.closed().await);
    drop(client);

    // An instance switching protocols when it was not asked to is a failed request.
    let mut plain = Client::connect(gateway.addr).await;
    plain.write(b"GET /chat HTTP/1.1\r\nhost: a\r\n\r\n").await;
    assert_eq!(plain.response(false).await.status, 502);
    gateway.stop().await;
}
