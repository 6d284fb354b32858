//! Blocking HTTP for tests: one shared tokio runtime and reqwest client, requests built up
//! and sent, answers read whole or event by event.

use std::collections::VecDeque;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::REQUEST_TIMEOUT;

static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("test runtime")
});

static HTTP: LazyLock<reqwest::Client> = LazyLock::new(|| {
    reqwest::Client::builder()
        .no_proxy()
        // A fresh connection per request: no pooled socket outlives a gateway under test.
        .pool_max_idle_per_host(0)
        .build()
        .expect("reqwest client")
});

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    RT.block_on(f)
}

/// One HTTP request, built up and then sent.
pub struct Req {
    method: reqwest::Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    chunked: bool,
    timeout: Duration,
}

impl Req {
    pub fn new(method: reqwest::Method, url: &str) -> Req {
        Req {
            method,
            url: url.to_string(),
            headers: Vec::new(),
            body: None,
            chunked: false,
            timeout: REQUEST_TIMEOUT,
        }
    }

    /// Sets a header, replacing one of the same name.
    pub fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn without_header(mut self, name: &str) -> Req {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self
    }

    pub fn token(self, token: &str) -> Req {
        self.header("authorization", &format!("Bearer {token}"))
    }

    pub fn session(self, id: &str) -> Req {
        self.header("mcp-session-id", id)
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Req {
        self.body = Some(body.into());
        self
    }

    pub fn json(self, v: &Value) -> Req {
        self.body(v.to_string())
    }

    /// Sends the body as a stream, without `Content-Length`.
    pub fn chunked(mut self) -> Req {
        self.chunked = true;
        self
    }

    pub fn timeout(mut self, t: Duration) -> Req {
        self.timeout = t;
        self
    }

    fn build(self) -> reqwest::RequestBuilder {
        let mut rb = HTTP.request(self.method, &self.url).timeout(self.timeout);
        for (k, v) in &self.headers {
            rb = rb.header(k.as_str(), v.as_str());
        }
        if let Some(body) = self.body {
            if self.chunked {
                let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                    body.chunks(1024).map(|c| Ok(c.to_vec())).collect();
                rb = rb.body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                    chunks,
                )));
            } else {
                rb = rb.body(body);
            }
        }
        rb
    }

    async fn send_async(self) -> Result<Resp, String> {
        let url = self.url.clone();
        let response = self
            .build()
            .send()
            .await
            .map_err(|e| format!("{url}: {e:?}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("{url}: reading the body: {e:?}"))?
            .to_vec();
        Ok(Resp {
            status,
            headers,
            body,
        })
    }

    /// Sends and reads the whole answer; panics on a transport error.
    pub fn send(self) -> Resp {
        block_on(self.send_async()).unwrap_or_else(|e| panic!("HTTP request failed: {e}"))
    }

    /// Sends; a transport error is returned, not a panic.
    pub fn try_send(self) -> Result<Resp, String> {
        block_on(self.send_async())
    }

    /// Sends in the background; `InFlight::wait` gets the answer.
    pub fn spawn(self) -> InFlight {
        InFlight(RT.spawn(self.send_async()))
    }

    /// Sends and returns the answer's headers with a reader over its event stream.
    pub fn stream(self) -> SseReader {
        // Built inside the runtime: reqwest arms its timeout when the request is sent.
        let response =
            block_on(async move { self.build().send().await }).expect("HTTP request failed");
        SseReader {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            response,
            buf: Vec::new(),
            ready: VecDeque::new(),
            ended: false,
        }
    }
}

pub struct InFlight(tokio::task::JoinHandle<Result<Resp, String>>);

impl InFlight {
    pub fn wait(self) -> Result<Resp, String> {
        block_on(self.0).expect("request task")
    }

    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

/// An HTTP answer, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap_or("<non-ascii>").to_string())
    }

    pub fn is_sse(&self) -> bool {
        self.header("content-type")
            .is_some_and(|c| c.starts_with("text/event-stream"))
    }

    /// The JSON-RPC messages of the answer: the events of an SSE body, or the JSON body.
    pub fn messages(&self) -> Vec<Value> {
        if self.is_sse() {
            let mut buf = self.body.clone();
            let mut out = VecDeque::new();
            parse_sse(&mut buf, &mut out, true);
            return out.into();
        }
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Vec::new();
        }
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(v) => vec![v],
            Err(e) => panic!(
                "answer is not JSON ({e}): status {} {}",
                self.status,
                self.text()
            ),
        }
    }

    /// The JSON-RPC response (result or error) in the answer; panics when there is none.
    pub fn response(&self) -> Value {
        self.messages()
            .into_iter()
            .rfind(is_response)
            .unwrap_or_else(|| {
                panic!(
                    "no JSON-RPC response in the answer: status {} {}",
                    self.status,
                    self.text()
                )
            })
    }

    /// The JSON text of the JSON-RPC response in the answer, as written: the body, or the data
    /// of the first SSE event that is a response; panics when there is none.
    pub fn response_text(&self) -> String {
        if !self.is_sse() {
            return self.text();
        }
        let text = self.text().replace("\r\n", "\n");
        text.split("\n\n")
            .map(|event| {
                event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .find(|data| serde_json::from_str::<Value>(data).is_ok_and(|m| is_response(&m)))
            .unwrap_or_else(|| panic!("no JSON-RPC response in the SSE answer: {text}"))
    }

    /// `error.code` of the JSON-RPC response, if it is an error.
    pub fn error_code(&self) -> Option<i64> {
        self.response()["error"]["code"].as_i64()
    }
}

pub fn is_response(m: &Value) -> bool {
    m.get("id").is_some() && (m.get("result").is_some() || m.get("error").is_some())
}

/// Moves complete SSE events from `buf` into `out` as JSON messages (data-less events skipped).
fn parse_sse(buf: &mut Vec<u8>, out: &mut VecDeque<Value>, at_end: bool) {
    let text = String::from_utf8_lossy(buf).replace("\r\n", "\n");
    let mut rest = text.as_str();
    let mut consumed_all = true;
    loop {
        let (event, after) = match rest.find("\n\n") {
            Some(i) => (&rest[..i], &rest[i + 2..]),
            None if at_end && !rest.trim().is_empty() => (rest, ""),
            None => {
                consumed_all = rest.is_empty();
                break;
            }
        };
        let data: Vec<&str> = event
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        let data = data.join("\n");
        if !data.trim().is_empty() {
            match serde_json::from_str(&data) {
                Ok(v) => out.push_back(v),
                Err(e) => panic!("SSE event data is not JSON ({e}): {data}"),
            }
        }
        rest = after;
        if rest.is_empty() {
            break;
        }
    }
    *buf = if consumed_all {
        Vec::new()
    } else {
        rest.as_bytes().to_vec()
    };
}

/// Reads an SSE answer event by event, each read bounded in time.
pub struct SseReader {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    response: reqwest::Response,
    buf: Vec<u8>,
    ready: VecDeque<Value>,
    ended: bool,
}

/// What waiting for the next event gave.
#[derive(Debug)]
pub enum Next {
    Message(Value),
    /// The stream ended (cleanly or not) without more messages.
    End(Option<String>),
    /// Nothing arrived in time; the stream is still open.
    TimedOut,
}

impl SseReader {
    pub fn next(&mut self, wait: Duration) -> Next {
        let end = Instant::now() + wait;
        loop {
            if let Some(m) = self.ready.pop_front() {
                return Next::Message(m);
            }
            if self.ended {
                return Next::End(None);
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Next::TimedOut;
            }
            match block_on(async { tokio::time::timeout(left, self.response.chunk()).await }) {
                Err(_) => return Next::TimedOut,
                Ok(Ok(Some(chunk))) => {
                    self.buf.extend_from_slice(&chunk);
                    parse_sse(&mut self.buf, &mut self.ready, false);
                }
                Ok(Ok(None)) => {
                    self.ended = true;
                    parse_sse(&mut self.buf, &mut self.ready, true);
                }
                Ok(Err(e)) => {
                    self.ended = true;
                    parse_sse(&mut self.buf, &mut self.ready, true);
                    if self.ready.is_empty() {
                        return Next::End(Some(format!("{e:?}")));
                    }
                }
            }
        }
    }
}
