//! A reliable, ordered data channel as a byte stream, so the length-
//! delimited framing of TCP and QUIC serves it unchanged.
//!
//! Data channel messages keep their boundaries, but a plexus frame may be
//! larger than a message may be (a peer without `a=max-message-size` takes
//! 64 KiB), and many small frames fit one message. So the writer cuts the
//! frame stream into messages of at most [`CHUNK`] bytes (or the peer's
//! limit), and the reader joins them again.

use bytes::BytesMut;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use webrtc::data_channel::{DataChannel, DataChannelEvent};

/// Largest data channel message the stream writes: under the 64 KiB a peer
/// takes when its SDP names no limit. Larger messages than 16 KiB measured
/// faster (fewer messages through SCTP's queues).
pub(crate) const CHUNK: usize = 60 * 1024;

type EventFuture = Pin<Box<dyn Future<Output = Option<DataChannelEvent>> + Send>>;
type SendFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

/// The next event of `dc`, as an owned future.
pub(crate) fn next_event(dc: &Arc<dyn DataChannel>) -> EventFuture {
    let dc = dc.clone();
    Box::pin(async move { dc.poll().await })
}

/// Reads the messages of a data channel as one byte stream; ends cleanly
/// when the channel closes.
pub(crate) struct DcRead {
    dc: Arc<dyn DataChannel>,
    pending: Option<EventFuture>,
    data: BytesMut,
}

impl DcRead {
    pub(crate) fn new(dc: Arc<dyn DataChannel>) -> Self {
        DcRead {
            dc,
            pending: None,
            data: BytesMut::new(),
        }
    }
}

impl AsyncRead for DcRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.data.is_empty() {
                let n = this.data.len().min(buf.remaining());
                buf.put_slice(&this.data.split_to(n));
                return Poll::Ready(Ok(()));
            }
            let dc = &this.dc;
            let fut = this.pending.get_or_insert_with(|| next_event(dc));
            let event = ready!(fut.as_mut().poll(cx));
            this.pending = None;
            match event {
                Some(DataChannelEvent::OnMessage(m)) => this.data = m.data,
                None | Some(DataChannelEvent::OnClose) => return Poll::Ready(Ok(())),
                Some(DataChannelEvent::OnError) => {
                    return Poll::Ready(Err(io::Error::other("data channel error")))
                }
                Some(_) => {}
            }
        }
    }
}

/// Writes a byte stream as data channel messages of at most a chunk's
/// bytes. Sends wait while the channel's send buffer is full (the peer
/// connection's send-buffer limit), so memory stays bounded.
pub(crate) struct DcWrite {
    dc: Arc<dyn DataChannel>,
    buf: Vec<u8>,
    sending: Option<SendFuture>,
    chunk: usize,
}

impl DcWrite {
    /// Writes messages of at most `chunk` bytes.
    pub(crate) fn new(dc: Arc<dyn DataChannel>, chunk: usize) -> Self {
        let chunk = chunk.max(1);
        DcWrite {
            dc,
            buf: Vec::with_capacity(chunk),
            sending: None,
            chunk,
        }
    }

    /// Sends what is buffered: whole chunks, and with `all` the rest too.
    fn poll_drain(&mut self, cx: &mut Context<'_>, all: bool) -> Poll<io::Result<()>> {
        loop {
            if let Some(f) = self.sending.as_mut() {
                let r = ready!(f.as_mut().poll(cx));
                self.sending = None;
                r?;
            }
            if self.buf.is_empty() || (!all && self.buf.len() < self.chunk) {
                return Poll::Ready(Ok(()));
            }
            let n = self.buf.len().min(self.chunk);
            let chunk = BytesMut::from(&self.buf[..n]);
            self.buf.drain(..n);
            let dc = self.dc.clone();
            self.sending = Some(Box::pin(async move {
                dc.send(chunk)
                    .await
                    .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e.to_string()))
            }));
        }
    }
}

impl AsyncWrite for DcWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx, false))?;
        // At most a chunk's worth per call: the buffer stays under two
        // chunks.
        let n = data.len().min(this.chunk);
        this.buf.extend_from_slice(&data[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_drain(cx, true)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_drain(cx, true)
    }
}
