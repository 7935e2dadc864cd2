// The graph page: targets laid out by dagre, coloured by status, with a details panel and the
// Build button. Big graphs show a neighbourhood first (LIMIT nodes), with "Show all".
"use strict";

const LIMIT = 150;
const W = 200, H = 58;
const SVGNS = "http://www.w3.org/2000/svg";
const STATUS_COLORS = {
  up_to_date: "#15803d", out_of_date: "#c2410c", never_built: "#94a3b8", running: "#2563eb",
  failed: "#dc2626", unknown: "#cbd5e1",
};
const G = {
  data: null, byName: {}, status: {}, selected: null, focus: null, showAll: false,
  k: 1, tx: 0, ty: 0, bounds: null, dryBuilds: new Set(),
};

function svg(tag, attrs, ...children) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

function short(text, n) { return text.length > n ? text.slice(0, n - 1) + "…" : text; }

function legend() {
  const box = document.getElementById("legend");
  for (const s of ["up_to_date", "out_of_date", "never_built", "running", "failed"]) {
    box.append(UI.el("span", {}, UI.dot(s), UI.word(s)));
  }
  box.append(UI.el("span", {}, UI.el("i", { class: "edge-solid" }), "dependency"));
  box.append(UI.el("span", {}, UI.el("i", { class: "edge-sample" }), "inferred"));
}

// --- which nodes to draw -------------------------------------------------------------------
function neighbourhood(centers, cap) {
  const seen = new Set(centers.filter((n) => G.byName[n]));
  let frontier = [...seen];
  for (let depth = 0; depth < 3 && frontier.length && seen.size < cap; depth++) {
    const next = [];
    for (const n of frontier) {
      for (const m of [...G.byName[n].preds, ...G.byName[n].succs]) {
        if (!seen.has(m) && seen.size < cap) { seen.add(m); next.push(m); }
      }
    }
    frontier = next;
  }
  return seen;
}

function visibleNodes() {
  const all = G.data.nodes.map((n) => n.name);
  if (all.length <= LIMIT || G.showAll) return new Set(all);
  const centers = G.focus ? [G.focus] : G.data.default;
  return neighbourhood(centers, LIMIT);
}

// --- drawing ----------------------------------------------------------------------------------
function draw() {
  const vis = visibleNodes();
  const total = G.data.nodes.length;
  const scope = document.getElementById("scope");
  const showAll = document.getElementById("show-all");
  if (vis.size < total) {
    scope.textContent = `showing ${vis.size} of ${total} targets around ${G.focus || G.data.default.join(", ")}`;
    showAll.classList.remove("hidden");
  } else {
    scope.textContent = `${total} targets`;
    showAll.classList.toggle("hidden", total <= LIMIT);
    showAll.textContent = total > LIMIT ? "Show fewer" : "Show all";
  }
  // Left to right reads like a pipeline; a long chain in a wide window reads better top down,
  // so a small graph takes whichever orientation draws it larger.
  let g = layout(vis, "LR");
  if (vis.size <= 60) {
    const alt = layout(vis, "TB");
    if (scaleFor(alt.graph()) > scaleFor(g.graph()) * 1.15) g = alt;
  }

  const vp = document.getElementById("viewport");
  vp.replaceChildren();
  const defs = svg("defs", {},
    svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
      svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#94a3b8" })));
  vp.append(defs);
  for (const id of g.edges()) {
    const { e, points } = g.edge(id);
    const d = points.map((p, i) => (i ? "L" : "M") + p.x.toFixed(1) + "," + p.y.toFixed(1)).join(" ");
    const path = svg("path", { d, class: "edge" + (e.inferred ? " inferred" : ""), "marker-end": "url(#arrow)" });
    if (e.inferred) path.append(svg("title", {}, document.createTextNode("inferred: " + (e.why || ""))));
    vp.append(path);
    if (e.inferred) {
      const mid = points[Math.floor(points.length / 2)];
      vp.append(svg("text", { x: mid.x, y: mid.y - 6, class: "edge-label", "text-anchor": "middle" }, document.createTextNode("inferred")));
    }
  }
  for (const name of g.nodes()) {
    const pos = g.node(name);
    const grp = drawNode(G.byName[name], pos.x - W / 2, pos.y - H / 2);
    vp.append(grp);
    fitPill(grp);
  }
  const gg = g.graph();
  G.bounds = { w: gg.width || 1, h: gg.height || 1 };
  paintAll();
  fit();
}

function layout(vis, rankdir) {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir, nodesep: 26, ranksep: rankdir === "LR" ? 56 : 44, marginx: 20, marginy: 20 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of G.data.nodes) if (vis.has(n.name)) g.setNode(n.name, { width: W, height: H });
  for (const e of G.data.edges) if (vis.has(e.from) && vis.has(e.to)) g.setEdge(e.from, e.to, { e });
  dagre.layout(g);
  return g;
}

