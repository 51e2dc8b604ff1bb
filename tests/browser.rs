//! A real browser joins the overlay: a node started with `--http`, and
//! headless Chromium opening its pages, driven over the DevTools protocol.
//!
//! What is asserted comes from the node's own output (the connection came
//! up over WebRTC with the NodeId the browser's key proves, and the node's
//! pings were answered) and from the pages (the browser verified the node,
//! its own pings were answered; the dashboard lists the connection; it
//! chats over pubsub, as a membership leaf, with a node two hops away).
//! Each test keeps a screenshot and prints its path.
//!
//! Needs Chromium: `.ci/run` installs Debian's `chromium`. Without it these
//! tests fail and say so; set `PLEXUS_SKIP_BROWSER=1` to skip them.

// Real processes on real time: the clock is the point here.
#![allow(clippy::disallowed_methods)]

mod procs;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use procs::{temp_dir, Proc};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// Generous: a page waits at most this long for what it is asked to show.
const WAIT: Duration = Duration::from_secs(60);

fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PLEXUS_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| {
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(move |d| d.join(name))
                .collect::<Vec<_>>()
        })
        .find(|p| p.is_file())
}

/// Chromium, or `None` when the tests are to be skipped (and said so).
fn browser_binary(test: &str) -> Option<PathBuf> {
    if std::env::var_os("PLEXUS_SKIP_BROWSER").is_some() {
        eprintln!("{test}: skipped (PLEXUS_SKIP_BROWSER is set)");
        return None;
    }
    Some(chromium().unwrap_or_else(|| {
        panic!(
            "{test} needs Chromium: install it (apt-get install chromium), point \
             PLEXUS_CHROMIUM at it, or set PLEXUS_SKIP_BROWSER=1 to skip"
        )
    }))
}

