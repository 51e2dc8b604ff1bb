//! A node's web endpoint (feature `web`): what a browser needs to join the
//! overlay as a peer, and a live view of the node.
//!
//! | path | what |
//! |---|---|
//! | `/` | the browser peer page (plain JavaScript, no build step) |
//! | `/peer.js` | its script: identity, signalling, the plexus wire format, ping |
//! | `/signal` | WebSocket, first-contact signalling (below) |
//! | `/dashboard` | the node's status, live: connections, routes, counters, a picture of the overlay |
//! | `/api/status` | the same status as JSON, what the dashboard polls |
//!
//! # Signalling over the WebSocket
//! JSON text messages. The server speaks first:
//! `{"type":"welcome","node":"<16 hex>","networkKey":<bool>}`. The browser
//! sends `{"type":"offer","sdp":"…"}` (its candidates inside); the server
//! answers `{"type":"answer","sdp":"…"}` or `{"type":"error","message":"…"}`.
//! The WebRTC handshake then proves both identities over the data channel
//! ([`crate::webrtc::hello`]), bound to the DTLS certificates, so nothing
//! on the signalling path can pose as either side. (The page's own code
//! comes from this server: a browser trusts the node it loads the page
//! from, as with any web application.)
//!
//! Limits: the server closes a socket once it has answered, after
//! [`OFFERS_PER_SOCKET`] refused messages, after [`SESSION`], or on a
//! message over 64 KiB; it keeps at most [`MAX_SOCKETS`] sockets open,
//! [`MAX_SOCKETS_PER_IP`] per client address; WebRTC handshakes in
//! progress are bounded per client address too
//! (`TransportConfig::max_pending_per_source`).
//!
//! A socket opened by a page of another origin (its `Origin` header names
//! another host than the request's `Host`) is refused, so a web site the
//! node's operator visits cannot make the browser join the overlay. That
//! check does not stop DNS rebinding (a site that points its own name at
//! this node): a node reachable beyond loopback should run with a network
//! key, which a page must then prove.
//!
//! The page needs a secure context for WebCrypto: serve it on `localhost`
//! / `127.0.0.1`, or behind an HTTPS reverse proxy. A proxy must pass the
//! `Host` header through (the origin check compares it), and all clients
//! behind it count as the proxy's address for the limits above.

use crate::webrtc::WebRtcTransport;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use parking_lot::Mutex;
use plexus_network::runtime::{NodeHandle, NodeStatus};
use plexus_network::{Address, Direction};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Refused messages (bad offers, bad JSON) one WebSocket may carry before
/// the server closes it.
pub const OFFERS_PER_SOCKET: usize = 8;
/// How long a signalling socket may stay open.
pub const SESSION: std::time::Duration = std::time::Duration::from_secs(30);
/// Signalling sockets open at once.
pub const MAX_SOCKETS: usize = 64;
/// Signalling sockets open at once from one client address (an IPv6
/// client counts by its /64).
pub const MAX_SOCKETS_PER_IP: usize = 8;
const MAX_WS_MESSAGE: usize = 64 * 1024;

const PEER_HTML: &str = include_str!("../web/peer.html");
const PEER_JS: &str = include_str!("../web/peer.js");
const DASHBOARD_HTML: &str = include_str!("../web/dashboard.html");
const DASHBOARD_JS: &str = include_str!("../web/dashboard.js");

#[derive(Clone)]
struct Web {
    node: NodeHandle,
    rtc: WebRtcTransport,
    network_key: bool,
    /// Open signalling sockets by client address.
    sockets: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// A signalling socket's place among the open ones.
struct SocketSlot(Arc<Mutex<HashMap<IpAddr, usize>>>, IpAddr);

impl SocketSlot {
    fn take(web: &Web, ip: IpAddr) -> Option<SocketSlot> {
        let mut open = web.sockets.lock();
        let total: usize = open.values().sum();
        let mine = open.get(&ip).copied().unwrap_or(0);
        if total >= MAX_SOCKETS || mine >= MAX_SOCKETS_PER_IP {
            return None;
        }
        open.insert(ip, mine + 1);
        Some(SocketSlot(web.sockets.clone(), ip))
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut open = self.0.lock();
        if let Some(n) = open.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.1);
            }
        }
    }
}

