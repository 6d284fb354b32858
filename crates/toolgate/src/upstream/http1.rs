//! Plain-HTTP (`http://`) upstream connections, driven by the calls that use them.
//!
//! hyper-util's pooled client runs every connection as a task of its own and passes each
//! request and each answer to it over channels, with the pool's key hashing and bookkeeping
//! around them: on every call, a wake-up of the connection's task to send and another of the
//! call's task to answer. The gateway's runtimes are one thread each, so none of that buys
//! anything here. Each thread keeps its own idle HTTP/1 connections (hyper's connection state
//! machine, `hyper::client::conn::http1`, so the protocol is still hyper's), and the call that
//! takes one polls it itself: beside its request, then inside the answer's body, until the
//! answer has been read; then the connection goes back to the pool of the thread it is on.
//! Measured on `bench/src/bin/bare_proxy.rs` with each client (callgrind, one session):
//! 65,262 instructions per call with hyper-util's, 56,150 with this.
//!
//! `https://` servers keep hyper-util's client: TLS, and HTTP/2 where the server offers it.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{Builder, Connection, SendRequest};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use thread_local::ThreadLocal;

use super::http::ConnectTimeout;

/// How long a connection may sit idle in a pool before it is closed (hyper-util's default).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// How often idle connections are looked over (`sweep`).
const SWEEP_EVERY: Duration = Duration::from_secs(30);

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Each thread's idle connections to one server, the most recently used last.
type IdleSets = ThreadLocal<Mutex<Vec<Idle>>>;

/// The connections to one plain-HTTP server.
pub struct Pool {
    connector: ConnectTimeout<HttpConnector>,
    /// The server's URI, for the connector (host and port).
    target: http::Uri,
    idle: Arc<IdleSets>,
    /// Whether the task that sweeps the idle connections has been started.
    sweeping: std::sync::atomic::AtomicBool,
}

struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

impl Idle {
    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.since) > IDLE_TIMEOUT
    }
}

/// One HTTP/1 connection: the side that sends requests, and hyper's state machine that does
/// the connection's I/O whenever it is polled. Boxed where it is kept: hyper's state is a few
/// hundred bytes, and a call moves its connection from the pool to its answer and back.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: Connection<TokioIo<crate::gather::Gathered>, Full<Bytes>>,
    /// The driver has finished (the connection closed or failed): it is not polled again.
    ended: bool,
    /// The idle set (its address) of the thread that opened the connection on a
    /// single-threaded runtime, the only one it goes back to: its socket is registered with
    /// that thread's runtime, the only one that drives it. `ANYWHERE` for a connection opened
    /// on a work-stealing runtime, whose threads share one I/O driver and whose tasks move
    /// between them.
    home: usize,
}

impl Conn {
    /// Lets the connection do the I/O it can; false once it has ended.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.ended && Pin::new(&mut self.driver).poll(cx).is_ready() {
            self.ended = true;
        }
        !self.ended
    }

    /// Whether the connection can take another request (the answer before was read to its
    /// end, and neither side asked to close).
    fn reusable(&mut self, cx: &mut Context<'_>) -> bool {
        self.drive(cx) && self.sender.is_ready()
    }
}

