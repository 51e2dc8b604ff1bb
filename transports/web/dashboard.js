// The node dashboard: polls /api/status every second and redraws the
// tables and the SVG picture of the overlay. Plain JavaScript.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const COLOURS = { quic: "#2454c5", tcp: "#7a3fb0", webrtc: "#c2410c", mem: "#5b6475" };

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
}

function fill(tbody, rows, cols) {
  tbody.replaceChildren();
  for (const r of rows) {
    const tr = document.createElement("tr");
    cols(r, tr);
    tbody.appendChild(tr);
  }
}

function el(name, attrs, text) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function short(id) {
  return id.slice(0, 6) + "…";
}

function draw(s) {
  const svg = $("overlay");
  svg.replaceChildren();
  const pos = new Map([[s.node, [0, 0]]]);
  // Neighbours on the inner ring (one node may have several connections).
  const neighbours = [...new Set(s.connections.map((c) => c.node))];
  neighbours.forEach((n, i) => {
    const a = (2 * Math.PI * i) / Math.max(neighbours.length, 1) - Math.PI / 2;
    pos.set(n, [130 * Math.cos(a), 130 * Math.sin(a)]);
  });
  // Nodes reached through a neighbour on the outer ring.
  const far = s.routes.filter((r) => !pos.has(r.dest));
  far.forEach((r, i) => {
    const a = (2 * Math.PI * i) / Math.max(far.length, 1) - Math.PI / 2 + 0.3;
    pos.set(r.dest, [215 * Math.cos(a), 215 * Math.sin(a)]);
  });
  for (const r of far) {
    const [x1, y1] = pos.get(r.nextHop) || [0, 0];
    const [x2, y2] = pos.get(r.dest);
    svg.appendChild(el("line", { x1, y1, x2, y2, stroke: "#9aa3b5", "stroke-dasharray": "4 4" }));
  }
  for (const c of s.connections) {
    const [x, y] = pos.get(c.node);
    const colour = COLOURS[c.transport] || "#5b6475";
    svg.appendChild(el("line", { x1: 0, y1: 0, x2: x, y2: y, stroke: colour, "stroke-width": 3 }));
    if (c.rttMs != null) {
      svg.appendChild(el("text", { x: x / 2 + 6, y: y / 2 - 4, "font-size": 11, fill: colour }, `${c.rttMs.toFixed(1)} ms`));
    }
  }
  for (const [n, [x, y]] of pos) {
    const me = n === s.node;
    const conn = s.connections.find((c) => c.node === n);
    const fill = me ? "#1d2330" : conn ? COLOURS[conn.transport] || "#5b6475" : "#c5cbd8";
    const g = el("g", { "data-node": n });
    g.appendChild(el("circle", { cx: x, cy: y, r: me ? 16 : 11, fill }));
    g.appendChild(el("text", { x, y: y + (me ? 32 : 25), "text-anchor": "middle", "font-size": 11, "font-family": "monospace" }, me ? `${short(n)} (this node)` : short(n)));
    svg.appendChild(g);
  }
}

function render(s) {
  $("node").textContent = s.node;
  $("listen").textContent = s.listen.join(", ") || "(nothing)";
  $("busy").textContent = `${(s.driverBusyMs / 1000).toFixed(2)} s`;
  $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  $("stale").textContent = "";
  fill($("connections"), s.connections, (c, tr) => {
    tr.dataset.node = c.node;
    tr.dataset.transport = c.transport || "";
    cell(tr, c.conn, "mono");
    cell(tr, c.node, "mono");
    cell(tr, c.transport || "?", `t-${c.transport}`);
    cell(tr, c.direction);
    cell(tr, c.rttMs == null ? "…" : `${c.rttMs.toFixed(2)} ms`);
  });
  fill($("routes"), s.routes, (r, tr) => {
    cell(tr, r.dest, "mono");
    cell(tr, r.nextHop, "mono");
    cell(tr, String(r.hops));
    cell(tr, String(r.metric));
  });
  const counters = $("counters");
  counters.replaceChildren();
  const all = { ...s.stats, appEventsDropped: s.appEventsDropped };
  for (const [k, v] of Object.entries(all)) {
    const d = document.createElement("div");
    d.className = "counter";
    const b = document.createElement("b");
    b.textContent = v.toLocaleString();
    const span = document.createElement("span");
    span.textContent = k;
    d.append(b, span);
    counters.appendChild(d);
  }
  draw(s);
}

async function poll() {
  try {
    const r = await fetch("/api/status", { cache: "no-store" });
    if (!r.ok) throw new Error(await r.text());
    render(await r.json());
  } catch (e) {
    $("stale").textContent = `(not updating: ${e.message})`;
  }
  setTimeout(poll, 1000);
}

poll();
