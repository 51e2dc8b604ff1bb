//! Length-delimited frames over a byte stream (TLS over TCP, a QUIC stream):
//! a `u32` big-endian length, then that many bytes.
//!
//! A length above the configured maximum is a protocol violation: the
//! reader fails with `InvalidData` before allocating anything, and the
//! runtime closes that one connection with the reason logged.

use plexus_network::runtime::{Credit, FrameBatch, FrameSink, Lane, Outbound, OutboundQueue};
use std::io;
use std::pin::Pin;
use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Frames taken from the read buffer before handing a batch to the core.
const BATCH: usize = 64;

/// A batch packs frames up to this many bytes (past one frame).
const PACK_BYTES: usize = 256 * 1024;

/// A writer returns the credit of frames it wrote at least this often (in
/// bytes), even while its batch goes on.
const RETURN_CREDIT_EVERY: usize = 256 * 1024;

/// Writes one frame (not flushed).
pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &[u8]) -> io::Result<()> {
    let len = u32::try_from(frame.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame over 4 GiB"))?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(frame).await
}

/// Reads one frame; `Ok(None)` on a clean end of stream before a frame.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> io::Result<Option<Vec<u8>>> {
    read_frame_into(r, max, Vec::with_capacity).await
}

/// [`read_frame`] into a buffer `alloc` gives for the frame's length.
async fn read_frame_into<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
    alloc: impl FnOnce(usize) -> Vec<u8>,
) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(oversized(len, max));
    }
    // Read into spare capacity: no zero-filling of a buffer about to be
    // overwritten.
    let mut buf = alloc(len);
    r.take(len as u64).read_to_end(&mut buf).await?;
    if buf.len() < len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Some(buf))
}

/// The length of the complete frame `buf` starts with, if it does.
fn complete_frame(buf: &[u8]) -> Option<usize> {
    let len = u32::from_be_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    (buf.len() - 4 >= len).then_some(len)
}

/// Reads frames from `r` into `sink` until the stream ends, in batches of
/// what is already buffered, packed into one buffer per batch (one
/// allocation per batch, not per frame).
pub(crate) async fn read_loop<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    max: usize,
    sink: &FrameSink,
) -> io::Result<()> {
    loop {
        // Room for what is buffered, so the batch is allocated once.
        let room = |r: &BufReader<R>| r.buffer().len().min(PACK_BYTES);
        let mut batch = if complete_frame(r.buffer()).is_some() {
            sink.batch(room(r), BATCH)
        } else {
            // Not all buffered yet: wait for it. A large frame is read
            // straight into the buffer it travels in.
            // A small one, into a buffer with room for the frames behind it.
            let alloc = |len: usize| match len > PACK_BYTES / 4 {
                true => sink.buffer(len),
                false => sink.buffer(len + PACK_BYTES / 8),
            };
            match read_frame_into(r, max, alloc).await? {
                Some(f) => FrameBatch::from_frame(f),
                None => return Ok(()),
            }
        };
        while batch.len() < BATCH {
            let Some(len) = complete_frame(r.buffer()) else {
                break;
            };
            if len > max {
                return Err(oversized(len, max));
            }
            if !batch.is_empty() && batch.bytes() + len > PACK_BYTES {
                break;
            }
            batch.push(&r.buffer()[4..4 + len]);
            Pin::new(&mut *r).consume(4 + len);
        }
        if sink.deliver_batch(batch).await.is_err() {
            return Ok(()); // the node is gone
        }
    }
}

fn oversized(len: usize, max: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("oversized frame: {len} bytes, maximum {max}"),
    )
}

/// Where a writer takes its frames: a connection's whole queue, or one
/// lane of it.
pub(crate) trait Source {
    /// Waits for the next item and takes the queued ones after it.
    async fn next_batch(&mut self, out: &mut Vec<Outbound>, max: usize) -> Option<()>;
    /// Takes what is queued now.
    fn take_ready(&mut self, out: &mut Vec<Outbound>, max: usize) -> usize;
    /// Hands back a written frame's buffer.
    fn recycle(&mut self, buf: Vec<u8>);
}

