//! A body over `max_body_bytes` gets its 413 also when the client writes the whole body before
//! it reads the answer (issue 25, point 7), as Python's urllib and many HTTP libraries do.
//!
//! Answered with the body unread, the connection closed with data in the gateway's receive
//! buffer, and the kernel answered with RST: such a client saw a broken pipe or a reset
//! instead of the 413. The gateway now reads the rest of an over-limit body (up to a bound)
//! before it answers, and closes the connection after the answer.
//!
//! The clients here are a raw TCP socket on 127.0.0.1 (Content-Length, then chunked), Python's
//! urllib, and reqwest over h2c, where the stream is reset after the answer instead.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const TOK: &str = "tg-e2e-large-body-5c81d0";
/// The default `max_body_bytes`.
const DEFAULT_LIMIT: usize = 4 << 20;
/// What the clients send: four times the default limit.
const BIG: usize = 16 << 20;

/// A gateway with the recorder as `rec` and a grant for it; `toml` goes first (top-level keys).
fn gateway(toml: &str) -> Gateway {
    let dir = tempfile::tempdir().expect("temp dir");
    let record = dir.path().join("rec.jsonl");
    let toml = format!(
        "{toml}\n{}{}",
        recorder_server_toml("rec", &record, &[]),
        grant_toml("a", "rec", "TOK"),
    );
    Gateway::start_in(dir, &toml, &[("TOK", TOK)])
}

/// A JSON-RPC `tools/call` of `size` bytes in all, padded with spaces inside the object.
fn call_of_size(size: usize) -> Vec<u8> {
    let head = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}"#;
    let mut body = head.to_vec();
    body.resize(size - 1, b' ');
    body.push(b'}');
    body
}

/// The request head of a POST to `/mcp/rec`, with `extra` header lines (each ending in CRLF).
fn head(gw: &Gateway, extra: &str) -> String {
    format!(
        "POST /mcp/rec HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nAuthorization: Bearer {TOK}\r\n\
         Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n{extra}\r\n",
        gw.port
    )
}

fn connect(gw: &Gateway) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", gw.port)).expect("connect to the gateway");
    s.set_read_timeout(Some(REQUEST_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(REQUEST_TIMEOUT)).unwrap();
    s
}

/// One HTTP/1.1 answer read off a raw socket.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Header names lower case.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Asserts a 413 with the JSON-RPC error the gateway gives for it.
    fn assert_413(&self, case: &str) {
        assert_eq!(self.status, 413, "{case}: {self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{case}: {self:?}"
        );
        let v: Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{case}: the 413's body is not JSON ({e}): {self:?}"));
        assert_eq!(v["jsonrpc"], "2.0", "{case}: {v}");
        assert_eq!(v["error"]["code"], -32600, "{case}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("Payload Too Large"),
            "{case}: error message {message:?}"
        );
    }
}

/// Reads one answer (head, then a Content-Length body), failing the test on a reset.
fn read_answer(s: &mut TcpStream, case: &str) -> Answer {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        match s.read(&mut chunk) {
            Ok(0) => panic!(
                "{case}: the connection ended before an answer; read so far: {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!(
                "{case}: reading the answer failed ({e}); read so far: {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{case}: bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("{case}: no Content-Length in {head:?}"));
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        match s.read(&mut chunk) {
            Ok(0) => panic!(
                "{case}: the body ended early: {:?}",
                String::from_utf8_lossy(&body)
            ),
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("{case}: reading the body failed ({e})"),
        }
    }
    Answer {
        status,
        headers,
        body,
    }
}

/// After an answer with `Connection: close`: the gateway ends the connection with a FIN (a read
/// gives 0 bytes), not a reset.
fn assert_closed_cleanly(s: &mut TcpStream, case: &str) {
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => assert!(
            rest.is_empty(),
            "{case}: bytes after the answer: {:?}",
            String::from_utf8_lossy(&rest)
        ),
        Err(e) => panic!("{case}: the connection was not closed cleanly: {e}"),
    }
}