/// Where screenshots go: kept after the test, under target/.
fn artifact(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One headless Chromium showing one page, and a DevTools connection to
/// that page.
struct Browser {
    _child: Kill,
    ws: Socket,
    next_id: u64,
    /// The DevTools session attached to the page.
    session: Option<String>,
}

impl Browser {
    async fn open(bin: &Path, url: &str, tag: &str) -> Browser {
        let profile = temp_dir(&format!("chromium-{tag}"));
        let child = Command::new(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1280,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        // Killed on drop from here on, whatever fails next.
        let mut child = Kill(child);
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/…"
        let stderr = child.0.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("ws://") {
                    let _ = tx.send(line[at..].trim().to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(WAIT)
            .expect("chromium prints its DevTools address");
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("DevTools socket");
        let mut b = Browser {
            _child: child,
            ws,
            next_id: 1,
            session: None,
        };
        // Attach to the page the browser opened.
        let targets = b.call("Target.getTargets", json!({})).await;
        let page = targets["targetInfos"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["targetId"].as_str())
            .expect("a page target")
            .to_string();
        let attached = b
            .call(
                "Target.attachToTarget",
                json!({"targetId": page, "flatten": true}),
            )
            .await;
        b.session = Some(
            attached["sessionId"]
                .as_str()
                .expect("a session")
                .to_string(),
        );
        b
    }

    /// Calls a DevTools method; its result.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        match self.try_call(method, params).await {
            Ok(v) => v,
            Err(e) => panic!("{method}: {e}"),
        }
    }

    /// Calls a DevTools method; its result, or the error it answered.
    async fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut req = json!({"id": id, "method": method, "params": params});
        if let Some(s) = &self.session {
            req["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::Text(req.to_string().into()))
            .await
            .expect("DevTools send");
        let reply = async {
            while let Some(msg) = self.ws.next().await {
                let Ok(Message::Text(t)) = msg else { continue };
                let v: Value = serde_json::from_str(&t).expect("DevTools JSON");
                if v["id"] == id {
                    return v;
                }
            }
            panic!("DevTools closed");
        };
        let v = tokio::time::timeout(WAIT + Duration::from_secs(10), reply)
            .await
            .expect("DevTools answers");
        match v["error"].is_null() {
            true => Ok(v["result"].clone()),
            false => Err(v["error"].clone()),
        }
    }

    /// Waits (in the page) until `cond` holds, then evaluates `value`.
    async fn when(&mut self, cond: &str, value: &str) -> Value {
        let expr = format!(
            "new Promise((ok, fail) => {{ const end = Date.now() + {ms}; \
             const f = () => {{ try {{ if ({cond}) return ok({value}); }} catch (e) {{}} \
             if (Date.now() > end) return fail(new Error('timed out: ' + document.body.innerText)); \
             setTimeout(f, 50); }}; f(); }})",
            ms = WAIT.as_millis()
        );
        // The page may still be loading (the first document is
        // about:blank): its script context then goes away under the
        // evaluation, which is asked again in the new one.
        let params = json!({"expression": expr, "awaitPromise": true, "returnByValue": true});
        let mut tries = 0;
        let r = loop {
            match self.try_call("Runtime.evaluate", params.clone()).await {
                Ok(r) => break r,
                Err(e) if tries < 100 && e.to_string().contains("context") => tries += 1,
                Err(e) => panic!("Runtime.evaluate: {e}"),
            }
        };
        assert!(
            r["exceptionDetails"].is_null(),
            "page never showed {cond}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    async fn screenshot(&mut self, name: &str) -> PathBuf {
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("image data"))
            .expect("base64");
        let path = artifact(name);
        std::fs::write(&path, png).unwrap();
        println!("screenshot: {}", path.display());
        path
    }
}

/// A child process, killed when dropped (a failed test leaves no
/// browser running).
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A node with its web endpoint, and a browser peer connected to it: the
/// node's id, its web address, the browser's NodeId as the node saw it.
struct Joined {
    node: Proc,
    node_id: String,
    web: String,
    /// The node's `--seed` (`<id>@quic://…`), for other nodes to join by.
    seed: String,
    peer_id: String,
    peer: Browser,
}

/// The node example on loopback (QUIC and WebRTC), with `extra` flags:
/// the process and its id.
fn start_node(tag: &str, extra: &[&str]) -> (Proc, String) {
    let key = temp_dir(tag).join("node.key");
    let mut args = vec![
        "--listen",
        "quic://127.0.0.1:0",
        "--webrtc-udp",
        "127.0.0.1:0",
        "--status-every",
        "0",
        "--key-file",
        key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let node = Proc::start("node", &args);
    let id = node
        .expect("its id", |l| l.starts_with("node id "))
        .trim_start_matches("node id ")
        .to_string();
    (node, id)
}

/// The node example with its web endpoint, with `extra` flags: the
/// process, its id, its web address (no trailing slash), and its `--seed`
/// for other nodes (`<id>@quic://…`).
fn web_node(tag: &str, extra: &[&str]) -> (Proc, String, String, String) {
    let mut args = vec!["--http", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let (node, node_id) = start_node(tag, &args);
    let line = node.expect("its QUIC address", |l| {
        l.starts_with("listening on quic://")
    });
    let seed = line
        .rsplit("--seed ")
        .next()
        .unwrap()
        .trim_end_matches(')')
        .to_string();
    let line = node.expect("its web endpoint", |l| l.starts_with("web endpoint on "));
    let web = line
        .split_whitespace()
        .nth(3)
        .expect("an address")
        .trim_end_matches('/')
        .to_string();
    (node, node_id, web, seed)
}

/// A browser peer joins a node started with `extra` flags.
async fn join(bin: &Path, tag: &str, extra: &[&str]) -> Joined {
    let (node, node_id, web, seed) = web_node(tag, extra);
    let mut peer = Browser::open(bin, &format!("{web}/"), tag).await;

    // The node's side: a WebRTC connection whose NodeId the handshake
    // proved, and an answer to its ping.
    let line = node.expect("the browser's connection", |l| {
        l.starts_with("connected to ") && l.contains(" over webrtc://")
    });
    let peer_id = line.split_whitespace().nth(2).unwrap().to_string();
    assert!(
        line.ends_with(&format!("over webrtc://{peer_id}")),
        "{line}"
    );
    node.expect("an answered ping", |l| {
        l.starts_with(&format!("ping {peer_id}: rtt "))
    });

    // The page's side: its own key gives that NodeId; it verified the
    // node's; the node answered its pings.
    let shown = peer
        .when(
            "document.body.dataset.state === 'connected' && Number(document.body.dataset.pongs) >= 2 && document.body.dataset.firstPingSeq",
            "[document.getElementById('my-id').textContent, document.getElementById('node-id').textContent, document.getElementById('verified').textContent, document.body.dataset.firstPingSeq]",
        )
        .await;
    assert_eq!(shown[0], peer_id.as_str(), "the page's NodeId");
    assert_eq!(shown[1], node_id.as_str(), "the node the page joined");
    assert!(
        shown[2].as_str().unwrap().starts_with("yes"),
        "the page verified the node: {}",
        shown[2]
    );
    // The node's very first ping was answered: nothing it sent right
    // after its hello was lost while the page checked that hello.
    assert_eq!(shown[3], "1", "the first ping the page answered");
    Joined {
        node,
        node_id,
        web,
        seed,
        peer_id,
        peer,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_joins_over_webrtc_with_a_verified_id_and_pings() {
    let Some(bin) = browser_binary("a_browser_joins_over_webrtc_with_a_verified_id_and_pings")
    else {
        return;
    };
    let mut j = join(&bin, "browser-join", &[]).await;
    let png = j.peer.screenshot("peer.png").await;
    assert!(std::fs::metadata(png).unwrap().len() > 1000);
    assert!(!j.node_id.is_empty());
    drop(j.node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_lists_the_browser_connection() {
    let Some(bin) = browser_binary("the_dashboard_lists_the_browser_connection") else {
        return;
    };
    let j = join(&bin, "browser-dash", &[]).await;
    let mut dash = Browser::open(&bin, &format!("{}/dashboard", j.web), "dash").await;
    let row = dash
        .when(
            &format!(
                "[...document.querySelectorAll('#connections tr')].some(r => r.dataset.node === '{}' && r.dataset.transport === 'webrtc' && !r.innerText.includes('…'))",
                j.peer_id
            ),
            &format!(
                "[document.getElementById('node').textContent, document.querySelector('#connections tr[data-node=\"{}\"]').innerText, document.querySelectorAll('#overlay g').length]",
                j.peer_id
            ),
        )
        .await;
    assert_eq!(row[0], j.node_id.as_str());
    let text = row[1].as_str().unwrap();
    assert!(text.contains("webrtc") && text.contains(" ms"), "{text}");
    // The picture: this node and its neighbour.
    assert!(row[2].as_u64().unwrap() >= 2, "{row:?}");
    dash.screenshot("dashboard.png").await;
    drop(j);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_chats_over_pubsub_through_its_node() {
    let Some(bin) = browser_binary("a_browser_chats_over_pubsub_through_its_node") else {
        return;
    };
    // The node the browser joins relays; a second node subscribes.
    let mut j = join(
        &bin,
        "browser-chat",
        &["--behaviours", "ping,membership,pubsub"],
    )
    .await;
    let (mut far, far_id) = start_node(
        "browser-chat-far",
        &[
            "--behaviours",
            "ping,membership,pubsub",
            "--subscribe",
            "chat",
            "--seed",
            &j.seed,
        ],
    );

    // The far node is linked to the page's node (their adverts follow; a
    // publication that comes before them is caught up on the link).
    far.expect("its link to the page's node", |l| {
        l.starts_with(&format!("connected to {} ", j.node_id))
    });
    // The page joins its node's overlay as a leaf and subscribes; once the
    // node's advert says it is in the topic's tree, the page publishes.
    let state = j
        .peer
        .when(
            "document.body.dataset.chat === 'member'",
            "(document.getElementById('chat-input').value = 'hello from the browser', \
              document.getElementById('chat-form').requestSubmit(), \
              document.getElementById('chat-state').textContent)",
        )
        .await;
    assert!(
        state.as_str().unwrap().contains(&j.node_id),
        "in the tree through its node: {state}"
    );
    // Two hops on: the far node delivers it as the browser's own.
    far.expect("the browser's publication", |l| {
        l == format!("chat from {} (2 hops): hello from the browser", j.peer_id)
    });

    // And the far node's publication reaches the page through the node.
    far.type_line("publish chat hello from afar");
    let shown = j
        .peer
        .when(
            &format!(
                "[...document.querySelectorAll('#chat li')].some(li => li.dataset.author === '{far_id}' && li.innerText.includes('hello from afar'))"
            ),
            "document.getElementById('chat').innerText",
        )
        .await;
    let shown = shown.as_str().unwrap();
    assert!(
        shown.contains("you: hello from the browser (sent)"),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("{far_id}: hello from afar (2 hops)")),
        "{shown}"
    );
    assert_eq!(shown.matches("hello from afar").count(), 1, "once: {shown}");
    j.peer.screenshot("chat.png").await;
}

/// The web endpoint without a browser: pages and status are served, and
/// the signalling socket answers bad input with an error (or, past its
/// limits, closes) and never takes the node down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_endpoint_serves_pages_and_refuses_bad_signalling() {
    use plexus::router::StaticRouter;
    use plexus::runtime::{Node, RuntimeConfig};
    use plexus::transports::webrtc::{WebRtcConfig, WebRtcTransport};
    use plexus::{Identity, Network, TransportConfig};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let id = Identity::generate().unwrap();
    let rtc =
        WebRtcTransport::new(&id, TransportConfig::default(), WebRtcConfig::loopback()).unwrap();
    let net = Network::builder(id.node_id(), Arc::new(StaticRouter::new(id.node_id())))
        .behavior(rtc.signalling())
        .build()
        .unwrap();
    let (node, _events) = Node::spawn(net, vec![Arc::new(rtc.clone())], RuntimeConfig::default());
    rtc.attach(&node);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = listener.local_addr().unwrap();
    let server = tokio::spawn(plexus::transports::web::serve(
        listener,
        node.clone(),
        rtc.clone(),
        false,
    ));

    // Pages and status.
    let get = |path: &'static str| async move {
        let mut s = tokio::net::TcpStream::connect(at).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).await.unwrap();
        body
    };
    assert!(get("/").await.contains("plexus browser peer"));
    assert!(get("/peer.js").await.contains("plexus-webrtc-v1"));
    assert!(get("/dashboard").await.contains("dashboard.js"));
    let status = get("/api/status").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(
        status.contains(&format!("\"node\":\"{}\"", id.node_id())),
        "{status}"
    );
    assert!(get("/nothing").await.starts_with("HTTP/1.1 404"));

    // Signalling: the welcome, then an error for each bad message.
    let url = format!("ws://{at}/signal");
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let recv = async |ws: &mut Socket| -> Option<Value> {
        loop {
            match tokio::time::timeout(WAIT, ws.next())
                .await
                .expect("an answer")
            {
                Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(&t).unwrap()),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    };
    let welcome = recv(&mut ws).await.unwrap();
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["node"], id.node_id().to_string());
    for (bad, says) in [
        ("not json", "not JSON"),
        (r#"{"type":"hello"}"#, "expected"),
        (r#"{"type":"offer","sdp":"v=0 nonsense"}"#, "webrtc"),
    ] {
        ws.send(Message::Text(bad.into())).await.unwrap();
        let reply = recv(&mut ws).await.expect("an error, not a closed socket");
        assert_eq!(reply["type"], "error", "{bad}: {reply}");
        assert!(
            reply["message"].as_str().unwrap().contains(says),
            "{bad}: {reply}"
        );
    }
    // An oversized message closes that socket only.
    let huge = "x".repeat(100 * 1024);
    let _ = ws.send(Message::Text(huge.into())).await;
    assert_eq!(recv(&mut ws).await, None);
    // Past its offers, a socket is closed.
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    recv(&mut ws).await.unwrap();
    let offer = r#"{"type":"offer","sdp":"v=0 nonsense"}"#;
    for _ in 0..plexus::transports::web::OFFERS_PER_SOCKET {
        ws.send(Message::Text(offer.into())).await.unwrap();
        assert_eq!(recv(&mut ws).await.unwrap()["type"], "error");
    }
    let _ = ws.send(Message::Text(offer.into())).await;
    assert_eq!(recv(&mut ws).await, None);
    // A page of another origin may not signal.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.as_str().into_client_request().unwrap();
    req.headers_mut()
        .insert("Origin", "http://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("expected 403, got {other:?}"),
    }
    // At most MAX_SOCKETS_PER_IP sockets from one address.
    let mut open = Vec::new();
    for _ in 0..plexus::transports::web::MAX_SOCKETS_PER_IP {
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap();
        recv(&mut ws).await.unwrap();
        open.push(ws);
    }
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("expected 503, got {other:?}"),
    }
    // The node is still up.
    assert_eq!(node.status().await.unwrap().node, id.node_id());
    server.abort();
    node.shutdown().await.unwrap();
}

/// A page with the wrong network secret is refused by the node before any
/// behaviour sees it, and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_with_the_wrong_network_key_is_refused() {
    let Some(bin) = browser_binary("a_browser_with_the_wrong_network_key_is_refused") else {
        return;
    };
    let (node, _, web, _) = web_node("browser-key", &["--network-key", "right"]);
    let mut page = Browser::open(&bin, &format!("{web}/#secret=wrong"), "browser-key").await;
    let error = page
        .when(
            "document.body.dataset.state === 'failed'",
            "document.getElementById('error').textContent",
        )
        .await;
    let error = error.as_str().unwrap();
    assert!(error.contains("network key mismatch"), "{error}");
    // The node refused before any connection came up.
    let printed = node.printed();
    assert!(
        !printed.iter().any(|l| l.starts_with("connected to ")),
        "{printed:?}"
    );
    page.screenshot("refused.png").await;
}
