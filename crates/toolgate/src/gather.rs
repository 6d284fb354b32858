//! Gathered writes: what a serving thread's calls write to their sockets during one turn of
//! its scheduler leaves together, at the end of the turn.
//!
//! Why: on a busy gateway one turn runs many calls, and each wrote its answer to the agent (or
//! its request to the upstream) as soon as it was ready, a call's work apart from the next
//! write. The agent's process and the upstream's, each on the other core, woke for every one
//! of them, and a wake-up on a virtual machine costs more than the gateway's own work on a
//! call. Gathered, the writes leave back to back, and a peer finds several at one wake-up.
//! (Redis writes its replies the same way, before its event loop sleeps.) With one call in
//! flight the turn ends as soon as that call has written: it waits for nothing.
//!
//! How: a connection's writes go to its buffer, and its flush puts it on this thread's list
//! and returns at once; `run`, a task of the thread's runtime, writes every listed buffer.
//! tokio's single-threaded scheduler runs its tasks first in, first out, so `run`, woken by
//! the turn's first flush, runs after the tasks that were ready then. A socket that cannot
//! take the whole buffer leaves the rest to its connection's own flush, which waits for the
//! socket as a plain one does; a large answer goes out as it is written (`HOLD_AT_MOST`).
//! Written here because no crate does it: tokio has no hook at the end of a turn.

use std::cell::{Cell, RefCell};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Past this many buffered bytes a connection writes before it takes more.
const HOLD_AT_MOST: usize = 64 * 1024;
/// A buffer that grew past this (a large answer) is given back once written: idle sessions
/// hold their connections, and each its buffer.
const KEEP_AT_MOST: usize = 16 * 1024;

thread_local! {
    /// Whether this thread runs `run`; without it, a flush writes at once.
    static GATHERING: Cell<bool> = const { Cell::new(false) };
    /// Connections with bytes for the end of this turn.
    static LISTED: RefCell<Vec<Arc<Mutex<Out>>>> = const { RefCell::new(Vec::new()) };
    /// `run`'s waker while the list is empty.
    static RUNNER: Cell<Option<Waker>> = const { Cell::new(None) };
}

/// Writes the listed connections' bytes at the end of each turn; never returns. Run it on the
/// runtime whose thread serves the connections.
pub async fn run() {
    GATHERING.set(true);
    let _stop = StopOnDrop;
    std::future::poll_fn(|cx| {
        write_all_listed();
        RUNNER.set(Some(cx.waker().clone()));
        Poll::<()>::Pending
    })
    .await
}

/// Writes every listed connection's bytes (from `run`, and as it ends). The list's storage goes back for the next turn:
/// writing lists nothing (it only wakes connections), so the list is still empty then.
fn write_all_listed() {
    let mut listed = LISTED.take();
    for out in listed.drain(..) {
        lock(&out).write_listed();
    }
    LISTED.with_borrow_mut(|l| {
        if l.is_empty() {
            *l = listed;
        }
    });
}

/// When `run` ends (its runtime shuts down), what is listed is written and flushes write at
/// once again.
struct StopOnDrop;

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        GATHERING.set(false);
        write_all_listed();
    }
}

fn lock(out: &Mutex<Out>) -> MutexGuard<'_, Out> {
    // Nothing panics while holding it; a poisoned lock would still hold consistent bytes.
    out.lock().unwrap_or_else(|p| p.into_inner())
}

/// A TCP connection whose writes are gathered (see the module comment).
pub struct Gathered {
    read: OwnedReadHalf,
    out: Arc<Mutex<Out>>,
}

/// A connection's writing side, shared with `run` while it is listed.
struct Out {
    write: OwnedWriteHalf,
    buf: Vec<u8>,
    /// The bytes of `buf` already written.
    written: usize,
    /// On this thread's list.
    listed: bool,
    /// What `run` could not do, for the connection's next flush: write all of `buf` (the
    /// socket was full), or write at all (the error).
    left_over: bool,
    error: Option<io::Error>,
    /// The connection's task, woken when `run` left something over.
    task: Option<Waker>,
}

impl Gathered {
    pub fn new(stream: TcpStream) -> Gathered {
        let (read, write) = stream.into_split();
        Gathered {
            read,
            out: Arc::new(Mutex::new(Out {
                write,
                buf: Vec::new(),
                written: 0,
                listed: false,
                left_over: false,
                error: None,
                task: None,
            })),
        }
    }
}

