// The runs page: the build history, as `eltmake runs` shows it; a row opens the build's steps.
"use strict";

async function render() {
  const main = document.getElementById("main");
  let data;
  try { data = await UI.get("/api/runs?limit=100"); } catch (e) { UI.banner(document.getElementById("banner"), "error", e.message); return; }
  const old = document.getElementById("runs-card");
  if (old) old.remove();
  const body = UI.el("tbody");
  for (const r of data.runs) {
    const dur = r.ended ? UI.duration(r.ended - r.started) : (r.status === "running" ? "running" : "killed?");
    body.append(UI.el("tr", { class: "link", "data-run": r.id, onclick: () => { location.href = "/runs/" + r.id; } },
      UI.el("td", {}, UI.el("a", { href: "/runs/" + r.id, text: "#" + r.id })),
      UI.el("td", { text: UI.time(r.started) }),
      UI.el("td", {}, UI.badge(r.status || "unknown")),
      UI.el("td", { class: "num", text: dur }),
      UI.el("td", { class: "num", text: r.built }),
      UI.el("td", { class: "num muted", text: r.skipped }),
      UI.el("td", { class: "num" + (r.failed ? " status-text s-failed" : " muted"), text: r.failed }),
      UI.el("td", { class: "muted", text: r.command }),
      UI.el("td", { text: r.targets.slice(-4).join(" ") + (r.targets.length > 4 ? ` (+${r.targets.length - 4})` : "") })));
  }
  const head = UI.el("tr", {}, ...["build", "started", "status", "took", "built", "up to date", "failed", "command", "targets"].map((h, i) => UI.el("th", { class: i >= 3 && i <= 6 ? "num" : null, text: h })));
  const card = UI.el("div", { class: "card", id: "runs-card" },
    UI.el("div", { class: "head row" }, UI.el("b", { class: "grow", text: "Build history" }), UI.el("span", { class: "muted", text: "the last 100 builds · eltmake runs" })),
    data.runs.length ? UI.el("table", { class: "list" }, UI.el("thead", {}, head), body)
      : UI.el("div", { class: "body muted", text: "No builds recorded yet: start one on the Build page or with `eltmake build`." }));
  main.append(card);
}

async function main() {
  await UI.start("runs");
  await render();
  UI.on("build_finished", render);
  UI.on("build_started", render);
  UI.on("lock", render);
  UI.listen(UI.session.last_event);
}

document.addEventListener("DOMContentLoaded", main);
