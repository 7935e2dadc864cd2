// eltmake ui: what every page shares: the top bar, the session (CSRF token, read-only, lock),
// JSON calls, the live event stream, and words and colours for statuses.
"use strict";

const UI = {
  session: null,

  STATUS_WORDS: {
    up_to_date: "up to date", out_of_date: "out of date", never_built: "never built",
    running: "running", failed: "failed", pending: "waiting", built: "built",
    skipped: "up to date", would_run: "would run", upstream_failed: "upstream failed",
    cancelled: "cancelled", ok: "done", interrupted: "interrupted", error: "error",
    starting: "starting", superseded: "superseded",
  },

  word(status) { return UI.STATUS_WORDS[status] || status || ""; },

  el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  },

  dot(status) { return UI.el("span", { class: "dot s-" + status, title: UI.word(status) }); },
  badge(status) { return UI.el("span", { class: "badge s-" + status, text: UI.word(status) }); },
  kind(kind, color) {
    const k = UI.el("span", { class: "kind", text: kind });
    k.style.background = color || "#57534e";
    return k;
  },

  async get(path) {
    const r = await fetch(path, { headers: { accept: "application/json" } });
    const body = (r.headers.get("content-type") || "").includes("json") ? await r.json() : await r.text();
    if (!r.ok) throw new Error((body && body.error) || r.statusText);
    return body;
  },

  async post(path, data) {
    const r = await fetch(path, {
      method: "POST",
      headers: { "content-type": "application/json", "x-eltmake-csrf": UI.session.csrf },
      body: JSON.stringify(data || {}),
    });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.error || r.statusText);
    return body;
  },

  duration(s) {
    if (s === null || s === undefined || isNaN(s)) return "";
    if (s < 1) return (s * 1000).toFixed(0) + " ms";
    if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + " s";
    const m = Math.floor(s / 60);
    return m + " min " + Math.round(s - m * 60) + " s";
  },

  time(t) {
    if (!t) return "–";
    const d = new Date(t * 1000);
    const today = new Date().toDateString() === d.toDateString();
    const hms = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
    return today ? hms : d.toISOString().slice(0, 10) + " " + hms;
  },

  ago(t) {
    const s = Date.now() / 1000 - t;
    if (s < 60) return "just now";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    if (s < 86400) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " days ago";
  },

  lockText(lock) {
    if (!lock) return "";
    if (lock.this_ui) return "a build started here is running";
    return "pid " + lock.pid + (lock.command ? " (" + lock.command + ")" : "") + " is building this project";
  },

  // The top bar: project, pages, environment, read-only and "busy" pills.
  header(active) {
    const nav = UI.el("nav");
    for (const [href, label] of [["/graph", "Graph"], ["/build", "Build"], ["/runs", "Runs"], ["/state", "State"]]) {
      nav.append(UI.el("a", { href, class: href === "/" + active ? "active" : null, text: label }));
    }
    const right = UI.el("div", { class: "right" });
    const top = UI.el("header", { class: "top" },
      UI.el("div", { class: "brand" }, "eltmake", UI.el("small", { id: "project-name" })), nav, right);
    document.body.prepend(top);
    UI.topRight = right;
  },

  renderTop() {
    const s = UI.session;
    document.getElementById("project-name").textContent = s.project;
    document.title = s.project + " · eltmake";
    UI.topRight.replaceChildren();
    if (s.env) UI.topRight.append(UI.el("span", { class: "pill env", text: "env " + s.env }));
    if (s.read_only) UI.topRight.append(UI.el("span", { class: "pill ro", text: "read-only" }));
    if (s.lock) UI.topRight.append(UI.el("span", { class: "pill busy", id: "busy", title: UI.lockText(s.lock), text: "building…" }));
  },

  async start(active) {
    UI.header(active);
    UI.session = await UI.get("/api/session");
    UI.renderTop();
    UI.on("lock", (d) => { UI.session.lock = d.holder; UI.renderTop(); });
    return UI.session;
  },

  // --- live events: one EventSource per page; it resumes by itself after a reconnect ---------
  handlers: {},
  source: null,
  on(kind, fn) {
    (UI.handlers[kind] = UI.handlers[kind] || []).push(fn);
    if (UI.source) UI.source.addEventListener(kind, (ev) => fn(JSON.parse(ev.data), ev));
  },
  listen(after) {
    // `after`: the id of the snapshot the page already has, so nothing is applied twice.
    UI.source = new EventSource("/api/events" + (after ? "?after=" + after : ""));
    for (const [kind, fns] of Object.entries(UI.handlers)) {
      for (const fn of fns) UI.source.addEventListener(kind, (ev) => fn(JSON.parse(ev.data), ev));
    }
    UI.source.addEventListener("open", () => document.body.classList.remove("offline"));
    UI.source.addEventListener("error", () => document.body.classList.add("offline"));
  },

  banner(box, kind, text) {
    box.replaceChildren();
    if (!text) { box.classList.add("hidden"); return; }
    box.className = "banner " + kind;
    box.textContent = text;
  },
};