function scaleFor(gg) {
  const box = document.getElementById("svg").getBoundingClientRect();
  return Math.min(box.width / (gg.width || 1), box.height / (gg.height || 1));
}

function drawNode(n, x, y) {
  const grp = svg("g", { class: "node", transform: `translate(${x},${y})`, "data-name": n.name, tabindex: 0 });
  grp.append(svg("rect", { class: "box", width: W, height: H, rx: 9 }));
  grp.append(svg("rect", { class: "bar", x: 0, y: 0, width: 7, height: H, rx: 3 }));
  grp.append(svg("text", { class: "name", x: 18, y: 24 }, document.createTextNode(short(n.name, 22))));
  const kw = n.kind.length * 6.7 + 12;
  grp.append(svg("rect", { class: "kindpill", x: 18, y: 34, width: kw, height: 17, rx: 4, fill: n.color }));
  grp.append(svg("text", { class: "kindtext", x: 18 + kw / 2, y: 46.5, "text-anchor": "middle" }, document.createTextNode(n.kind)));
  grp.append(svg("text", { class: "state", x: 26 + kw, y: 47 }));
  grp.append(svg("title"));
  grp.addEventListener("click", (ev) => { ev.stopPropagation(); select(n.name); });
  grp.addEventListener("dblclick", (ev) => { ev.stopPropagation(); G.focus = n.name; draw(); });
  grp.addEventListener("keydown", (ev) => { if (ev.key === "Enter") select(n.name); });
  G.byName[n.name].el = grp;
  return grp;
}

// The kind's pill fits its text as the browser's font draws it.
function fitPill(grp) {
  const text = grp.querySelector("text.kindtext");
  const w = Math.ceil(text.getComputedTextLength()) + 12;
  grp.querySelector("rect.kindpill").setAttribute("width", w);
  text.setAttribute("x", 18 + w / 2);
  grp.querySelector("text.state").setAttribute("x", 26 + w);
}

function paint(name) {
  const n = G.byName[name];
  if (!n || !n.el || !n.el.isConnected) return;
  const st = G.status[name] || { status: "unknown", reason: "" };
  const color = STATUS_COLORS[st.status] || STATUS_COLORS.unknown;
  n.el.querySelector("rect.bar").setAttribute("fill", color);
  n.el.querySelector("rect.box").setAttribute("stroke", color);
  const label = n.el.querySelector("text.state");
  label.textContent = st.status === "unknown" ? "…" : UI.word(st.status);
  label.setAttribute("fill", color);
  n.el.querySelector("title").textContent =
    `${name} (${n.kind})\n${UI.word(st.status)}${st.reason ? ": " + st.reason : ""}` + (n.description ? "\n" + n.description : "");
  n.el.classList.toggle("running", st.status === "running");
  n.el.classList.toggle("selected", G.selected === name);
  n.el.setAttribute("data-status", st.status);
}

function paintAll() { for (const n of G.data.nodes) paint(n.name); }

// --- pan and zoom ---------------------------------------------------------------------------
function apply() {
  document.getElementById("viewport").setAttribute("transform", `translate(${G.tx},${G.ty}) scale(${G.k})`);
}
function fit() {
  const box = document.getElementById("svg").getBoundingClientRect();
  const k = Math.min(box.width / G.bounds.w, box.height / G.bounds.h, 1.35);
  G.k = Math.max(k, 0.1);
  G.tx = (box.width - G.bounds.w * G.k) / 2;
  G.ty = (box.height - G.bounds.h * G.k) / 2;
  apply();
}
function zoom(f, cx, cy) {
  const box = document.getElementById("svg").getBoundingClientRect();
  cx = cx ?? box.width / 2; cy = cy ?? box.height / 2;
  const k = Math.min(Math.max(G.k * f, 0.08), 4);
  G.tx = cx - (cx - G.tx) * (k / G.k);
  G.ty = cy - (cy - G.ty) * (k / G.k);
  G.k = k;
  apply();
}
function panZoom() {
  const s = document.getElementById("svg");
  s.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const box = s.getBoundingClientRect();
    zoom(ev.deltaY < 0 ? 1.12 : 1 / 1.12, ev.clientX - box.left, ev.clientY - box.top);
  }, { passive: false });
  let drag = null;
  s.addEventListener("pointerdown", (ev) => { if (!ev.target.closest(".node")) { drag = [ev.clientX, ev.clientY, G.tx, G.ty]; s.classList.add("dragging"); } });
  window.addEventListener("pointermove", (ev) => { if (drag) { G.tx = drag[2] + ev.clientX - drag[0]; G.ty = drag[3] + ev.clientY - drag[1]; apply(); } });
  window.addEventListener("pointerup", () => { drag = null; s.classList.remove("dragging"); });
  s.addEventListener("click", (ev) => { if (!ev.target.closest(".node")) select(null); });
  document.getElementById("zoom-in").onclick = () => zoom(1.25);
  document.getElementById("zoom-out").onclick = () => zoom(1 / 1.25);
  document.getElementById("fit").onclick = fit;
  window.addEventListener("resize", fit);
}