impl Out {
    /// Writes `buf` without waiting (from `run`); what it cannot goes to the connection's
    /// next flush.
    fn write_listed(&mut self) {
        self.listed = false;
        while self.written < self.buf.len() {
            match self.write.try_write(&self.buf[self.written..]) {
                Ok(0) => {
                    self.error = Some(io::ErrorKind::WriteZero.into());
                    break;
                }
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.left_over = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.error = Some(e);
                    break;
                }
            }
        }
        if self.written == self.buf.len() {
            self.clear();
        } else if let Some(task) = self.task.take() {
            task.wake();
        }
    }

    /// Writes `buf`, waiting for the socket as needed (from the connection's task).
    fn write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            let n = ready!(Pin::new(&mut self.write).poll_write(cx, &self.buf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.clear();
        Poll::Ready(Ok(()))
    }

    fn clear(&mut self) {
        if self.buf.capacity() > KEEP_AT_MOST {
            self.buf = Vec::new();
        }
        self.buf.clear();
        self.written = 0;
        self.left_over = false;
    }

    /// `run`'s error, once.
    fn take_error(&mut self) -> io::Result<()> {
        self.error.take().map_or(Ok(()), Err)
    }
}

impl AsyncRead for Gathered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for Gathered {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut out = lock(&self.out);
        out.take_error()?;
        if out.buf.len() >= HOLD_AT_MOST || out.left_over {
            ready!(out.write_out(cx))?;
        }
        let mut n = 0;
        for b in bufs {
            out.buf.extend_from_slice(b);
            n += b.len();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut out = lock(&self.out);
        out.take_error()?;
        if out.buf.is_empty() {
            return Poll::Ready(Ok(()));
        }
        if out.left_over || !GATHERING.get() {
            return out.write_out(cx);
        }
        if !out.task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
            out.task = Some(cx.waker().clone());
        }
        if !out.listed {
            out.listed = true;
            LISTED.with_borrow_mut(|l| l.push(self.out.clone()));
            if let Some(runner) = RUNNER.take() {
                runner.wake();
            }
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut out = lock(&self.out);
        out.take_error()?;
        ready!(out.write_out(cx))?;
        Pin::new(&mut out.write).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A gathered connection and its peer's end, over loopback.
    async fn pair() -> (Gathered, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (ours, theirs) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (Gathered::new(ours.unwrap()), theirs.unwrap().0)
    }

    /// Starts `run` on this runtime and lets it take its first turn, so that flushes from here
    /// on are gathered (a test that flushed before would write at once and prove nothing).
    async fn start_gathering() {
        tokio::spawn(run());
        tokio::task::yield_now().await;
        assert!(GATHERING.get());
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    async fn read_exactly(peer: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut got = vec![0; n];
        tokio::time::timeout(Duration::from_secs(10), peer.read_exact(&mut got))
            .await
            .expect("the bytes arrive")
            .unwrap();
        got
    }

    #[test]
    fn a_flush_leaves_at_the_end_of_the_turn() {
        runtime().block_on(async {
            start_gathering().await;
            let (mut ours, mut peer) = pair().await;
            ours.write_all(b"first ").await.unwrap();
            ours.write_all(b"answer").await.unwrap();
            ours.flush().await.unwrap();
            // Flushed, but the turn has not ended: nothing is on the socket yet.
            let mut probe = [0u8; 1];
            assert_eq!(
                peer.try_read(&mut probe).unwrap_err().kind(),
                io::ErrorKind::WouldBlock
            );
            assert_eq!(read_exactly(&mut peer, 12).await, b"first answer");
        });
    }

    #[test]
    fn without_the_runner_a_flush_writes_at_once() {
        runtime().block_on(async {
            let (mut ours, mut peer) = pair().await;
            ours.write_all(b"at once").await.unwrap();
            ours.flush().await.unwrap();
            assert_eq!(read_exactly(&mut peer, 7).await, b"at once");
        });
    }

    #[test]
    fn what_a_full_socket_cannot_take_arrives_whole_and_in_order() {
        runtime().block_on(async {
            start_gathering().await;
            let (mut ours, mut peer) = pair().await;
            // Far more than the socket buffers hold, in pieces of several sizes, each flushed:
            // the runner meets a full socket and leaves the rest to the connection.
            let data: Vec<u8> = (0..12_000_000u32).map(|i| (i % 251) as u8).collect();
            let reader = tokio::spawn(async move {
                // A slow start, so that the socket fills.
                tokio::time::sleep(Duration::from_millis(50)).await;
                read_exactly(&mut peer, 12_000_000).await
            });
            let mut at = 0;
            for (i, size) in [1usize, 100, 70_000, 3_000, 1_000_000]
                .iter()
                .cycle()
                .enumerate()
            {
                let end = (at + size).min(data.len());
                ours.write_all(&data[at..end]).await.unwrap();
                if i % 2 == 0 {
                    ours.flush().await.unwrap();
                }
                at = end;
                if at == data.len() {
                    break;
                }
            }
            ours.flush().await.unwrap();
            assert!(reader.await.unwrap() == data, "every byte, in order");
        });
    }

    #[test]
    fn a_buffer_that_grew_is_given_back_once_written_and_a_small_one_kept() {
        runtime().block_on(async {
            start_gathering().await;
            let (mut ours, mut peer) = pair().await;
            ours.write_all(b"small").await.unwrap();
            ours.flush().await.unwrap();
            assert_eq!(read_exactly(&mut peer, 5).await, b"small");
            assert!(
                lock(&ours.out).buf.capacity() > 0,
                "kept for the next answer"
            );
            let large = vec![b'x'; KEEP_AT_MOST + 1];
            ours.write_all(&large).await.unwrap();
            ours.flush().await.unwrap();
            assert_eq!(read_exactly(&mut peer, large.len()).await, large);
            assert_eq!(lock(&ours.out).buf.capacity(), 0, "given back");
        });
    }

    #[test]
    fn a_shutdown_writes_what_waits_first() {
        runtime().block_on(async {
            start_gathering().await;
            let (mut ours, mut peer) = pair().await;
            ours.write_all(b"last words").await.unwrap();
            ours.flush().await.unwrap();
            ours.shutdown().await.unwrap();
            let mut got = Vec::new();
            peer.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"last words");
        });
    }

    #[test]
    fn a_connection_dropped_after_its_flush_still_sends_its_bytes() {
        runtime().block_on(async {
            start_gathering().await;
            let (mut ours, mut peer) = pair().await;
            ours.write_all(b"sent").await.unwrap();
            ours.flush().await.unwrap();
            drop(ours);
            let mut got = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), peer.read_to_end(&mut got))
                .await
                .expect("the end arrives")
                .unwrap();
            assert_eq!(got, b"sent");
        });
    }

    #[test]
    fn a_peer_that_went_away_is_an_error_not_a_hang() {
        runtime().block_on(async {
            start_gathering().await;
            let (mut ours, peer) = pair().await;
            // Closed with data unread: the kernel answers further writes with a reset.
            ours.write_all(b"unread").await.unwrap();
            ours.flush().await.unwrap();
            peer.readable().await.unwrap();
            drop(peer);
            let failed = tokio::time::timeout(Duration::from_secs(10), async {
                for _ in 0..1000 {
                    let wrote = async {
                        ours.write_all(&[7u8; 4096]).await?;
                        ours.flush().await?;
                        // The runner writes at the end of the turn; its error comes back at
                        // the next write or flush.
                        tokio::task::yield_now().await;
                        Ok::<_, io::Error>(())
                    };
                    if let Err(e) = wrote.await {
                        return e;
                    }
                }
                panic!("writes to a closed peer kept succeeding");
            })
            .await
            .expect("an error, in time");
            assert!(
                matches!(
                    failed.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ),
                "{failed}"
            );
        });
    }

    #[test]
    fn when_the_runner_ends_what_it_listed_is_written_and_flushes_write_at_once() {
        let rt = runtime();
        let (mut ours, mut peer) = rt.block_on(async {
            let (mut ours, peer) = pair().await;
            let runner = tokio::spawn(run());
            tokio::task::yield_now().await;
            ours.write_all(b"listed").await.unwrap();
            ours.flush().await.unwrap();
            runner.abort();
            let _ = runner.await;
            (ours, peer)
        });
        rt.block_on(async {
            assert_eq!(read_exactly(&mut peer, 6).await, b"listed");
            ours.write_all(b" then direct").await.unwrap();
            ours.flush().await.unwrap();
            let mut probe = [0u8; 12];
            // Written by the flush itself: on the socket as soon as it returns.
            tokio::time::timeout(Duration::from_secs(10), peer.readable())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(peer.try_read(&mut probe).unwrap(), 12);
            assert_eq!(&probe, b" then direct");
        });
    }
}