/// Writes the whole request, then reads; a write that fails is the bug this file is about.
fn write_all_then_read(gw: &Gateway, request: &[u8], case: &str) -> (Answer, TcpStream) {
    let mut s = connect(gw);
    if let Err(e) = s.write_all(request) {
        panic!(
            "{case}: writing the {} bytes of the request failed ({e}): the gateway closed the \
             connection with the body unread",
            request.len()
        );
    }
    let answer = read_answer(&mut s, case);
    (answer, s)
}

fn chunked(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / chunk * 12 + 16);
    for c in body.chunks(chunk) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[test]
fn a_client_that_writes_the_whole_body_first_reads_the_413() {
    let gw = gateway("");
    let body = call_of_size(BIG);

    let case = "16 MiB with Content-Length, written whole before reading";
    let mut request = head(&gw, &format!("Content-Length: {}\r\n", body.len())).into_bytes();
    request.extend_from_slice(&body);
    let (answer, mut s) = write_all_then_read(&gw, &request, case);
    answer.assert_413(case);
    assert_eq!(answer.header("connection"), Some("close"), "{case}");
    assert_closed_cleanly(&mut s, case);

    let case = "16 MiB chunked, written whole before reading";
    let mut request = head(&gw, "Transfer-Encoding: chunked\r\n").into_bytes();
    request.extend_from_slice(&chunked(&body, 64 << 10));
    let (answer, mut s) = write_all_then_read(&gw, &request, case);
    answer.assert_413(case);
    assert_eq!(answer.header("connection"), Some("close"), "{case}");
    assert_closed_cleanly(&mut s, case);

    // Just over the limit, the common mistake, both ways.
    let body = call_of_size(DEFAULT_LIMIT + 1);
    let case = "limit + 1 with Content-Length";
    let mut request = head(&gw, &format!("Content-Length: {}\r\n", body.len())).into_bytes();
    request.extend_from_slice(&body);
    write_all_then_read(&gw, &request, case).0.assert_413(case);
    let case = "limit + 1 chunked";
    let mut request = head(&gw, "Transfer-Encoding: chunked\r\n").into_bytes();
    request.extend_from_slice(&chunked(&body, 16 << 10));
    write_all_then_read(&gw, &request, case).0.assert_413(case);
}

/// Without the fix, urllib raised `BrokenPipeError` or `ConnectionResetError` from its send.
#[test]
fn python_urllib_gets_http_error_413() {
    let gw = gateway("");
    let script = r#"
import json, sys, urllib.request, urllib.error
url, token, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
head = b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{}}'
body = head + b" " * (size - len(head) - 1) + b"}"
req = urllib.request.Request(url, data=body, method="POST", headers={
    "Authorization": "Bearer " + token,
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
})
try:
    urllib.request.urlopen(req, timeout=30)
    print("no error")
except urllib.error.HTTPError as e:
    print(json.dumps({"status": e.code, "body": e.read().decode()}))
except Exception as e:
    print("transport error: " + repr(e))
"#;
    let out = Command::new(python())
        .args(["-c", script, &gw.mcp_url("rec"), TOK, &BIG.to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python3 failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|_| panic!("urllib did not get an HTTPError: {stdout}"));
    assert_eq!(v["status"], 413, "{v}");
    let error: Value = serde_json::from_str(v["body"].as_str().unwrap()).expect("JSON body");
    assert_eq!(error["error"]["code"], -32600, "{error}");
}

/// A client that waits for `100 Continue` has sent none of the body: it gets the 413 at once,
/// and no invitation to send the body.
#[test]
fn a_client_expecting_100_continue_gets_the_413_without_it() {
    let gw = gateway("");
    let case = "Expect: 100-continue, 16 MiB declared";
    let mut s = connect(&gw);
    let request = head(
        &gw,
        &format!("Content-Length: {BIG}\r\nExpect: 100-continue\r\n"),
    );
    s.write_all(request.as_bytes()).expect("write the head");
    let answer = read_answer(&mut s, case);
    answer.assert_413(case);
    assert_closed_cleanly(&mut s, case);
}

