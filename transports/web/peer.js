// The plexus browser peer: an ed25519 identity kept in IndexedDB, WebRTC to
// the node that served this page (signalled over its WebSocket), the
// plexus wire format, ping, and pubsub chat (as a membership leaf of that
// node). Plain JavaScript, no build step. The format is documented in
// docs/wire.md.
"use strict";

const PING = 1; // ping's service id
const MEMBERSHIP = 2; // membership's
const PUBSUB = 4; // pubsub's
const NO_ROOT = 16; // pubsub: "no route to the topic's root"
const MAX_PAYLOAD = 64 * 1024; // pubsub's default largest publication
const MAX_SEEN = 4096; // publication ids remembered, against duplicates
const HEADER_LEN = 25;
const LINK = 0xc0;
const FLAG_UNRELIABLE = 1;
const FLAG_CREDITED = 2;
const DOMAIN = new TextEncoder().encode("plexus-webrtc-v1");
const PING_EVERY_MS = 1000;
const CHUNK = 16 * 1024;

const $ = (id) => document.getElementById(id);
const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");

function log(text) {
  const li = document.createElement("li");
  li.textContent = `${new Date().toISOString().slice(11, 23)} ${text}`;
  $("log").prepend(li);
  while ($("log").children.length > 200) $("log").lastChild.remove();
}

function setState(text) {
  $("state").textContent = text;
  document.body.dataset.state = text;
}

// ---- identity -------------------------------------------------------------

function idb() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open("plexus", 1);
    req.onupgradeneeded = () => req.result.createObjectStore("identity");
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function idbDo(db, mode, f) {
  return new Promise((resolve, reject) => {
    const tx = db.transaction("identity", mode);
    const req = f(tx.objectStore("identity"));
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

/** The page's key pair: loaded from IndexedDB, or made and kept there. The
 * private key is not extractable: the page can sign with it, not read it. */
async function identity() {
  const db = await idb();
  let id = await idbDo(db, "readonly", (s) => s.get("ed25519"));
  if (!id) {
    const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
    const pub = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
    id = { privateKey: pair.privateKey, publicKey: pub };
    await idbDo(db, "readwrite", (s) => s.put(id, "ed25519"));
    log("made a new identity (kept in this browser's IndexedDB)");
  }
  return { privateKey: id.privateKey, publicKey: new Uint8Array(id.publicKey) };
}

async function sha256(...parts) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", concat(...parts)));
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** NodeId: the first 8 bytes of SHA-256 of the public key, as 16 hex digits. */
async function nodeIdOf(publicKey) {
  return hex((await sha256(publicKey)).slice(0, 8));
}

// ---- the hello: identity and network key, bound to the DTLS fingerprints -----

function fingerprint(sdp) {
  const m = /^a=fingerprint:sha-256 ([0-9A-Fa-f:]+)\s*$/m.exec(sdp);
  if (!m) throw new Error("no sha-256 fingerprint in the SDP");
  const bytes = m[1].split(":").map((h) => parseInt(h, 16));
  if (bytes.length !== 32) throw new Error("fingerprint is not 32 bytes");
  return new Uint8Array(bytes);
}

async function hmac(key, data) {
  const k = await crypto.subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await crypto.subtle.sign("HMAC", k, data));
}

/** Our hello, as the offerer (role 0). */
async function makeHello(me, netKey, t) {
  const sig = new Uint8Array(
    await crypto.subtle.sign({ name: "Ed25519" }, me.privateKey, concat(DOMAIN, [0], t)),
  );
  return concat(me.publicKey, sig, await hmac(netKey, concat(t, [0])));
}

/** Checks the node's hello (role 1); its NodeId if good. */
async function checkHello(msg, netKey, t) {
  if (msg.length !== 128) throw new Error(`hello of ${msg.length} bytes`);
  const pub = msg.slice(0, 32);
  const key = await crypto.subtle.importKey("raw", pub, { name: "Ed25519" }, false, ["verify"]);
  const ok = await crypto.subtle.verify({ name: "Ed25519" }, key, msg.slice(32, 96), concat(DOMAIN, [1], t));
  if (!ok) throw new Error("the node's signature does not verify");
  const proof = await hmac(netKey, concat(t, [1]));
  if (hex(proof) !== hex(msg.slice(96))) throw new Error("network key mismatch");
  return nodeIdOf(pub);
}

// ---- postcard and the wire header --------------------------------------------

function varint(n) {
  // n: a BigInt (u64) or a number (u32).
  let v = BigInt(n);
  const out = [];
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) b |= 0x80;
    out.push(b);
  } while (v > 0n);
  return out;
}