// --- the side panel ---------------------------------------------------------------------------
function summary() {
  const body = document.getElementById("side-body");
  document.getElementById("side-title").textContent = G.data.project;
  const counts = {};
  for (const n of G.data.nodes) {
    const s = (G.status[n.name] || {}).status || "unknown";
    counts[s] = (counts[s] || 0) + 1;
  }
  const list = UI.el("div");
  for (const s of ["running", "failed", "out_of_date", "never_built", "up_to_date"]) {
    if (counts[s]) list.append(UI.el("div", { class: "row" }, UI.dot(s), UI.el("b", { text: counts[s] }), UI.word(s)));
  }
  const stale = G.data.nodes.filter((n) => ["out_of_date", "failed", "never_built"].includes((G.status[n.name] || {}).status));
  const why = UI.el("dl");
  for (const n of stale.slice(0, 40)) {
    why.append(UI.el("dt", {}, UI.el("a", { href: "#" + n.name, onclick: (ev) => { ev.preventDefault(); select(n.name); }, text: n.name })));
    why.append(UI.el("dd", { class: "muted", text: G.status[n.name].reason }));
  }
  body.replaceChildren(
    UI.el("div", { class: "muted", text: "Click a target for its details; double-click to centre on it." }),
    list,
    stale.length ? UI.el("div", {}, UI.el("b", { text: "Why they would run" }), why) : UI.el("div", { class: "muted", text: G.loaded ? "Everything is up to date." : "Deciding statuses…" }),
  );
}

async function select(name) {
  const prev = G.selected;
  G.selected = name;
  if (prev) paint(prev);
  document.getElementById("build").textContent = name ? "Build " + short(name, 22) : "Build all";
  if (!name) { summary(); return; }
  paint(name);
  const n = G.byName[name];
  if ((!n.el || !n.el.isConnected) && !G.showAll) { G.focus = name; draw(); }
  const body = document.getElementById("side-body");
  document.getElementById("side-title").replaceChildren(name);
  const st = G.status[name] || { status: "unknown", reason: "" };
  body.replaceChildren(UI.el("div", { class: "row" }, UI.kind(n.kind, n.color), UI.badge(st.status)));
  if (st.reason) body.append(UI.el("div", { id: "side-reason", text: st.reason }));
  let t;
  try { t = await UI.get("/api/targets/" + encodeURIComponent(name)); } catch (e) { body.append(UI.el("div", { class: "banner error", text: e.message })); return; }
  if (G.selected !== name) return;
  const dl = UI.el("dl");
  if (t.description) dl.append(UI.el("dt", { text: "description" }), UI.el("dd", { text: t.description }));
  const deps = UI.el("dd");
  for (const p of n.preds) deps.append(UI.el("a", { href: "#" + p, onclick: (ev) => { ev.preventDefault(); select(p); }, text: p }), " ");
  dl.append(UI.el("dt", { text: "depends on" }), n.preds.length ? deps : UI.el("dd", { class: "muted", text: "nothing" }));
  if (t.last) {
    const l = t.last;
    dl.append(UI.el("dt", { text: "last run" }), UI.el("dd", {},
      UI.badge(l.status), " ", UI.duration((l.ended || 0) - (l.started || 0)), " · ",
      UI.el("a", { href: `/runs/${l.run_id}#${encodeURIComponent(name)}`, text: `build #${l.run_id}` }),
      " · ", UI.ago(l.ended || l.started)));
    if (l.error) dl.append(UI.el("dd", { class: "status-text s-failed", text: l.error }));
    if (l.has_log) dl.append(UI.el("dd", {}, UI.el("a", { href: `/runs/${l.run_id}#${encodeURIComponent(name)}`, id: "open-log", text: "open its log" })));
  } else {
    dl.append(UI.el("dt", { text: "last run" }), UI.el("dd", { class: "muted", text: "not in the recent history" }));
  }
  dl.append(UI.el("dt", { text: "definition (secrets masked)" }), UI.el("dd", {}, UI.el("pre", { text: JSON.stringify(t.table, null, 2) })));
  body.append(dl);
}