impl Source for OutboundQueue {
    async fn next_batch(&mut self, out: &mut Vec<Outbound>, max: usize) -> Option<()> {
        OutboundQueue::next_batch(self, out, max).await
    }
    fn take_ready(&mut self, out: &mut Vec<Outbound>, max: usize) -> usize {
        OutboundQueue::take_ready(self, out, max)
    }
    fn recycle(&mut self, buf: Vec<u8>) {
        OutboundQueue::recycle(self, buf)
    }
}

impl Source for Lane {
    async fn next_batch(&mut self, out: &mut Vec<Outbound>, max: usize) -> Option<()> {
        Lane::next_batch(self, out, max).await
    }
    fn take_ready(&mut self, out: &mut Vec<Outbound>, max: usize) -> usize {
        Lane::take_ready(self, out, max)
    }
    fn recycle(&mut self, buf: Vec<u8>) {
        Lane::recycle(self, buf)
    }
}

/// Writes frames from `queue` to `w`, flushing after each batch, until the
/// runtime drops the queue (`None`) or asks to close (`Some(reason)`).
/// Frames over `max` are a local bug: dropped with a warning, never sent.
/// Unreliable frames go to `datagram` when it takes them.
pub(crate) async fn write_loop<W: AsyncWrite + Unpin>(
    w: &mut W,
    queue: &mut impl Source,
    max: usize,
    mut datagram: impl FnMut(&[u8]) -> bool,
) -> io::Result<Option<String>> {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        if queue.next_batch(&mut batch, BATCH).await.is_none() {
            w.flush().await?;
            return Ok(None);
        }
        // The batch's credit (application sends' budget), returned in one
        // go once the batch is flushed.
        let mut held: Option<Credit> = None;
        loop {
            for item in batch.drain(..) {
                match item {
                    Outbound::Frame {
                        bytes,
                        unreliable,
                        credit,
                    } => {
                        Credit::hold(&mut held, credit);
                        if bytes.len() > max {
                            log::warn!(
                                "dropping a {}-byte frame over the {max}-byte maximum",
                                bytes.len()
                            );
                            continue;
                        }
                        if unreliable && datagram(&bytes) {
                            continue;
                        }
                        write_frame(w, &bytes).await?;
                        queue.recycle(bytes);
                        // Past this much, return it before writing on: a
                        // sender waiting for budget must not wait for a
                        // batch of large frames.
                        if held
                            .as_ref()
                            .is_some_and(|c| c.bytes() >= RETURN_CREDIT_EVERY)
                        {
                            held = None;
                        }
                    }
                    Outbound::Close(why) => {
                        w.flush().await?;
                        return Ok(Some(why));
                    }
                }
            }
            // Before flushing (one syscall, one TLS record), give the
            // producer one turn to queue more: a stream then writes full
            // buffers, an idle connection pays one scheduler pass.
            if queue.take_ready(&mut batch, BATCH) == 0 {
                tokio::task::yield_now().await;
                if queue.take_ready(&mut batch, BATCH) == 0 {
                    break;
                }
            }
        }
        w.flush().await?;
        drop(held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_is_refused() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"hello").await.unwrap();
        write_frame(&mut buf, b"").await.unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame(&mut r, 16).await.unwrap().unwrap(), b"hello");
        assert_eq!(read_frame(&mut r, 16).await.unwrap().unwrap(), b"");
        assert_eq!(read_frame(&mut r, 16).await.unwrap(), None);

        let mut big = Vec::new();
        write_frame(&mut big, &[0u8; 100]).await.unwrap();
        let err = read_frame(&mut &big[..], 99).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("oversized"));
        assert_eq!(complete_frame(&big), Some(100));
        assert_eq!(complete_frame(&big[..50]), None);
        assert_eq!(complete_frame(&big[..3]), None);

        let truncated = &big[..60];
        let err = read_frame(&mut &truncated[..], 1000).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