function readByte(bytes, at) {
  if (at.i >= bytes.length) throw new Error("truncated message");
  return bytes[at.i++];
}

function readBool(bytes, at) {
  const b = readByte(bytes, at);
  if (b > 1) throw new Error(`bad bool ${b}`);
  return b === 1;
}

/** A postcard byte string (`Bytes`, `Vec<u8>`): varint length, bytes. */
function readBytes(bytes, at) {
  const n = Number(readVarint(bytes, at));
  if (at.i + n > bytes.length) throw new Error("truncated message");
  const out = bytes.slice(at.i, at.i + n);
  at.i += n;
  return out;
}

function readVarint(bytes, at) {
  let v = 0n;
  let shift = 0n;
  for (;;) {
    if (at.i >= bytes.length || shift > 63n) throw new Error("bad varint");
    const b = bytes[at.i++];
    if (shift === 63n && b > 1) throw new Error("varint over 64 bits");
    v |= BigInt(b & 0x7f) << shift;
    if (!(b & 0x80)) return v;
    shift += 7n;
  }
}

/** A message frame: header then payload. `target` and `source` are BigInts. */
function frame(service, routeKind, target, source, payload, flags = 0) {
  const f = new Uint8Array(HEADER_LEN + payload.length);
  const v = new DataView(f.buffer);
  f[0] = 1; // version
  f[1] = flags;
  f[2] = service;
  f[3] = routeKind; // 0 direct, 1 node, 2 closest key, 3 service
  f[4] = 16; // ttl
  v.setBigUint64(5, target);
  v.setBigUint64(13, source);
  v.setUint32(21, payload.length);
  f.set(payload, HEADER_LEN);
  return f;
}

function parseHeader(f) {
  if (f.length < HEADER_LEN) throw new Error("truncated frame");
  const v = new DataView(f.buffer, f.byteOffset, f.byteLength);
  const len = v.getUint32(21);
  if (f.length !== HEADER_LEN + len) throw new Error("frame length mismatch");
  return {
    version: f[0],
    flags: f[1],
    service: f[2],
    routeKind: f[3],
    ttl: f[4],
    target: v.getBigUint64(5),
    source: v.getBigUint64(13),
    payload: f.subarray(HEADER_LEN),
  };
}

// ---- pubsub chat ------------------------------------------------------------