// --- statuses, live -----------------------------------------------------------------------------
async function loadStatus() {
  const box = document.getElementById("banner");
  try {
    const r = await UI.get("/api/status");
    G.status = r.targets;
    G.loaded = true;
    UI.session.lock = r.lock;
    lockBanner();
  } catch (e) {
    UI.banner(box, "error", e.message);
  }
  paintAll();
  if (!G.selected) summary(); else select(G.selected);
}

function lockBanner() {
  const lock = UI.session.lock;
  const btn = document.getElementById("build");
  const busy = lock && !lock.this_ui;
  btn.disabled = !!busy && !document.getElementById("dry").checked;
  UI.banner(document.getElementById("banner"), "info",
    busy ? "The project is busy: " + UI.lockText(lock) + ". Builds from here can start when it has finished." : "");
}

function live() {
  UI.on("build_started", (d) => { if (d.dry_run) G.dryBuilds.add(d.build); });
  UI.on("step_started", (d) => {
    if (G.dryBuilds.has(d.build)) return;
    G.status[d.target] = { ...(G.status[d.target] || {}), status: "running", reason: d.reason };
    paint(d.target);
  });
  UI.on("step_finished", (d) => {
    if (G.dryBuilds.has(d.build)) return;
    const was = G.status[d.target] || {};
    if (d.status === "built" || d.status === "skipped") G.status[d.target] = { ...was, status: "up_to_date", reason: "" };
    else if (d.status === "failed") G.status[d.target] = { ...was, status: "failed", reason: d.error || d.reason };
    else if (was.status === "running") G.status[d.target] = { ...was, status: "out_of_date", reason: UI.word(d.status) };
    paint(d.target);
  });
  UI.on("build_finished", (d) => { if (!G.dryBuilds.has(d.build)) loadStatus(); });
  UI.on("lock", (d) => { lockBanner(); if (!d.holder) loadStatus(); });
  UI.on("reset", loadStatus);
}

// --- main -----------------------------------------------------------------------------------------
async function main() {
  const s = await UI.start("graph");
  legend();
  panZoom();
  if (s.read_only) for (const id of ["build", "dry", "force"]) document.getElementById(id).closest("button, label").classList.add("hidden");
  try {
    G.data = await UI.get("/api/graph");
  } catch (e) {
    UI.banner(document.getElementById("banner"), "error", e.message);
    return;
  }
  for (const n of G.data.nodes) G.byName[n.name] = { ...n, preds: [], succs: [] };
  for (const e of G.data.edges) { G.byName[e.to].preds.push(e.from); G.byName[e.from].succs.push(e.to); }
  const names = document.getElementById("names");
  for (const n of G.data.nodes) names.append(UI.el("option", { value: n.name }));
  document.getElementById("find").addEventListener("change", (ev) => {
    if (G.byName[ev.target.value]) { G.focus = ev.target.value; if (!G.showAll) draw(); select(ev.target.value); }
  });
  document.getElementById("show-all").onclick = () => { G.showAll = !G.showAll; draw(); };
  document.getElementById("dry").onchange = lockBanner;
  document.getElementById("build").onclick = startBuild;
  const wanted = decodeURIComponent(location.hash.slice(1));
  if (G.byName[wanted]) G.focus = wanted;
  draw();
  summary();
  if (G.byName[wanted]) select(wanted);
  live();
  UI.listen(s.last_event);
  lockBanner();
  await loadStatus();
}

async function startBuild() {
  const box = document.getElementById("banner");
  const dry = document.getElementById("dry").checked;
  try {
    const r = await UI.post("/api/builds", {
      targets: G.selected ? [G.selected] : [], dry_run: dry, force: document.getElementById("force").checked,
    });
    box.className = "banner info";
    box.replaceChildren(`Build ${r.build} started${dry ? " (dry run)" : ""}. `, UI.el("a", { href: "/build", text: "Watch its output on the Build page" }));
  } catch (e) {
    UI.banner(box, "error", e.message);
  }
}

document.addEventListener("DOMContentLoaded", main);
