// The state page: Singer bookmarks per state id, read-only, with the run that holds each lease.
"use strict";

async function show(id, row) {
  document.querySelectorAll("tr.selected").forEach((r) => r.classList.remove("selected"));
  if (row) row.classList.add("selected");
  const pane = document.getElementById("value");
  pane.replaceChildren(UI.el("div", { class: "head row" }, UI.el("b", { class: "grow", text: id }), UI.el("span", { class: "muted", text: "read-only" })));
  try {
    const v = await UI.get("/api/state/" + encodeURIComponent(id));
    pane.append(UI.el("pre", { id: "state-json", text: JSON.stringify(v.value, null, 2) }));
  } catch (e) { pane.append(UI.el("div", { class: "body banner error", text: e.message })); }
}

function lease(l) {
  if (!l) return UI.el("span", { class: "muted", text: "free" });
  return UI.el("span", { class: "pill busy", text: `pid ${l.pid} on ${l.host} since ${UI.time(l.acquired)}` });
}

async function render() {
  const main = document.getElementById("main");
  let data;
  try { data = await UI.get("/api/state"); } catch (e) { UI.banner(document.getElementById("banner"), "error", e.message); return; }
  const old = document.getElementById("state-wrap");
  if (old) old.remove();
  const body = UI.el("tbody");
  for (const s of data.state) {
    const row = UI.el("tr", { class: "link", "data-id": s.id }, UI.el("td", {}, UI.el("b", { text: s.id })),
      UI.el("td", { text: UI.time(s.updated) + " (" + UI.ago(s.updated) + ")" }), UI.el("td", { class: "num", text: s.size.toLocaleString() + " B" }), UI.el("td", {}, lease(s.lease)));
    row.addEventListener("click", () => show(s.id, row));
    body.append(row);
  }
  const head = UI.el("tr", {}, ...["state id", "updated", "size", "lease"].map((h) => UI.el("th", { text: h })));
  const list = UI.el("div", { class: "card" },
    UI.el("div", { class: "head row" }, UI.el("b", { class: "grow", text: "Bookmarks" }), UI.el("span", { class: "muted", text: "eltmake state list" })),
    data.state.length ? UI.el("table", { class: "list" }, UI.el("thead", {}, head), body)
      : UI.el("div", { class: "body muted", text: "No state stored yet: incremental extract-load steps keep their bookmarks here." }));
  const pane = UI.el("div", { class: "card", id: "value" }, UI.el("div", { class: "body muted", text: "Click a state id to see its bookmarks." }));
  main.append(UI.el("div", { class: "state-wrap", id: "state-wrap" }, list, pane));
  const first = body.querySelector("tr");
  if (first) show(first.dataset.id, first);
}

async function main() {
  await UI.start("state");
  await render();
  UI.on("build_finished", render);
  UI.on("lock", (d) => { if (!d.holder) render(); });
  UI.listen(UI.session.last_event);
}

document.addEventListener("DOMContentLoaded", main);