/** A topic: the 64-bit FNV-1a hash of its name's UTF-8 bytes. */
function topicOf(name) {
  let h = 0xcbf29ce484222325n;
  for (const b of new TextEncoder().encode(name)) {
    h ^= BigInt(b);
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return h;
}

const NO_ADVERT = { root: 0n, dist: NO_ROOT, parent: false, member: false };
const sameAdvert = (a, b) =>
  a.root === b.root && a.dist === b.dist && a.parent === b.parent && a.member === b.member;
const idKey = (author, seq) => `${author}:${seq}`;
const nodeHex = (id) => id.toString(16).padStart(16, "0");

/**
 * One topic of pubsub, as a leaf with a single neighbour (the node): the
 * page subscribes (its node then subscribes for it; a leaf takes no part
 * in choosing the topic's root), follows the root through the node, and
 * takes part in the topic's tree on its one link: it keeps what it has
 * seen, asks (Graft) for what it is told of (IHave), and publishes by
 * pushing a round-0 Gossip. See docs/wire.md, "Pubsub".
 */
class Chat {
  constructor(peer, name) {
    this.peer = peer;
    this.name = name;
    this.topic = topicOf(name);
    this.subscribed = false;
    this.refused = false; // the node had no room for us
    this.heard = NO_ADVERT; // the node's advert to us
    this.told = NO_ADVERT; // ours to it
    this.seen = new Set();
    this.nextSeq = randomSeq();
  }

  /** Membership took us as its leaf: subscribe. */
  join() {
    this.subscribed = true;
    this.interest();
  }

  /** Our advert: we subscribe, and our route to the root is the node's
   * plus one hop ("no route" until the node has one). */
  advert() {
    if (!this.subscribed) return NO_ADVERT;
    const a = this.heard;
    return a.dist < NO_ROOT - 1
      ? { root: a.root, dist: a.dist + 1, parent: true, member: true }
      : { root: 0n, dist: NO_ROOT, parent: false, member: true };
  }

  /** Sends our advert when it changed, or (`again`) when the node's came:
   * a node that lost ours gets it back, and as the node answers only
   * changes, this does not loop. */
  interest(again = false) {
    const advert = this.advert();
    if (!again && sameAdvert(advert, this.told)) return;
    this.told = advert;
    this.peer.send(
      PUBSUB,
      concat(
        varint(0), // Interest
        varint(1), // one entry
        varint(this.topic),
        varint(advert.root),
        [advert.dist, advert.parent ? 1 : 0, advert.member ? 1 : 0],
      ),
    );
    this.showState();
  }

  showState() {
    if (this.refused) return;
    const state = !this.subscribed
      ? "joining"
      : this.heard.member
        ? "member"
        : "alone";
    document.body.dataset.chat = state;
    $("chat-state").textContent =
      state === "member"
        ? `in ${this.name}'s tree through ${this.peer.node}; root ${nodeHex(this.heard.root)}`
        : `subscribed to ${this.name}; waiting for ${this.peer.node} to take us into the topic's tree`;
  }

  onMessage(p) {
    const at = { i: 0 };
    switch (readVarint(p, at)) {
      case 0n: {
        // Interest: per topic, the node's advert.
        const n = Number(readVarint(p, at));
        let ours = false;
        for (let k = 0; k < n; k++) {
          const topic = readVarint(p, at);
          const advert = {
            root: readVarint(p, at),
            dist: readByte(p, at),
            parent: readBool(p, at),
            member: readBool(p, at),
          };
          if (topic === this.topic) {
            this.heard = advert;
            ours = true;
          }
        }
        // Before the node took us as its leaf it would not listen.
        if (this.subscribed) this.interest(ours);
        this.showState();
        return;
      }
      case 1n: {
        // Tree: one topic's Plumtree message.
        if (readVarint(p, at) !== this.topic) return;
        const kind = readVarint(p, at);
        if (kind === 0n) {
          // Gossip { id, origin, round, payload }
          const author = readVarint(p, at);
          const seq = readVarint(p, at);
          readVarint(p, at); // origin
          const round = readVarint(p, at);
          this.deliver(author, seq, Number(round) + 1, readBytes(p, at));
        } else if (kind === 1n) {
          // IHave [(id, round)]: ask for what we have not seen.
          const n = Number(readVarint(p, at));
          const want = [];
          for (let k = 0; k < n; k++) {
            const author = readVarint(p, at);
            const seq = readVarint(p, at);
            readVarint(p, at);
            if (!this.seen.has(idKey(author, seq))) want.push(varint(author), varint(seq));
          }
          if (want.length) {
            this.peer.send(
              PUBSUB,
              concat(varint(1), varint(this.topic), varint(2), varint(want.length / 2), ...want),
            );
          }
        }
        // Graft, Prune, Route: with one link and no copies to hand on, a
        // leaf has nothing to change.
        return;
      }
      default:
        // Up, UpAck: they travel towards a topic's root, and no route
        // to a root goes through a leaf.
        return;
    }
  }

  deliver(author, seq, hops, payload) {
    const key = idKey(author, seq);
    if (this.seen.has(key)) return;
    this.remember(key);
    this.show(nodeHex(author), new TextDecoder().decode(payload), `${hops} hops`);
  }

  remember(key) {
    this.seen.add(key);
    if (this.seen.size > MAX_SEEN) this.seen.delete(this.seen.values().next().value);
  }

  /** Publishes `text` to the topic: pushed into the tree through the node. */
  publish(text) {
    const payload = new TextEncoder().encode(text);
    if (payload.length > MAX_PAYLOAD) {
      log(`not sent: ${payload.length} bytes is over the ${MAX_PAYLOAD}-byte limit`);
      return;
    }
    const seq = this.nextSeq++;
    const me = this.peer.source;
    this.remember(idKey(me, seq));
    if (!this.heard.member) {
      this.show("you", text, "not sent: nobody else subscribes yet");
      return;
    }
    this.peer.send(
      PUBSUB,
      concat(
        varint(1), // Tree
        varint(this.topic),
        varint(0), // Gossip
        varint(me),
        varint(seq),
        varint(me), // origin
        varint(0), // round
        varint(payload.length),
        payload,
      ),
    );
    this.show("you", text, "sent");
  }

  show(who, text, note) {
    const li = document.createElement("li");
    li.dataset.author = who;
    const b = document.createElement("b");
    b.textContent = who;
    const small = document.createElement("small");
    small.textContent = ` (${note})`;
    li.append(b, `: ${text}`, small);
    $("chat").prepend(li);
    while ($("chat").children.length > 200) $("chat").lastChild.remove();
  }
}

/** A random first sequence number (62 bits): ids stay unique across
 * reloads of a page that keeps its identity. */
function randomSeq() {
  const w = crypto.getRandomValues(new Uint32Array(2));
  return (BigInt(w[0] >>> 2) << 32n) | BigInt(w[1]);
}

// ---- the connection --------------------------------------------------------

class Peer {
  constructor(me, myId, node, netKey, reliable, unreliable) {
    Object.assign(this, { me, myId, node, netKey, reliable, unreliable });
    this.source = BigInt("0x" + myId);
    this.buf = new Uint8Array(0);
    this.seq = 0;
    this.rtts = [];
    this.counts = { in: 0, out: 0, other: 0 };
    this.answered = 0; // the node's pings we answered
    this.received = 0n; // credited frames received (confirmed back)
    this.returned = 0; // their bytes, granted back as credit
    this.confirmed = 0n; // the count last confirmed
    this.chat = new Chat(this, topicParam());
  }

  /** Bytes of the reliable channel: u32 length-delimited frames. */
  onStream(data) {
    this.buf = concat(this.buf, new Uint8Array(data));
    while (this.buf.length >= 4) {
      const len = new DataView(this.buf.buffer, this.buf.byteOffset).getUint32(0);
      if (len > (1 << 20) + HEADER_LEN) throw new Error(`oversized frame: ${len}`);
      if (this.buf.length < 4 + len) break;
      const f = this.buf.slice(4, 4 + len);
      this.buf = this.buf.slice(4 + len);
      this.onFrame(f);
    }
  }

  onFrame(f) {
    if (f[0] === LINK) return; // credit and receipts for frames we send: we send none credited
    const h = parseHeader(f);
    if (h.version !== 1) throw new Error(`header version ${h.version}`);
    this.counts.in++;
    if (h.flags & FLAG_CREDITED) {
      this.received++;
      this.returned += f.length;
    }
    if (h.service === PING) this.onPing(h);
    else if (h.service === MEMBERSHIP) this.onMembership(h);
    else if (h.service === PUBSUB && h.routeKind === 0) this.chat.onMessage(h.payload);
    else this.counts.other++;
  }

  /** Joins the node's overlay as a leaf: a `Join` with no address (nothing
   * can dial a browser). The node answers with a `NeighborReply`. */
  joinOverlay() {
    this.send(MEMBERSHIP, concat(varint(0), varint(0)));
  }

  onMembership(h) {
    const at = { i: 0 };
    if (readVarint(h.payload, at) !== 3n) return; // only NeighborReply is for a leaf
    if (readBool(h.payload, at)) {
      log(`joined ${this.node}'s overlay as a leaf; subscribing to ${this.chat.name}`);
      $("chat-input").disabled = $("chat-send").disabled = false;
      this.chat.join();
    } else {
      log(`${this.node} has no room for another leaf: no chat`);
      this.chat.refused = true;
      document.body.dataset.chat = "refused";
      $("chat-state").textContent = "the node has no room for another leaf";
    }
  }

  /** Confirms credited frames received and grants their bytes back: after
   * each message handled (timers are throttled in background tabs). */
  confirm() {
    if (this.received === this.confirmed) return;
    this.confirmed = this.received;
    const r = new Uint8Array(10);
    r[0] = LINK;
    r[1] = 2;
    new DataView(r.buffer).setBigUint64(2, this.received);
    const c = new Uint8Array(6);
    c[0] = LINK;
    c[1] = 1;
    new DataView(c.buffer).setUint32(2, this.returned);
    this.returned = 0;
    this.sendRaw(r);
    this.sendRaw(c);
  }

  onPing(h) {
    const at = { i: 0 };
    const variant = readVarint(h.payload, at);
    const seq = readVarint(h.payload, at);
    const sentAt = readVarint(h.payload, at);
    if (variant === 0n) {
      // Ping: echo it as a Pong.
      this.send(PING, concat(varint(1), varint(seq), varint(sentAt)));
      $("pings-answered").textContent = String(++this.answered);
      if (this.answered === 1) document.body.dataset.firstPingSeq = String(seq);
    } else if (variant === 1n) {
      const rtt = nowUs() - Number(sentAt);
      this.rtts.push(rtt / 1000);
      if (this.rtts.length > 20) this.rtts.shift();
      const avg = this.rtts.reduce((a, b) => a + b, 0) / this.rtts.length;
      $("rtt").textContent = `${(rtt / 1000).toFixed(2)} ms (mean of last ${this.rtts.length}: ${avg.toFixed(2)} ms)`;
      document.body.dataset.pongs = String(Number(document.body.dataset.pongs || 0) + 1);
    }
  }

  ping() {
    const payload = concat(varint(0), varint(this.seq++), varint(BigInt(nowUs())));
    this.send(PING, payload);
  }

  /** A message to the neighbour (route kind 0, direct). */
  send(service, payload) {
    this.sendRaw(frame(service, 0, 0n, this.source, payload));
    this.counts.out++;
  }

  sendRaw(f) {
    const prefixed = new Uint8Array(4 + f.length);
    new DataView(prefixed.buffer).setUint32(0, f.length);
    prefixed.set(f, 4);
    for (let at = 0; at < prefixed.length; at += CHUNK) {
      this.reliable.send(prefixed.subarray(at, at + CHUNK));
    }
  }
}

function nowUs() {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

function waitFor(target, event, check) {
  return new Promise((resolve) => {
    if (check()) return resolve();
    const f = () => {
      if (check()) {
        target.removeEventListener(event, f);
        resolve();
      }
    };
    target.addEventListener(event, f);
  });
}

/** The chat topic, from the page's fragment (`#topic=…`); "chat" by default. */
function topicParam() {
  return new URLSearchParams(location.hash.slice(1)).get("topic") || "chat";
}

/** The network secret, from the page's fragment (`#secret=…`): a fragment
 * never leaves the browser. */
function secretParam() {
  return new URLSearchParams(location.hash.slice(1)).get("secret");
}

async function networkKey() {
  const secret = secretParam();
  if (!secret) return new Uint8Array(32); // no network key: all zero
  return sha256(new TextEncoder().encode(secret));
}

async function main() {
  setState("starting");
  const me = await identity();
  const myId = await nodeIdOf(me.publicKey);
  $("my-id").textContent = myId;
  document.body.dataset.nodeId = myId;
  const netKey = await networkKey();

  // First contact: the node's signalling socket.
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/signal`);
  const inbox = [];
  let wake = null;
  ws.onmessage = (e) => {
    inbox.push(JSON.parse(e.data));
    if (wake) wake();
  };
  const next = async () => {
    while (!inbox.length) await new Promise((r) => (wake = r));
    return inbox.shift();
  };
  ws.onclose = () => log("signalling socket closed");
  const welcome = await next();
  if (welcome.type !== "welcome") throw new Error(`unexpected ${welcome.type}`);
  $("node-id").textContent = welcome.node;
  if (welcome.networkKey && !secretParam()) {
    log("this node's network has a key: open the page as …/#secret=<the network secret>");
  }

  setState("connecting");
  const pc = new RTCPeerConnection({ iceServers: [] });
  closeOnFailure = pc;
  const reliable = pc.createDataChannel("plexus");
  const unreliable = pc.createDataChannel("plexus-unreliable", { ordered: false, maxRetransmits: 0 });
  reliable.binaryType = unreliable.binaryType = "arraybuffer";
  // Everything that arrives before the hello is checked waits here, in
  // order: the node may send right after its hello.
  const early = { reliable: [], unreliable: [] };
  let arrived = null;
  reliable.onmessage = (e) => {
    early.reliable.push(new Uint8Array(e.data));
    if (arrived) arrived();
  };
  unreliable.onmessage = (e) => early.unreliable.push(new Uint8Array(e.data));
  pc.onconnectionstatechange = () => {
    $("pc-state").textContent = pc.connectionState;
    if (pc.connectionState === "failed" || pc.connectionState === "closed") setState("disconnected");
  };
  await pc.setLocalDescription(await pc.createOffer());
  await Promise.race([
    waitFor(pc, "icegatheringstatechange", () => pc.iceGatheringState === "complete"),
    new Promise((r) => setTimeout(r, 3000)),
  ]);
  ws.send(JSON.stringify({ type: "offer", sdp: pc.localDescription.sdp }));
  const answer = await next();
  if (answer.type !== "answer") throw new Error(answer.message || `unexpected ${answer.type}`);
  await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });

  // The hello exchange: ours first (we offered), then the node's hello
  // or its refusal; then frames.
  const t = await sha256(DOMAIN, fingerprint(pc.localDescription.sdp), fingerprint(pc.remoteDescription.sdp));
  await waitFor(reliable, "open", () => reliable.readyState === "open");
  reliable.send(await makeHello(me, netKey, t));
  while (!early.reliable.length) {
    if (reliable.readyState !== "open") throw new Error("the node closed the channel before its hello");
    await new Promise((r) => {
      arrived = r;
      reliable.onclose = r;
    });
  }
  const theirs = early.reliable.shift();
  if (theirs.length === 2 && theirs[0] === 0xff) {
    throw new Error(
      theirs[1] === 1
        ? "refused by the node: network key mismatch (open the page as …/#secret=<the network secret>)"
        : "refused by the node: our hello did not verify",
    );
  }
  const verified = await checkHello(theirs, netKey, t);
  if (verified !== welcome.node) throw new Error(`the node proved ${verified}, not ${welcome.node}`);
  $("verified").textContent = `yes: the node proved ${verified}`;
  log(`connected to ${verified} over WebRTC; its identity is verified`);
  setState("connected");

  const peer = new Peer(me, myId, verified, netKey, reliable, unreliable);
  const fail = (e) => {
    log(`closing: ${e.message}`);
    pc.close();
    setState("disconnected");
  };
  const onReliable = (data) => {
    try {
      peer.onStream(data);
      peer.confirm();
    } catch (err) {
      fail(err);
    }
  };
  const onUnreliable = (data) => {
    try {
      peer.onFrame(data);
      peer.confirm();
    } catch (err) {
      fail(err);
    }
  };
  // What came while the hello was checked first, then as it comes.
  early.reliable.forEach(onReliable);
  early.unreliable.forEach(onUnreliable);
  reliable.onmessage = (e) => onReliable(new Uint8Array(e.data));
  unreliable.onmessage = (e) => onUnreliable(new Uint8Array(e.data));
  reliable.onclose = () => setState("disconnected");
  peer.ping();
  peer.joinOverlay();
  $("chat-topic").textContent = peer.chat.name;
  $("chat-form").onsubmit = (e) => {
    e.preventDefault();
    const text = $("chat-input").value;
    if (!text || reliable.readyState !== "open") return;
    $("chat-input").value = "";
    try {
      peer.chat.publish(text);
    } catch (err) {
      fail(err);
    }
  };
  setInterval(() => {
    if (reliable.readyState !== "open") return;
    peer.ping();
    $("frames").textContent = `${peer.counts.in} in, ${peer.counts.out} out (${peer.counts.other} of other services)`;
  }, PING_EVERY_MS);
}

/** The peer connection, closed if setting up fails. */
let closeOnFailure = null;

main().catch((e) => {
  log(`error: ${e.message}`);
  if (closeOnFailure) {
    closeOnFailure.close();
    $("pc-state").textContent = "closed";
  }
  setState("failed");
  $("error").textContent = e.message;
});