impl Pool {
    pub fn new(connector: ConnectTimeout<HttpConnector>, target: http::Uri) -> Pool {
        Pool {
            connector,
            target,
            idle: Arc::default(),
            sweeping: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Sends the request on an idle connection of this thread's, or a new one. The request's
    /// URI is sent as it is (origin-form) and it must carry `Host`.
    pub async fn send(
        &self,
        mut request: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<DrivenBody>, Error> {
        loop {
            let (mut conn, reused) = match self.checkout() {
                Some(conn) => (conn, true),
                None => (self.connect().await?, false),
            };
            let sent = conn.sender.try_send_request(request);
            let mut sent = pin!(sent);
            let taken = poll_fn(|cx| {
                let alive = conn.drive(cx);
                match sent.as_mut().poll(cx) {
                    Poll::Ready(answer) => Poll::Ready(Some(answer)),
                    Poll::Pending if !alive => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await;
            let answered = |response: http::Response<Incoming>, conn| {
                response.map(|body| DrivenBody {
                    body: Some(body),
                    conn,
                    idle: self.idle.clone(),
                })
            };
            let mut e = match taken {
                Some(Ok(response)) => return Ok(answered(response, Some(conn))),
                Some(Err(e)) => e,
                // The connection ended before it took the request up (the server had closed it
                // while it idled): dropping it hands the request back.
                None => {
                    drop(conn);
                    match sent.await {
                        Ok(response) => return Ok(answered(response, None)),
                        Err(e) => e,
                    }
                }
            };
            // A request that was not written goes out once more on a new connection, as
            // hyper-util does; one that was written is not sent again: the server may have
            // acted on it.
            match e.take_message() {
                Some(unsent) if reused => request = unsent,
                _ => return Err(e.into_error().into()),
            }
        }
    }

    /// This thread's most recently used idle connection, if it has one.
    ///
    /// Not polled here (a poll per call costs more than the rare retry it would save): a
    /// connection the server closed while it idled shows it at the first poll after the
    /// request was queued, and hyper then hands the request back unsent.
    fn checkout(&self) -> Option<Box<Conn>> {
        let mut idle = self.idle.get()?.lock().expect("idle connections");
        let newest = idle.pop()?;
        if newest.expired(Instant::now()) {
            // The rest idled longer still.
            idle.clear();
            return None;
        }
        Some(newest.conn)
    }

    async fn connect(&self) -> Result<Box<Conn>, Error> {
        self.start_sweeping();
        let mut connector = self.connector.clone();
        let io = tower_service::Service::call(&mut connector, self.target.clone()).await?;
        // Requests leave at the end of the serving thread's turn, with its other writes.
        let io = TokioIo::new(crate::gather::Gathered::new(io.into_inner()));
        let (sender, driver) = Builder::new().handshake(io).await?;
        Ok(Box::new(Conn {
            sender,
            driver,
            ended: false,
            home: home_here(&self.idle),
        }))
    }

    /// Starts `sweep` on the runtime of the first connection, once.
    fn start_sweeping(&self) {
        // Called after a connect, which ran on a runtime: there is one to spawn on.
        if self
            .sweeping
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        let idle = Arc::downgrade(&self.idle);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(SWEEP_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                // The pool is gone (its server was removed): so is the sweeping.
                let Some(idle) = idle.upgrade() else { return };
                sweep(&idle, Instant::now());
            }
        });
    }
}

/// Closes the idle connections of every thread that have idled too long, or that the server
/// closed (a poll reads its end of file), so that they do not wait for the next call on their
/// thread to be noticed, which after the traffic stops may never come.
fn sweep(idle: &IdleSets, now: Instant) {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    for set in idle.iter() {
        set.lock()
            .expect("idle connections")
            .retain_mut(|i| !i.expired(now) && i.conn.reusable(&mut cx));
    }
}

/// The address of an idle set: which thread a connection belongs to.
fn address(set: &Mutex<Vec<Idle>>) -> usize {
    std::ptr::from_ref(set) as usize
}

/// `Conn::home` of a connection that may go back to any thread's idle set.
const ANYWHERE: usize = 0;

/// The home of a connection opened now on this thread.
fn home_here(idle: &IdleSets) -> usize {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::CurrentThread) => address(idle.get_or_default()),
        _ => ANYWHERE,
    }
}

/// An upstream answer's body that drives its connection while it is read, and returns the
/// connection to the pool once it has been read to its end. Dropped before that, it closes
/// the connection unless the rest had already arrived (an HTTP/1 connection cannot skip the
/// rest of an answer).
pub struct DrivenBody {
    /// None only while it is dropped.
    body: Option<Incoming>,
    /// None once the connection has gone back to the pool.
    conn: Option<Box<Conn>>,
    idle: Arc<IdleSets>,
}

/// Reading an answer's body failed.
#[derive(Debug)]
pub enum BodyError {
    Hyper(hyper::Error),
    /// The connection ended and hyper did not end the body (a guard; hyper does).
    Closed,
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Hyper(e) => e.fmt(f),
            BodyError::Closed => f.write_str("the upstream connection closed"),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BodyError::Hyper(e) => e.source(),
            BodyError::Closed => None,
        }
    }
}

