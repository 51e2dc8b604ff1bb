//! The raw webrtc-rs baseline: two peer connections in this process, one
//! reliable ordered data channel, and the same work the other baselines do
//! on it, with no plexus code in between. Stream frames go as `u32`
//! length-prefixed frames packed into 60 KiB messages (what plexus sends);
//! round trips as one message each way.

use crate::workload::{Measured, Work};
use bytes::BytesMut;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCSessionDescription,
};

const MESSAGE: usize = 60 * 1024;

struct Events {
    gathered: watch::Sender<bool>,
    channels: mpsc::Sender<Arc<dyn DataChannel>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Events {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
    }
    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        let _ = self.channels.try_send(dc);
    }
}

type Peer = (
    Arc<dyn PeerConnection>,
    watch::Receiver<bool>,
    mpsc::Receiver<Arc<dyn DataChannel>>,
);

async fn peer() -> io::Result<Peer> {
    let (gathered, g) = watch::channel(false);
    let (channels, c) = mpsc::channel(4);
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_handler(Arc::new(Events { gathered, channels }))
        .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
        .with_data_channel_send_buffer_limit(4 << 20)
        .build()
        .await
        .map_err(io::Error::other)?;
    Ok((Arc::new(pc), g, c))
}

async fn sdp(
    pc: &Arc<dyn PeerConnection>,
    gathered: &mut watch::Receiver<bool>,
) -> io::Result<String> {
    tokio::time::timeout(Duration::from_secs(10), gathered.wait_for(|g| *g))
        .await
        .map_err(|_| io::Error::other("gathering timed out"))?
        .map_err(io::Error::other)?;
    pc.local_description()
        .await
        .map(|d| d.sdp)
        .ok_or_else(|| io::Error::other("no local description"))
}

/// Two connected peer connections and the channel on each side, open.
async fn connect() -> io::Result<(
    [Arc<dyn PeerConnection>; 2],
    Arc<dyn DataChannel>,
    Arc<dyn DataChannel>,
)> {
    let (a, mut ga, _) = peer().await?;
    let (b, mut gb, mut cb) = peer().await?;
    let da = a
        .create_data_channel("bench", None)
        .await
        .map_err(io::Error::other)?;
    let offer = a.create_offer(None).await.map_err(io::Error::other)?;
    a.set_local_description(offer)
        .await
        .map_err(io::Error::other)?;
    let offer = sdp(&a, &mut ga).await?;
    b.set_remote_description(RTCSessionDescription::offer(offer).map_err(io::Error::other)?)
        .await
        .map_err(io::Error::other)?;
    let answer = b.create_answer(None).await.map_err(io::Error::other)?;
    b.set_local_description(answer)
        .await
        .map_err(io::Error::other)?;
    let answer = sdp(&b, &mut gb).await?;
    a.set_remote_description(RTCSessionDescription::answer(answer).map_err(io::Error::other)?)
        .await
        .map_err(io::Error::other)?;
    let db = tokio::time::timeout(Duration::from_secs(10), cb.recv())
        .await
        .map_err(|_| io::Error::other("no data channel"))?
        .ok_or_else(|| io::Error::other("no data channel"))?;
    // The offerer's channel opens too.
    loop {
        match da.poll().await {
            Some(DataChannelEvent::OnOpen) => break,
            None => return Err(io::Error::other("closed before opening")),
            Some(_) => {}
        }
    }
    Ok(([a, b], da, db))
}

/// The next message's bytes; `None` once the channel has closed.
async fn next(dc: &Arc<dyn DataChannel>) -> Option<BytesMut> {
    loop {
        match dc.poll().await? {
            DataChannelEvent::OnMessage(m) => return Some(m.data),
            DataChannelEvent::OnClose => return None,
            _ => {}
        }
    }
}

pub(crate) async fn run(work: Work) -> io::Result<Measured> {
    let (pcs, tx, rx) = connect().await?;
    let closed = || io::Error::other("data channel closed");
    let m = match work {
        Work::Stream { n, size } => {
            let want = n * (4 + size);
            let start = crate::wall();
            let reader = tokio::spawn(async move {
                let mut got = 0;
                while got < want {
                    got += next(&rx).await.ok_or_else(closed)?.len();
                }
                Ok::<_, io::Error>(())
            });
            let body = vec![7u8; size];
            let mut buf = BytesMut::with_capacity(MESSAGE + 4 + size);
            for i in 0..n {
                buf.extend_from_slice(&(size as u32).to_be_bytes());
                buf.extend_from_slice(&body);
                while buf.len() >= MESSAGE || (i + 1 == n && !buf.is_empty()) {
                    let chunk = buf.split_to(buf.len().min(MESSAGE));
                    tx.send(chunk).await.map_err(io::Error::other)?;
                }
            }
            reader.await.map_err(io::Error::other)??;
            Measured::Elapsed(start.elapsed())
        }
        Work::Rtt { n, size } => {
            let echo = tokio::spawn(async move {
                for _ in 0..n {
                    let m = next(&rx).await.ok_or_else(closed)?;
                    rx.send(m).await.map_err(io::Error::other)?;
                }
                Ok::<_, io::Error>(())
            });
            let mut rtts = Vec::with_capacity(n);
            for _ in 0..n {
                let start = crate::wall();
                tx.send(BytesMut::from(&vec![1u8; size][..]))
                    .await
                    .map_err(io::Error::other)?;
                next(&tx).await.ok_or_else(closed)?;
                rtts.push(start.elapsed());
            }
            echo.await.map_err(io::Error::other)??;
            Measured::Rtts(rtts)
        }
    };
    for pc in pcs {
        let _ = pc.close().await;
    }
    Ok(m)
}
