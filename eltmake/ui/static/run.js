// One build of the history: its steps as a timeline, and each step's log (the tail first, the
// whole log on demand).
"use strict";

const TAIL = 200;
const R = { run: null, selected: null };

function $(id) { return document.getElementById(id); }

async function openLog(name, full) {
  R.selected = name;
  const token = (R.token = (R.token || 0) + 1);  // a later click wins over a slower answer
  document.querySelectorAll(".tl-row, tr[data-target]").forEach((r) => r.classList.toggle("selected", r.dataset.target === name));
  history.replaceState(null, "", "#" + encodeURIComponent(name));
  const card = $("log-card");
  card.classList.remove("hidden");
  const head = UI.el("div", { class: "head row" }, UI.el("b", { class: "grow", id: "log-title", text: "Log of " + name }));
  card.replaceChildren(head);
  const step = R.run.steps.find((s) => s.target === name);
  if (step && step.error) card.append(UI.el("div", { class: "body status-text s-failed", text: step.error }));
  let text;
  try {
    const r = await fetch(`/api/runs/${R.run.id}/logs/${encodeURIComponent(name)}${full ? "?full=1" : ""}`);
    if (!r.ok) throw new Error((await r.json()).error);
    text = await r.text();
  } catch (e) {
    if (token !== R.token) return;
    card.append(UI.el("div", { class: "body muted", text: "No output kept for this step: it printed nothing, or it ran before logs were kept." }));
    return;
  }
  if (token !== R.token) return;
  const lines = text ? text.split("\n").length : 0;
  if (!full && lines >= TAIL) {
    head.append(UI.el("span", { class: "muted", text: `the last ${TAIL} lines ` }),
      UI.el("button", { id: "full-log", onclick: () => openLog(name, true), text: "Show the whole log" }));
  } else {
    head.append(UI.el("span", { class: "muted", text: lines === 1 ? "1 line" : `${lines} lines` }));
  }
  const pre = UI.el("pre", { class: "log", id: "log", text: text || "(empty)" });
  card.append(pre);
  pre.scrollTop = full ? 0 : pre.scrollHeight;
}

function timeline(run) {
  const ran = run.steps.filter((s) => !["skipped", "upstream_failed"].includes(s.status));
  const rest = run.steps.filter((s) => ["skipped", "upstream_failed"].includes(s.status));
  const t0 = run.started;
  const t1 = Math.max(run.ended || 0, ...run.steps.map((s) => s.ended || 0), t0 + 0.001);
  const span = t1 - t0;
  const box = UI.el("div", { class: "timeline" });
  for (const s of ran) {
    const bar = UI.el("div", { class: "tl-bar s-" + s.status, title: `${UI.word(s.status)}: ${s.reason || ""}` });
    bar.style.left = (100 * ((s.started || t0) - t0) / span).toFixed(2) + "%";
    bar.style.width = (100 * ((s.ended || t1) - (s.started || t0)) / span).toFixed(2) + "%";
    box.append(UI.el("div", { class: "tl-row", "data-target": s.target, onclick: () => openLog(s.target) },
      UI.el("div", { class: "tl-name", title: s.target }, UI.dot(s.status), " ", s.target),
      UI.el("div", { class: "tl-track" }, bar),
      UI.el("div", { class: "tl-dur", text: UI.duration((s.ended || t1) - (s.started || t0)) })));
  }
  if (!ran.length) box.append(UI.el("div", { class: "muted", text: "No step ran in this build: everything was up to date." }));
  box.append(UI.el("div", { class: "tl-axis" }, UI.el("span", { text: "0 s" }), UI.el("span", { text: UI.duration(span / 2) }), UI.el("span", { text: UI.duration(span) })));
  const card = UI.el("div", { class: "card" }, UI.el("div", { class: "head row" }, UI.el("b", { class: "grow", text: "Timeline" }), UI.el("span", { class: "muted", text: "click a step for its log" })), box);
  if (rest.length) {
    const names = rest.map((s) => s.target);
    card.append(UI.el("div", { class: "body muted", text: `${rest.length} not run (up to date or upstream failed): ${names.slice(0, 30).join(", ")}${names.length > 30 ? "…" : ""}` }));
  }
  return card;
}

function table(run) {
  const body = UI.el("tbody");
  for (const s of run.steps) {
    body.append(UI.el("tr", { class: "link", "data-target": s.target, onclick: () => openLog(s.target) },
      UI.el("td", {}, UI.el("b", { text: s.target })), UI.el("td", {}, UI.badge(s.status)),
      UI.el("td", { class: "num", text: UI.duration((s.ended || 0) - (s.started || 0)) }),
      UI.el("td", { class: "muted", text: s.reason || "" }),
      UI.el("td", { text: Object.entries(s.stats || {}).map(([k, v]) => `${Number(v).toLocaleString()} ${k}`).join(", ") }),
      UI.el("td", { text: s.has_log ? "log" : "" })));
  }
  const head = UI.el("tr", {}, ...["target", "status", "took", "reason", "stats", ""].map((h) => UI.el("th", { text: h })));
  return UI.el("div", { class: "card" }, UI.el("div", { class: "head" }, UI.el("b", { text: "Steps" })), UI.el("table", { class: "list" }, UI.el("thead", {}, head), body));
}

async function main() {
  await UI.start("runs");
  const id = location.pathname.split("/").pop();
  const mainEl = $("main");
  try { R.run = await UI.get("/api/runs/" + id); } catch (e) { UI.banner($("banner"), "error", e.message); return; }
  const r = R.run;
  const dur = r.ended ? UI.duration(r.ended - r.started) : "still running (or killed)";
  mainEl.append(UI.el("div", { class: "row" }, UI.el("a", { href: "/runs", text: "← all builds" })),
    UI.el("div", { class: "row" }, UI.el("h1", { text: `Build #${r.id}` }), UI.badge(r.status || "unknown"),
      UI.el("span", { class: "muted", text: `eltmake ${r.command} ${r.targets.join(" ")} · started ${UI.time(r.started)} · ${dur} · ${r.built} built, ${r.skipped} up to date, ${r.failed} failed` })),
    timeline(r), UI.el("div", { class: "card hidden", id: "log-card" }), table(r));
  const wanted = decodeURIComponent(location.hash.slice(1));
  const first = r.steps.find((s) => s.target === wanted) || r.steps.find((s) => s.status === "failed") || r.steps.find((s) => s.has_log);
  if (first) openLog(first.target);
}

document.addEventListener("DOMContentLoaded", main);
