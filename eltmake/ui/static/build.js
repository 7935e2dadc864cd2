// The build page: start a build, and watch it live: each step's status and the output lines as
// they come (server-sent events; after a reconnect the stream resumes where it stopped).
"use strict";

const MAX_LINES = 5000;
const B = { build: null, lines: [], filter: null, timer: null };

function $(id) { return document.getElementById(id); }

function reset(snapshot) {
  B.build = snapshot;
  B.lines = [];
  if (snapshot) {
    for (const m of snapshot.messages || []) B.lines.push([null, m, "m"]);
    for (const name of snapshot.order) for (const l of snapshot.lines[name] || []) B.lines.push([name, l, ""]);
    if (snapshot.error) B.lines.push([null, snapshot.error, "e"]);
  }
  renderSteps();
  renderOutput();
  headline();
}

function headline() {
  const b = B.build;
  const h = $("headline");
  $("stop").disabled = !(b && (b.status === "running" || b.status === "starting")) || UI.session.read_only;
  if (!b) { h.textContent = "No build started here yet."; return; }
  const end = b.ended || Date.now() / 1000;
  let cmd = "eltmake build" + (b.targets.length ? " " + b.targets.join(" ") : "");
  if (b.dry_run) cmd += " -n";
  if (b.force) cmd += b.targets.length ? b.targets.map((t) => " --force " + t).join("") : " -B";
  h.replaceChildren(UI.badge(b.status), " ", UI.el("code", { text: cmd }), ` · ${UI.duration(end - b.started)}`);
  if (b.run_id) h.append(" · ", UI.el("a", { href: "/runs/" + b.run_id, text: "build #" + b.run_id + " in the history" }));
}

function renderSteps() {
  const body = $("steps");
  body.replaceChildren();
  const b = B.build;
  if (!b) return;
  const counts = {};
  for (const name of b.order) {
    const s = b.steps[name] || { status: "pending" };
    counts[s.status] = (counts[s.status] || 0) + 1;
    const dur = s.status === "running" ? Date.now() / 1000 - s.started : s.duration_s;
    const row = UI.el("tr", { class: B.filter === name ? "selected" : null, "data-target": name, "data-status": s.status, onclick: () => { B.filter = B.filter === name ? null : name; renderSteps(); renderOutput(); } },
      UI.el("td", {}, UI.dot(s.status)),
      UI.el("td", {}, UI.el("b", { text: name }), UI.el("div", { class: "muted", text: s.progress || s.error || s.reason || "" })),
      UI.el("td", { class: "status-text s-" + s.status, text: UI.word(s.status) }),
      UI.el("td", { class: "num muted", text: s.status === "running" || s.duration_s ? UI.duration(dur) : "" }));
    body.append(row);
  }
  $("counts").textContent = Object.entries(counts).map(([k, v]) => `${v} ${UI.word(k)}`).join(" · ");
}

function lineNode(l) {
  const [target, text, cls] = l;
  const frag = document.createDocumentFragment();
  if (target && !B.filter) frag.append(UI.el("span", { class: "t", text: target + " | " }));
  frag.append(cls ? UI.el("span", { class: cls, text }) : text);
  frag.append("\n");
  return frag;
}

function renderOutput() {
  const pre = $("output");
  pre.replaceChildren();
  $("output-title").textContent = B.filter ? "Output of " + B.filter : "Output";
  const frag = document.createDocumentFragment();
  for (const l of B.lines) if (!B.filter || l[0] === B.filter) frag.append(lineNode(l));
  pre.append(frag);
  if ($("follow").checked) pre.scrollTop = pre.scrollHeight;
}

function addLine(target, text, cls) {
  const l = [target, text, cls || ""];
  B.lines.push(l);
  if (B.lines.length > MAX_LINES) B.lines.splice(0, B.lines.length - MAX_LINES);
  if (!B.filter || target === B.filter) {
    const pre = $("output");
    pre.append(lineNode(l));
    if ($("follow").checked) pre.scrollTop = pre.scrollHeight;
  }
}

function mine(d) { return B.build && d.build === B.build.id; }

function live() {
  UI.on("build_queued", (d) => reset({ id: d.build, targets: d.targets, status: "starting", order: [], steps: {}, lines: {}, messages: [], started: Date.now() / 1000, dry_run: d.dry_run, force: d.force }));
  UI.on("build_started", (d) => {
    if (!mine(d)) return;
    Object.assign(B.build, { status: "running", order: d.targets, run_id: d.run_id, dry_run: d.dry_run });
    for (const t of d.targets) B.build.steps[t] = B.build.steps[t] || { status: "pending" };
    renderSteps(); headline();
  });
  UI.on("step_started", (d) => { if (mine(d)) { B.build.steps[d.target] = { status: "running", reason: d.reason, started: Date.now() / 1000 }; renderSteps(); } });
  UI.on("step_progress", (d) => { if (mine(d)) { (B.build.steps[d.target] || {}).progress = d.text; renderSteps(); } });
  UI.on("step_log", (d) => { if (mine(d)) addLine(d.target, d.line); });
  UI.on("step_finished", (d) => {
    if (!mine(d)) return;
    B.build.steps[d.target] = d;
    if (d.status === "failed") {
      if (d.error) addLine(d.target, d.error, "e");
    }
    renderSteps();
  });
  UI.on("message", (d) => { if (mine(d)) addLine(null, d.text, "m"); });
  UI.on("build_finished", (d) => {
    if (!mine(d)) return;
    Object.assign(B.build, { status: d.status, ended: Date.now() / 1000 });
    if (d.error) addLine(null, d.error, "e");
    headline(); renderSteps();
  });
  UI.on("reset", async () => reset((await UI.get("/api/build")).build));
  UI.on("lock", lockBanner);
}

function lockBanner() {
  const lock = UI.session.lock;
  const busy = lock && !lock.this_ui;
  UI.banner($("banner"), "info", busy ? "The project is busy: " + UI.lockText(lock) + ". Builds from here can start when it has finished." : "");
  $("build").disabled = !!busy && !$("dry").checked;
}

async function main() {
  const s = await UI.start("build");
  if (s.read_only) $("form").querySelectorAll("select, label, #build, #stop").forEach((e) => e.classList.add("hidden"));
  const graph = await UI.get("/api/graph").catch(() => null);
  if (graph) for (const n of graph.nodes) $("target").append(UI.el("option", { value: n.name, text: n.name }));
  const wanted = new URLSearchParams(location.search).get("target");
  if (wanted) $("target").value = wanted;
  $("dry").onchange = lockBanner;
  $("build").onclick = async () => {
    const t = $("target").value;
    try {
      await UI.post("/api/builds", { targets: t ? [t] : [], dry_run: $("dry").checked, force: $("force").checked });
      UI.banner($("banner"), "info", "");
    } catch (e) { UI.banner($("banner"), "error", e.message); }
  };
  $("stop").onclick = async () => {
    try { await UI.post("/api/builds/stop"); addLine(null, "stopping: the running steps are being terminated…", "m"); } catch (e) { UI.banner($("banner"), "error", e.message); }
  };
  $("follow").onchange = renderOutput;
  live();
  reset(s.build);
  lockBanner();
  UI.listen(s.last_event);
  B.timer = setInterval(() => { if (B.build && B.build.status === "running") { renderStepsTimes(); headline(); } }, 1000);
}

function renderStepsTimes() {
  for (const row of $("steps").querySelectorAll('tr[data-status="running"]')) {
    const s = B.build.steps[row.dataset.target];
    row.lastChild.textContent = UI.duration(Date.now() / 1000 - s.started);
  }
}

document.addEventListener("DOMContentLoaded", main);