/// Serves the web endpoint of `node` on `listener` until the listener
/// fails. `network_key` tells browsers whether the node's network has a
/// key (they must then be given its secret).
pub async fn serve(
    listener: tokio::net::TcpListener,
    node: NodeHandle,
    rtc: WebRtcTransport,
    network_key: bool,
) -> io::Result<()> {
    let app = Router::new()
        .route(
            "/",
            get(|| async { page(PEER_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/peer.js",
            get(|| async { page(PEER_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/dashboard",
            get(|| async { page(DASHBOARD_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/dashboard.js",
            get(|| async { page(DASHBOARD_JS, "text/javascript; charset=utf-8") }),
        )
        .route("/api/status", get(status))
        .route("/signal", get(signal))
        .with_state(Web {
            node,
            rtc,
            network_key,
            sockets: Arc::default(),
        });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}

fn page(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// The address a client counts as: its IPv4 address, or its IPv6 /64
/// (one host commonly holds a whole /64).
fn source_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

async fn status(State(web): State<Web>) -> Response {
    match web.node.status().await {
        Ok(s) => Json(status_json(&s)).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// A node's status as the dashboard reads it.
pub fn status_json(s: &NodeStatus) -> Value {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let connections: Vec<Value> = s
        .connections
        .iter()
        .map(|c| {
            json!({
                "conn": c.conn.to_string(),
                "node": c.node.to_string(),
                "addr": c.addr.map(|a| a.to_string()),
                "transport": c.addr.as_ref().map(Address::scheme),
                "direction": match c.direction {
                    Direction::Incoming => "in",
                    Direction::Outgoing => "out",
                },
                "rttMs": c.rtt.map(ms),
            })
        })
        .collect();
    let routes: Vec<Value> = s
        .routes
        .iter()
        .map(|r| {
            json!({
                "dest": r.dest.to_string(),
                "nextHop": r.next_hop.to_string(),
                "metric": r.metric,
                "hops": r.hops,
            })
        })
        .collect();
    let st = &s.stats;
    json!({
        "node": s.node.to_string(),
        "listen": s.listen_addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "connections": connections,
        "routes": routes,
        "failedServices": s.failed_services.iter().map(|x| x.0).collect::<Vec<_>>(),
        "driverBusyMs": ms(s.driver_busy),
        "appEventsDropped": s.app_events_dropped,
        "stats": {
            "framesIn": st.frames_in,
            "framesOut": st.frames_out,
            "bytesIn": st.bytes_in,
            "bytesOut": st.bytes_out,
            "delivered": st.delivered,
            "forwarded": st.forwarded,
            "dropped": st.dropped,
            "protocolErrors": st.protocol_errors,
            "dialFailures": st.dial_failures,
            "behaviorFailures": st.behavior_failures,
        },
    })
}

async fn signal(
    ws: WebSocketUpgrade,
    State(web): State<Web>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let origin = origin.to_str().unwrap_or("");
        let same = origin
            .split_once("://")
            .is_some_and(|(_, rest)| !host.is_empty() && rest == host);
        if !same {
            log::info!("web: signalling socket from {client} refused: origin {origin:?} is not this host ({host:?})");
            return (StatusCode::FORBIDDEN, "cross-origin signalling refused").into_response();
        }
    }
    let Some(slot) = SocketSlot::take(&web, source_ip(client.ip())) else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many signalling sockets",
        )
            .into_response();
    };
    ws.max_message_size(MAX_WS_MESSAGE)
        .on_upgrade(move |socket| signal_socket(socket, web, client, slot))
}

async fn signal_socket(mut socket: WebSocket, web: Web, client: SocketAddr, slot: SocketSlot) {
    // An idle socket holds a slot: at most this long.
    if tokio::time::timeout(SESSION, session(&mut socket, &web, client))
        .await
        .is_err()
    {
        log::info!("web: {client}'s signalling socket idle for {SESSION:?}: closing it");
    }
    // The slot is free before the client can see the socket close.
    drop(slot);
    let _ = socket.send(Message::Close(None)).await;
}

/// Serves one signalling socket until it has answered an offer, failed,
/// or reached a limit.
async fn session(socket: &mut WebSocket, web: &Web, client: SocketAddr) {
    let welcome = json!({
        "type": "welcome",
        "node": web.node.node_id().to_string(),
        "networkKey": web.network_key,
    });
    if socket
        .send(Message::Text(welcome.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    let mut refused = 0;
    while let Some(Ok(msg)) = socket.recv().await {
        let text = match msg {
            Message::Text(t) => t,
            Message::Close(_) => return,
            _ => continue,
        };
        let reply = match serde_json::from_str::<Value>(&text) {
            Ok(v) if v["type"] == "offer" && v["sdp"].is_string() => {
                let sdp = v["sdp"].as_str().unwrap_or_default().to_string();
                match web
                    .rtc
                    .accept_offer(sdp, &source_ip(client.ip()).to_string())
                    .await
                {
                    Ok(answer) => {
                        // Answered: the socket's work is done.
                        let answer = json!({"type": "answer", "sdp": answer});
                        let _ = socket.send(Message::Text(answer.to_string().into())).await;
                        return;
                    }
                    Err(e) => json!({"type": "error", "message": e.to_string()}),
                }
            }
            Ok(_) => json!({"type": "error", "message": "expected {\"type\":\"offer\",\"sdp\":…}"}),
            Err(e) => json!({"type": "error", "message": format!("not JSON: {e}")}),
        };
        refused += 1;
        if refused > OFFERS_PER_SOCKET {
            log::info!(
                "web: {client} sent over {OFFERS_PER_SOCKET} refused messages: closing its socket"
            );
            return;
        }
        if socket
            .send(Message::Text(reply.to_string().into()))
            .await
            .is_err()
        {
            return;
        }
    }
}
