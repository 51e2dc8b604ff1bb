//! Length-delimited frames over a byte stream (TLS over TCP, a QUIC stream):
//! a `u32` big-endian length, then that many bytes.
//!
//! A length above the configured maximum is a protocol violation: the
//! reader fails with `InvalidData` before allocating anything, and the
//! runtime closes that one connection with the reason logged.

use plexus_network::runtime::{Credit, FrameBatch, FrameSink, Lane, Outbound, OutboundQueue};
use std::io;
use std::ops::Range;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Frames a writer takes from its queue at a time.
const BATCH: usize = 256;

/// A reader's buffer: at least this large, more for a larger frame.
const READ_BUF: usize = 64 * 1024;

/// Frames a reader hands to the core at most at a time (a read of many
/// tiny frames is split, so one batch cannot hold the core for long).
const READ_BATCH: usize = 1024;

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
/// For handshakes; a connection's frames go through [`read_loop`].
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
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
    let mut buf = Vec::with_capacity(len);
    r.take(len as u64).read_to_end(&mut buf).await?;
    if buf.len() < len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Some(buf))
}

/// The complete frames at the start of `buf`, as ranges of their bodies,
/// and the bytes it holds past them: `Err` if a length is over `max`.
/// Also returns the size (prefix included) of the incomplete frame that
/// follows, once its length is known.
/// At most `limit` frames are taken; the bytes past them are left as if
/// incomplete (with no size).
fn split_frames(
    buf: &[u8],
    max: usize,
    limit: usize,
) -> io::Result<(Vec<Range<usize>>, usize, Option<usize>)> {
    let mut spans = Vec::new();
    let mut pos = 0;
    while let Some(prefix) = buf.get(pos..pos + 4) {
        if spans.len() == limit {
            return Ok((spans, pos, None));
        }
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        if len > max {
            return Err(oversized(len, max));
        }
        if buf.len() - pos - 4 < len {
            return Ok((spans, pos, Some(4 + len)));
        }
        spans.push(pos + 4..pos + 4 + len);
        pos += 4 + len;
    }
    Ok((spans, pos, None))
}

/// Reads frames from `r` into `sink` until the stream ends. Bytes are read
/// straight into a buffer from the node's pool and the complete frames in
/// it go to the core as one batch (at most [`READ_BATCH`] frames), in
/// place: no copy between the stream and the core, no allocation per
/// frame. The incomplete frame at the end of a read moves to the next
/// buffer, which has room for all of it. A stream that ends inside a frame
/// (its length prefix included) is an error, like any truncated frame.
pub(crate) async fn read_loop<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
    sink: &FrameSink,
) -> io::Result<()> {
    let mut buf = sink.buffer(READ_BUF);
    loop {
        let (spans, used, need) = split_frames(&buf, max, READ_BATCH)?;
        if !spans.is_empty() {
            let mut next = sink.buffer(need.unwrap_or(0).max(READ_BUF));
            next.extend_from_slice(&buf[used..]);
            buf.truncate(used);
            let full = std::mem::replace(&mut buf, next);
            let batch = FrameBatch::from_parts(full, spans)
                .ok_or_else(|| io::Error::other("frame spans outside the read buffer"))?;
            if sink.deliver_batch(batch).await.is_err() {
                return Ok(()); // the node is gone
            }
            continue;
        }
        // Room for exactly the whole of the next frame once its size is
        // known (it is less than the buffer holds), else a buffer's worth.
        match need {
            Some(n) if buf.capacity() < n => buf.reserve_exact(n - buf.len()),
            Some(_) => {}
            None => {
                let want = READ_BUF.max(buf.len() + READ_BUF / 4);
                if buf.capacity() < want {
                    buf.reserve(want - buf.len());
                }
            }
        }
        if r.read_buf(&mut buf).await? == 0 {
            return match buf.is_empty() {
                true => Ok(()),
                false => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "stream ended inside a frame ({} bytes of it read)",
                        buf.len()
                    ),
                )),
            };
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
            let several = batch.len() > 1;
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
            // Before flushing (one syscall, one TLS record), when a stream
            // is on (this batch had several frames), give the producer one
            // turn to queue more, so a stream writes full buffers; a lone
            // frame (a request, an answer) is flushed at once.
            if queue.take_ready(&mut batch, BATCH) == 0 {
                if !several {
                    break;
                }
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
    #[allow(clippy::single_range_in_vec_init)] // spans: one frame's range
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
        // Two frames and part of a third: the two, where the third starts,
        // and how much the third needs.
        let mut three = Vec::new();
        write_frame(&mut three, b"ab").await.unwrap();
        write_frame(&mut three, b"").await.unwrap();
        write_frame(&mut three, &[9u8; 10]).await.unwrap();
        let (spans, used, need) = split_frames(&three[..three.len() - 3], 16, 8).unwrap();
        assert_eq!((spans, used, need), (vec![4..6, 10..10], 10, Some(14)));
        assert_eq!(split_frames(&three, 16, 8).unwrap().2, None);
        assert_eq!(split_frames(&three[..2], 16, 8).unwrap(), (vec![], 0, None));
        // At most `limit` frames; the rest is left for the next batch.
        assert_eq!(split_frames(&three, 16, 1).unwrap(), (vec![4..6], 6, None));
        let err = split_frames(&big, 99, 8).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        let truncated = &big[..60];
        let err = read_frame(&mut &truncated[..], 1000).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