impl DrivenBody {
    /// Puts the connection back into this thread's pool if it can take another request and
    /// may live on this thread. (Connections that idled too long are `sweep`'s.)
    fn release(&mut self, cx: &mut Context<'_>) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let set = self.idle.get_or_default();
        if conn.reusable(cx) && (conn.home == ANYWHERE || conn.home == address(set)) {
            set.lock().expect("idle connections").push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }
}

impl Body for DrivenBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        let alive = this.conn.as_mut().is_none_or(|conn| conn.drive(cx));
        let frame = match Pin::new(body).poll_frame(cx) {
            Poll::Pending if !alive => {
                // Dropping the ended connection ends the body with hyper's own error.
                this.conn = None;
                return Poll::Ready(Some(Err(BodyError::Closed)));
            }
            other => ready!(other),
        };
        Poll::Ready(match frame {
            None => {
                this.release(cx);
                None
            }
            Some(Ok(frame)) => Some(Ok(frame)),
            Some(Err(e)) => {
                this.conn = None;
                Some(Err(BodyError::Hyper(e)))
            }
        })
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map(Incoming::size_hint)
            .unwrap_or_default()
    }
}

impl Drop for DrivenBody {
    fn drop(&mut self) {
        // A reader that stopped before the end (at the last frame without asking for the end,
        // or not reading at all): with the body gone, hyper reads and discards what of it has
        // already arrived, and the connection can be reused if that was all of it; otherwise
        // hyper closes it. (A poll with no waker is enough: the connection is not waited on
        // until a call takes it, which polls it again with its own.)
        if self.conn.is_some() {
            drop(self.body.take());
            self.release(&mut Context::from_waker(std::task::Waker::noop()));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// What the test server does with the n-th request (counted from 0 over all connections):
    /// the bytes it answers with, and whether it then closes the connection (20 ms later, so
    /// that the client has put the connection back in its pool by then).
    type Script = fn(usize) -> (Vec<u8>, bool);

    /// Requests and connections a test server has seen.
    #[derive(Default)]
    struct Seen {
        requests: AtomicUsize,
        connections: AtomicUsize,
    }

    /// A plain HTTP/1.1 server on loopback that answers as `script` says.
    async fn server(script: Script) -> (http::Uri, Arc<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let uri = format!("http://{}/mcp", listener.local_addr().expect("address"))
            .parse()
            .expect("uri");
        let seen = Arc::new(Seen::default());
        let counts = seen.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.expect("accept");
                counts.connections.fetch_add(1, Ordering::SeqCst);
                let counts = counts.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let Some(head_end) = read_request(&mut socket, &mut buf).await else {
                            return;
                        };
                        buf.drain(..head_end);
                        let n = counts.requests.fetch_add(1, Ordering::SeqCst);
                        let (answer, close) = script(n);
                        socket.write_all(&answer).await.expect("answer");
                        if close {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            return;
                        }
                    }
                });
            }
        });
        (uri, seen)
    }

    /// Reads one request (head and Content-Length body) into `buf`; returns its length.
    async fn read_request(socket: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().expect("content-length"));
                let total = end + 4 + length;
                while buf.len() < total {
                    read_more(socket, buf).await?;
                }
                return Some(total);
            }
            read_more(socket, buf).await?;
        }
    }

    async fn read_more(socket: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
        let mut chunk = [0u8; 4096];
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                Some(())
            }
        }
    }

    fn json(body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn pool(uri: &http::Uri) -> Pool {
        Pool::new(
            ConnectTimeout::new(HttpConnector::new(), Duration::from_secs(5)),
            uri.clone(),
        )
    }

    fn request(uri: &http::Uri, n: usize) -> http::Request<Full<Bytes>> {
        let mut request = http::Request::new(Full::new(Bytes::from(format!("{{\"n\":{n}}}"))));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = "/mcp".parse().expect("uri");
        let host = uri.authority().expect("authority").as_str();
        request
            .headers_mut()
            .insert(http::header::HOST, host.parse().expect("host"));
        request
    }

    /// Sends request n and reads its answer to the end.
    async fn call(pool: &Pool, uri: &http::Uri, n: usize) -> Result<Bytes, Error> {
        let response = pool.send(request(uri, n)).await?;
        Ok(response.into_body().collect().await?.to_bytes())
    }

    #[tokio::test]
    async fn calls_one_after_another_share_one_connection() {
        let (uri, seen) = server(|n| (json(&format!("{{\"answer\":{n}}}")), false)).await;
        let pool = pool(&uri);
        for n in 0..5 {
            let body = call(&pool, &uri, n).await.expect("an answer");
            assert_eq!(body, format!("{{\"answer\":{n}}}"));
        }
        assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
    }

    /// The server closes each connection after its answer without saying so (as a server's
    /// idle timeout does): the next request meets the closed connection, goes out once on a
    /// new one, and is answered.
    #[tokio::test]
    async fn a_connection_the_server_closed_while_idle_is_replaced_and_the_request_sent_once() {
        let (uri, seen) = server(|n| (json(&format!("{{\"answer\":{n}}}")), true)).await;
        let pool = pool(&uri);
        for n in 0..3 {
            let body = call(&pool, &uri, n).await.expect("an answer");
            assert_eq!(body, format!("{{\"answer\":{n}}}"));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            seen.requests.load(Ordering::SeqCst),
            3,
            "a request went twice"
        );
        assert_eq!(seen.connections.load(Ordering::SeqCst), 3);
    }

    /// The other side of the retry: a request the server read before it closed the
    /// connection is not sent again (the server may have acted on it); the call fails.
    #[tokio::test]
    async fn a_request_the_server_read_is_never_sent_twice() {
        let (uri, seen) = server(|n| match n {
            1 => (Vec::new(), true),
            _ => (json("{}"), false),
        })
        .await;
        let pool = pool(&uri);
        assert_eq!(call(&pool, &uri, 0).await.expect("an answer"), "{}");
        call(&pool, &uri, 1).await.expect_err("no answer came");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(seen.requests.load(Ordering::SeqCst), 2);
        assert_eq!(call(&pool, &uri, 2).await.expect("an answer"), "{}");
    }

    /// Calls in flight at once each get a connection; the next calls reuse them.
    #[tokio::test]
    async fn calls_at_once_open_a_connection_each_and_later_calls_reuse_them() {
        let (uri, seen) = server(|_| (json("{}"), false)).await;
        let pool = pool(&uri);
        let answers = futures_util::future::join_all((0..8).map(|n| call(&pool, &uri, n))).await;
        assert!(answers.iter().all(|a| a.as_ref().is_ok_and(|b| b == "{}")));
        assert_eq!(seen.connections.load(Ordering::SeqCst), 8);
        for n in 8..16 {
            call(&pool, &uri, n).await.expect("an answer");
        }
        assert_eq!(seen.connections.load(Ordering::SeqCst), 8);
    }

    /// On a multi-threaded runtime a call's answer may be read on another thread than the
    /// one that opened its connection: every call is still answered, and connections are
    /// reused whichever thread they were released on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_from_several_threads_are_all_answered() {
        let (uri, seen) = server(|n| (json(&format!("{{\"answer\":{n}}}")), false)).await;
        let pool = Arc::new(pool(&uri));
        let tasks: Vec<_> = (0..16)
            .map(|t| {
                let (pool, uri) = (pool.clone(), uri.clone());
                tokio::spawn(async move {
                    for n in 0..5 {
                        call(&pool, &uri, t * 5 + n).await.expect("an answer");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("a task");
        }
        assert_eq!(seen.requests.load(Ordering::SeqCst), 80);
        // 16 callers at once need 16 connections. Tasks move between the workers, and a
        // connection that could only go back to its own thread's pool was dropped whenever
        // its task moved: about 40 connections were opened then.
        let opened = seen.connections.load(Ordering::SeqCst);
        assert!(opened <= 24, "{opened} connections for 16 callers");
    }

    /// An answer that is dropped unread but had already arrived in full (a DELETE's) leaves
    /// its connection reusable.
    #[tokio::test]
    async fn an_answer_dropped_unread_that_had_arrived_leaves_its_connection() {
        let (uri, seen) = server(|_| (json("{}"), false)).await;
        let pool = pool(&uri);
        for n in 0..3 {
            let response = pool.send(request(&uri, n)).await.expect("an answer");
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(response);
        }
        assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
    }

    /// The sweep closes connections that the server closed and those that idled too long.
    #[tokio::test]
    async fn the_sweep_closes_what_the_server_closed_and_what_idled_too_long() {
        let (uri, _) = server(|n| (json("{}"), n == 0)).await;
        let pool = pool(&uri);
        let count = |pool: &Pool| {
            pool.idle
                .iter()
                .map(|s| s.lock().unwrap().len())
                .sum::<usize>()
        };
        call(&pool, &uri, 0).await.expect("an answer");
        assert_eq!(count(&pool), 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        sweep(&pool.idle, Instant::now());
        assert_eq!(count(&pool), 0, "the server closed it");

        call(&pool, &uri, 1).await.expect("an answer");
        sweep(&pool.idle, Instant::now());
        assert_eq!(count(&pool), 1, "open and recently used");
        sweep(
            &pool.idle,
            Instant::now() + IDLE_TIMEOUT + Duration::from_secs(1),
        );
        assert_eq!(count(&pool), 0, "idle too long");
    }

    #[tokio::test]
    async fn an_answer_with_connection_close_is_not_followed_on_its_connection() {
        let (uri, seen) = server(|_| {
            let answer = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\n{}";
            (answer.to_vec(), false)
        })
        .await;
        let pool = pool(&uri);
        for n in 0..3 {
            assert_eq!(call(&pool, &uri, n).await.expect("an answer"), "{}");
        }
        assert_eq!(seen.connections.load(Ordering::SeqCst), 3);
    }

    /// A body cut short (the server closes) or malformed (a bad chunk size, the connection
    /// left open) fails the call, and its connection is not used again.
    #[tokio::test]
    async fn a_broken_answer_fails_and_the_next_request_gets_a_new_connection() {
        let (uri, seen) = server(|n| match n {
            0 => (
                b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"partial".to_vec(),
                true,
            ),
            2 => (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n".to_vec(),
                false,
            ),
            _ => (json("{}"), false),
        })
        .await;
        let pool = pool(&uri);
        let error = call(&pool, &uri, 0).await.expect_err("a cut-short answer");
        assert!(error.to_string().contains("body"), "{error}");
        assert_eq!(call(&pool, &uri, 1).await.expect("an answer"), "{}");
        assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
        call(&pool, &uri, 2).await.expect_err("a malformed chunk");
        assert_eq!(call(&pool, &uri, 3).await.expect("an answer"), "{}");
        assert_eq!(seen.connections.load(Ordering::SeqCst), 3);
    }

    /// A reader that stops after the last frame, without asking for the end, still leaves
    /// the connection for the next request.
    #[tokio::test]
    async fn an_answer_read_to_its_last_frame_leaves_its_connection_reusable() {
        let (uri, seen) = server(|_| (json("{}"), false)).await;
        let pool = pool(&uri);
        for n in 0..3 {
            let mut body = pool
                .send(request(&uri, n))
                .await
                .expect("an answer")
                .into_body();
            let frame = body.frame().await.expect("a frame").expect("data");
            assert_eq!(frame.into_data().expect("data"), "{}");
            assert!(body.is_end_stream());
        }
        assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_answer_dropped_unread_closes_its_connection() {
        let (uri, seen) = server(|n| match n {
            0 => (
                b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nnot all of it".to_vec(),
                false,
            ),
            _ => (json("{}"), false),
        })
        .await;
        let pool = pool(&uri);
        drop(pool.send(request(&uri, 0)).await.expect("an answer's head"));
        assert_eq!(call(&pool, &uri, 1).await.expect("an answer"), "{}");
        assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
    }

    /// An event stream (chunked) read to its end leaves its connection for the next request.
    #[tokio::test]
    async fn a_chunked_stream_read_to_its_end_leaves_its_connection_reusable() {
        let (uri, seen) = server(|n| {
            let event = format!("data: {{\"answer\":{n}}}\n\n");
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                 transfer-encoding: chunked\r\n\r\n{:x}\r\n{event}\r\n{:x}\r\n{event}\r\n0\r\n\r\n",
                event.len(),
                event.len()
            );
            (answer.into_bytes(), false)
        })
        .await;
        let pool = pool(&uri);
        for n in 0..3 {
            let body = call(&pool, &uri, n).await.expect("a stream");
            let event = format!("data: {{\"answer\":{n}}}\n\n");
            assert_eq!(body, format!("{event}{event}"));
        }
        assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_server_that_is_not_there_is_an_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let uri: http::Uri = format!("http://{}/mcp", listener.local_addr().expect("address"))
            .parse()
            .expect("uri");
        drop(listener);
        let error = call(&pool(&uri), &uri, 0)
            .await
            .expect_err("nothing listens");
        assert!(error.to_string().contains("onnect"), "{error}");
    }
}