/// Past the bound (the limit plus 64 MiB), the gateway does not wait for the body: a client
/// that declares 1 GiB gets its 413 at once (were it read, the answer would take 10 s).
#[test]
fn a_body_past_the_bound_is_answered_at_once() {
    let gw = gateway("");
    let case = "1 GiB declared, none of it sent";
    let mut s = connect(&gw);
    let request = head(&gw, &format!("Content-Length: {}\r\n", 1u64 << 30));
    s.write_all(request.as_bytes()).expect("write the head");
    let start = Instant::now();
    let answer = read_answer(&mut s, case);
    answer.assert_413(case);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{case}: the answer took {:?}",
        start.elapsed()
    );
}

/// A small over-limit body on a keep-alive connection: the 413 says `Connection: close`, the
/// gateway then closes the connection cleanly, and the client's next request, on a new
/// connection, goes through.
#[test]
fn after_a_small_over_limit_body_the_connection_closes_cleanly() {
    let limit = 4096;
    let gw = gateway(&format!("max_body_bytes = {limit}\n"));
    for (case, chunk) in [
        ("8 KiB with Content-Length on keep-alive", None),
        ("8 KiB chunked on keep-alive", Some(1024)),
    ] {
        let body = call_of_size(2 * limit);
        let mut request = match chunk {
            None => head(
                &gw,
                &format!(
                    "Connection: keep-alive\r\nContent-Length: {}\r\n",
                    body.len()
                ),
            )
            .into_bytes(),
            Some(_) => head(
                &gw,
                "Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n",
            )
            .into_bytes(),
        };
        match chunk {
            None => request.extend_from_slice(&body),
            Some(c) => request.extend_from_slice(&chunked(&body, c)),
        }
        let (answer, mut s) = write_all_then_read(&gw, &request, case);
        answer.assert_413(case);
        assert_eq!(answer.header("connection"), Some("close"), "{case}");
        assert_closed_cleanly(&mut s, case);
    }
    // The next request, on a new connection.
    let s = McpSession::open(&gw, "rec", Some(TOK));
    let r = s
        .post()
        .json(&serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}))
        .send();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.response()["result"].is_object(), "{r:?}");
}

/// h2c: the answer goes out and the stream is reset with NO_ERROR (RFC 9113, 8.1), which asks
/// the client to stop sending without losing the answer; the client gets the 413 with its body.
#[test]
fn over_h2c_the_client_gets_the_413() {
    let gw = gateway("");
    let client = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .expect("h2c client");
    let url = gw.mcp_url("rec");
    for (case, stream) in [("h2c, 16 MiB", false), ("h2c, 16 MiB streamed", true)] {
        let body = call_of_size(BIG);
        let r = block_on(async {
            let body = if stream {
                let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                    body.chunks(64 << 10).map(|c| Ok(c.to_vec())).collect();
                reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
            } else {
                reqwest::Body::from(body)
            };
            let r = client
                .post(&url)
                .timeout(REQUEST_TIMEOUT)
                .bearer_auth(TOK)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .body(body)
                .send()
                .await?;
            let version = r.version();
            let status = r.status().as_u16();
            let body = r.bytes().await?;
            Ok::<_, reqwest::Error>((version, status, body))
        });
        let (version, status, body) = r.unwrap_or_else(|e| panic!("{case}: {e:?}"));
        assert_eq!(version, reqwest::Version::HTTP_2, "{case}");
        assert_eq!(status, 413, "{case}: {}", String::from_utf8_lossy(&body));
        let v: Value = serde_json::from_slice(&body).expect("JSON body");
        assert_eq!(v["error"]["code"], -32600, "{case}: {v}");
    }
}
