//! The in-memory transport: a byte pipe in each direction between a client
//! and the server, in place of a socket.
//!
//! It behaves as `tokio::io::duplex` (bounded buffer, back-pressure, end of
//! stream when the other end shuts down or is dropped, `BrokenPipe` on
//! writes to a dropped end) but frees a direction's buffer as soon as its
//! reader has taken everything: a million idle in-memory sessions should
//! not each keep the capacity their login once needed.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// One direction of a [`MemoryStream`] pair.
#[derive(Default)]
struct Pipe {
    buf: Vec<u8>,
    /// Bytes before this were read.
    read_pos: usize,
    /// Most unread bytes held before writers wait.
    max: usize,
    /// The writer shut down or went: readers see the end after the rest.
    write_closed: bool,
    /// The reader went: writes fail.
    read_closed: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
}

impl Pipe {
    fn unread(&self) -> usize {
        self.buf.len() - self.read_pos
    }

    fn wake_reader(&mut self) {
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
    }

    fn wake_writer(&mut self) {
        if let Some(w) = self.write_waker.take() {
            w.wake();
        }
    }
}

/// One end of an in-memory connection: what it writes, the other end
/// reads. Made by [`pair`].
pub struct MemoryStream {
    read: Arc<Mutex<Pipe>>,
    write: Arc<Mutex<Pipe>>,
}

impl std::fmt::Debug for MemoryStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStream")
            .field("unread", &self.read.lock().unread())
            .finish()
    }
}

/// Two connected ends; each direction holds at most `max_buf` unread bytes
/// (at least 1).
pub fn pair(max_buf: usize) -> (MemoryStream, MemoryStream) {
    let new = || {
        Arc::new(Mutex::new(Pipe {
            max: max_buf.max(1),
            ..Pipe::default()
        }))
    };
    let (a_to_b, b_to_a) = (new(), new());
    (
        MemoryStream {
            read: b_to_a.clone(),
            write: a_to_b.clone(),
        },
        MemoryStream {
            read: a_to_b,
            write: b_to_a,
        },
    )
}

impl AsyncRead for MemoryStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut p = self.read.lock();
        let n = p.unread().min(out.remaining());
        if n > 0 {
            let start = p.read_pos;
            out.put_slice(&p.buf[start..start + n]);
            p.read_pos += n;
            if p.read_pos == p.buf.len() {
                // All taken: the buffer goes (the point of this type).
                p.buf = Vec::new();
                p.read_pos = 0;
            }
            p.wake_writer();
            return Poll::Ready(Ok(()));
        }
        if p.write_closed || out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        p.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for MemoryStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut p = self.write.lock();
        if p.read_closed || p.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let room = p.max.saturating_sub(p.unread());
        if room == 0 {
            p.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if p.read_pos > 0 {
            let consumed = p.read_pos;
            p.buf.drain(..consumed);
            p.read_pos = 0;
        }
        let n = room.min(data.len());
        p.buf.extend_from_slice(&data[..n]);
        p.wake_reader();
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut p = self.write.lock();
        p.write_closed = true;
        p.wake_reader();
        Poll::Ready(Ok(()))
    }
}

impl Drop for MemoryStream {
    fn drop(&mut self) {
        let mut w = self.write.lock();
        w.write_closed = true;
        w.wake_reader();
        drop(w);
        let mut r = self.read.lock();
        r.read_closed = true;
        // Nobody reads it any more.
        r.buf = Vec::new();
        r.read_pos = 0;
        r.wake_writer();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_cross_both_ways_and_drained_buffers_are_freed() {
        let (mut a, mut b) = pair(64);
        a.write_all(b"hello").await.expect("write");
        b.write_all(b"world!").await.expect("write");
        let mut buf = [0u8; 16];
        let n = b.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(b.read.lock().buf.capacity(), 0);
        let n = a.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], b"world!");
        assert_eq!(a.read.lock().buf.capacity(), 0);
    }

    #[tokio::test]
    async fn a_full_pipe_makes_the_writer_wait_until_read() {
        let (mut a, mut b) = pair(8);
        let data: Vec<u8> = (0..100u8).collect();
        let writer = tokio::spawn(async move {
            a.write_all(&data).await.expect("write");
            a
        });
        let mut got = Vec::new();
        let mut buf = [0u8; 5];
        while got.len() < 100 {
            let n = b.read(&mut buf).await.expect("read");
            assert!(b.read.lock().unread() <= 8);
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, (0..100u8).collect::<Vec<_>>());
        writer.await.expect("writer");
    }

    #[tokio::test]
    async fn shutdown_or_drop_ends_the_stream_after_the_rest() {
        let (mut a, mut b) = pair(64);
        a.write_all(b"last").await.expect("write");
        a.shutdown().await.expect("shutdown");
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.expect("read to end");
        assert_eq!(got, b"last");
        assert!(a.write_all(b"more").await.is_err());

        let (a, mut b) = pair(64);
        drop(a);
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.expect("eof");
        assert!(got.is_empty());
        let err = b.write_all(b"x").await.expect_err("peer gone");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
