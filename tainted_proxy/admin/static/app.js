// tainted-proxy admin page: reads /report, /pools, /sessions, /servers and /stats every few
// seconds and draws the totals, two <canvas> charts and sortable tables. No library, no
// network access beyond this proxy. Every value from the proxy is written with
// textContent (statements and program names come from clients).
"use strict";

const params = new URLSearchParams(location.search);
const REFRESH_SECONDS = Math.max(1, Number(params.get("refresh")) || 3);
const PALETTE = [
  "#2f6fbd", "#d9822b", "#3f9c5a", "#c23b52", "#8459b8", "#2a9d9a",
  "#b8892f", "#d45fa0", "#6b7b8c", "#7fa13a", "#a0522d", "#4b8fd6",
];
const reasonColors = new Map();
let timer = null;
let busy = false;

// ---------------------------------------------------------------------------------------
// formatting

const dash = "—";
function num(v, digits) {
  if (v === null || v === undefined || Number.isNaN(v)) return dash;
  if (digits === undefined) return Number.isInteger(v) ? v.toLocaleString("en") : v.toFixed(2);
  return Number(v).toFixed(digits);
}
function secs(v) {
  if (v === null || v === undefined) return dash;
  if (v < 1) return (v * 1000).toFixed(0) + " ms";
  if (v < 120) return v.toFixed(1) + " s";
  if (v < 7200) return (v / 60).toFixed(1) + " min";
  return (v / 3600).toFixed(1) + " h";
}
function clock(epochSeconds, withSeconds) {
  const d = new Date(epochSeconds * 1000);
  const p = (n) => String(n).padStart(2, "0");
  return p(d.getHours()) + ":" + p(d.getMinutes()) + (withSeconds ? ":" + p(d.getSeconds()) : "");
}
function ident(v) {
  return v === null || v === undefined ? dash : String(v);
}
function list(v) {
  if (!v || v.length === 0) return dash;
  return v.join(", ");
}
function colorFor(reason) {
  if (!reasonColors.has(reason)) reasonColors.set(reason, PALETTE[reasonColors.size % PALETTE.length]);
  return reasonColors.get(reason);
}
function css(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

// ---------------------------------------------------------------------------------------
// sortable tables: columns = [{key, label, type: "num" | "text" | "code" | "hint", fmt}]

const tables = {};

function defineTable(id, columns, opts) {
  const el = document.getElementById(id);
  const t = { el, columns, rows: [], sort: opts.sort || null, rowClass: opts.rowClass, empty: opts.empty };
  const thead = el.createTHead();
  const tr = thead.insertRow();
  for (const col of columns) {
    const th = document.createElement("th");
    th.textContent = col.label;
    th.dataset.key = col.key;
    th.scope = "col";
    th.title = "sort by " + col.label;
    if (col.type === "num") th.className = "num";
    th.addEventListener("click", () => {
      if (t.sort && t.sort.key === col.key) t.sort.dir = -t.sort.dir;
      else t.sort = { key: col.key, dir: col.type === "num" ? -1 : 1 };
      renderTable(t);
    });
    tr.appendChild(th);
  }
  el.createTBody();
  tables[id] = t;
  return t;
}

function sortValue(row, col) {
  const v = col.sortBy ? col.sortBy(row) : row[col.key];
  if (Array.isArray(v)) return v.join(", ");
  return v;
}

function renderTable(t) {
  const rows = t.rows.slice();
  if (t.sort) {
    const col = t.columns.find((c) => c.key === t.sort.key);
    const dir = t.sort.dir;
    rows.sort((a, b) => {
      const x = sortValue(a, col);
      const y = sortValue(b, col);
      const xn = x === null || x === undefined || x === "";
      const yn = y === null || y === undefined || y === "";
      if (xn || yn) return xn === yn ? 0 : xn ? 1 : -1; // empty cells last either way
      if (typeof x === "number" && typeof y === "number") return (x - y) * dir;
      return String(x).localeCompare(String(y), "en", { numeric: true }) * dir;
    });
  }
  for (const th of t.el.tHead.rows[0].cells) {
    if (t.sort && th.dataset.key === t.sort.key) th.setAttribute("aria-sort", t.sort.dir > 0 ? "ascending" : "descending");
    else th.removeAttribute("aria-sort");
  }
  const body = document.createElement("tbody");
  if (rows.length === 0) {
    const td = body.insertRow().insertCell();
    td.colSpan = t.columns.length;
    td.className = "empty";
    td.textContent = t.empty || "none";
  }
  for (const row of rows) {
    const tr = body.insertRow();
    if (t.rowClass) tr.className = t.rowClass(row) || "";
    for (const col of t.columns) {
      const td = tr.insertCell();
      const v = row[col.key];
      td.textContent = col.fmt ? col.fmt(v, row) : v === null || v === undefined || v === "" ? dash : Array.isArray(v) ? list(v) : col.type === "num" ? num(v) : String(v);
      if (col.type) td.className = col.type;
      if (col.title) td.title = col.title(row) || "";
    }
  }
  t.el.replaceChild(body, t.el.tBodies[0]);
}

function setRows(id, rows) {
  const t = tables[id];
  t.rows = rows;
  renderTable(t);
}

// ---------------------------------------------------------------------------------------
// charts

function setupCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 600;
  if (!canvas.dataset.cssHeight) canvas.dataset.cssHeight = canvas.getAttribute("height") || "200";
  const height = Number(canvas.dataset.cssHeight);
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  canvas.style.height = height + "px";
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  ctx.font = "11px system-ui, sans-serif";
  return { ctx, width, height };
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function axes(ctx, box, yMax, yFmt) {
  ctx.strokeStyle = css("--grid");
  ctx.fillStyle = css("--muted");
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  // 5 steps: a "nice" maximum (1, 2, 2.5, 5 or 10 times a power of ten) gives round ticks
  for (let i = 0; i <= 5; i++) {
    const v = (yMax * i) / 5;
    const y = box.bottom - (box.bottom - box.top) * (i / 5);
    ctx.beginPath();
    ctx.moveTo(box.left, Math.round(y) + 0.5);
    ctx.lineTo(box.right, Math.round(y) + 0.5);
    ctx.stroke();
    ctx.fillText(yFmt(v), box.left - 6, y);
  }
}

function drawRatioChart(totals, now) {
  const canvas = document.getElementById("ratio-chart");
  const { ctx, width, height } = setupCanvas(canvas);
  const points = totals.history.map((h) => ({
    t: h.time,
    ratio: h.upstream_connections ? h.client_sessions / h.upstream_connections : null,
    clients: h.client_sessions,
    upstream: h.upstream_connections,
  }));
  points.push({ t: now, ratio: totals.multiplexing_ratio, clients: totals.client_sessions, upstream: totals.upstream_connections });
  const box = { left: 44, right: width - 10, top: 10, bottom: height - 22 };
  const values = points.map((p) => p.ratio).filter((v) => v !== null);
  const yMax = niceMax(Math.max(1, ...values));
  axes(ctx, box, yMax, (v) => (yMax <= 5 ? v.toFixed(1) : String(Math.round(v * 10) / 10)));
  const t0 = points[0].t;
  const t1 = Math.max(points[points.length - 1].t, t0 + 1);
  const x = (t) => box.left + ((t - t0) / (t1 - t0)) * (box.right - box.left);
  const y = (v) => box.bottom - (v / yMax) * (box.bottom - box.top);
  ctx.textAlign = "left";
  ctx.textBaseline = "top";
  ctx.fillText(clock(t0, true), box.left, box.bottom + 6);
  ctx.textAlign = "right";
  ctx.fillText(clock(t1, true), box.right, box.bottom + 6);
  // the ratio line (a gap where there was no upstream connection)
  ctx.strokeStyle = css("--accent");
  ctx.fillStyle = css("--accent");
  ctx.lineWidth = 2;
  ctx.beginPath();
  let drawing = false;
  let drawn = 0;
  for (const p of points) {
    if (p.ratio === null) {
      drawing = false;
      continue;
    }
    if (drawing) ctx.lineTo(x(p.t), y(p.ratio));
    else ctx.moveTo(x(p.t), y(p.ratio));
    drawing = true;
    drawn++;
  }
  ctx.stroke();
  for (const p of points) {
    if (p.ratio === null) continue;
    ctx.beginPath();
    ctx.arc(x(p.t), y(p.ratio), points.length > 60 ? 1.5 : 3, 0, 2 * Math.PI);
    ctx.fill();
  }
  const last = points[points.length - 1];
  ctx.fillStyle = css("--fg");
  ctx.textAlign = "left";
  ctx.textBaseline = "top";
  ctx.fillText(
    `now ${num(last.ratio)} (${last.clients} sessions / ${last.upstream} connections)`,
    box.left + 6,
    box.top,
  );
  canvas.dataset.points = String(drawn);
}

function drawPinsChart(series) {
  const canvas = document.getElementById("pins-chart");
  const { ctx, width, height } = setupCanvas(canvas);
  const box = { left: 44, right: width - 10, top: 10, bottom: height - 22 };
  const reasons = new Set();
  for (const m of series) for (const r of Object.keys(m.by_reason)) reasons.add(r);
  const order = [...reasons].sort();
  order.forEach(colorFor);
  const yMax = niceMax(Math.max(5, ...series.map((m) => m.total)));
  axes(ctx, box, yMax, (v) => String(Math.round(v)));
  const n = Math.max(series.length, 1);
  const slot = (box.right - box.left) / n;
  const barW = Math.max(2, slot * 0.7);
  let total = 0;
  series.forEach((m, i) => {
    let base = box.bottom;
    const x0 = box.left + i * slot + (slot - barW) / 2;
    for (const r of order) {
      const v = m.by_reason[r] || 0;
      if (!v) continue;
      const h = (v / yMax) * (box.bottom - box.top);
      ctx.fillStyle = colorFor(r);
      ctx.fillRect(x0, base - h, barW, h);
      base -= h;
      total += v;
    }
  });
  ctx.fillStyle = css("--muted");
  ctx.textBaseline = "top";
  const every = Math.ceil(n / 8);
  series.forEach((m, i) => {
    if ((n - 1 - i) % every !== 0) return;
    ctx.textAlign = "center";
    ctx.fillText(clock(m.minute, false), box.left + i * slot + slot / 2, box.bottom + 6);
  });
  canvas.dataset.total = String(total);
  const legend = document.getElementById("pins-legend");
  legend.replaceChildren();
  if (order.length === 0) {
    const span = document.createElement("span");
    span.className = "muted";
    span.textContent = "no pins or events in this window";
    legend.appendChild(span);
  }
  for (const r of order) {
    const span = document.createElement("span");
    const sw = document.createElement("i");
    sw.style.background = colorFor(r);
    span.appendChild(sw);
    span.appendChild(document.createTextNode(r));
    legend.appendChild(span);
  }
}

// ---------------------------------------------------------------------------------------
// totals

function card(label, value, title) {
  const div = document.createElement("div");
  div.className = "card";
  if (title) div.title = title;
  const v = document.createElement("div");
  v.className = "value";
  v.textContent = value;
  const l = document.createElement("div");
  l.className = "label";
  l.textContent = label;
  div.append(v, l);
  return div;
}

function drawTotals(totals, report, stats) {
  const pins = Object.values(report.pins_by_reason).reduce((a, b) => a + b, 0);
  const errors = Object.values(stats.errors).reduce((a, b) => a + b, 0);
  const w = totals.wait_seconds;
  document.getElementById("totals").replaceChildren(
    card("client sessions", num(totals.client_sessions)),
    card("upstream connections", `${totals.upstream_connections} / ${totals.upstream_cap}`, "open / upstream.max_connections"),
    card("upstream idle", num(totals.upstream_idle)),
    card("multiplexing ratio", num(totals.multiplexing_ratio), "client sessions per upstream connection"),
    card("pinned now", num(totals.pinned)),
    card("waiting", num(totals.waiting), "sessions waiting for a connection"),
    card("checkout wait p50 / p99", `${secs(w.p50)} / ${secs(w.p99)}`, "checkouts that had to wait"),
    card("pins since start", num(pins)),
    card("errors", num(errors), Object.entries(stats.errors).map(([k, v]) => `${k}: ${v}`).join("\n")),
    card("ledger entries", num(report.ledger_entries)),
  );
}

// ---------------------------------------------------------------------------------------
// the tables

function defineTables() {
  defineTable("pools", [
    { key: "upstream_user", label: "upstream user" },
    { key: "users", label: "proxy users" },
    { key: "modes", label: "modes" },
    { key: "clients_active", label: "active", type: "num" },
    { key: "clients_idle", label: "idle", type: "num" },
    { key: "clients_waiting", label: "waiting", type: "num" },
    { key: "pinned", label: "pinned", type: "num" },
    { key: "upstream_in_use", label: "conns in use", type: "num" },
    { key: "upstream_idle", label: "conns idle", type: "num" },
    { key: "cap", label: "cap", type: "num" },
    { key: "multiplexing_ratio", label: "ratio", type: "num" },
  ], { sort: { key: "upstream_user", dir: 1 }, empty: "no pools yet" });
  defineTable("subpools", [
    { key: "upstream_user", label: "upstream user" },
    { key: "settings", label: "settings", type: "code" },
    { key: "idle", label: "idle", type: "num" },
    { key: "in_use", label: "in use", type: "num" },
  ], { sort: { key: "idle", dir: -1 }, empty: "no upstream connections" });
  defineTable("sessions", [
    { key: "id", label: "id", type: "num", fmt: ident },
    { key: "user", label: "user" },
    { key: "address", label: "address" },
    { key: "program", label: "program" },
    { key: "mode", label: "mode" },
    { key: "state", label: "state" },
    { key: "upstream_thread_id", label: "upstream thread", type: "num", fmt: ident },
    { key: "pin", label: "pin", fmt: (v) => (v ? v : dash) },
    { key: "pin_reasons", label: "pin reasons" },
    { key: "pin_objects", label: "pin objects", type: "code" },
    { key: "pin_age_seconds", label: "pinned for", type: "num", fmt: secs },
    { key: "statement", label: "current statement", type: "code" },
    { key: "statement_age_seconds", label: "running for", type: "num", fmt: secs },
    { key: "connected_seconds", label: "connected", type: "num", fmt: secs },
    { key: "statements", label: "statements", type: "num" },
  ], { sort: { key: "id", dir: 1 }, rowClass: (r) => (r.pin ? "pinned" : ""), empty: "no client sessions" });
  defineTable("ledger", [
    { key: "user", label: "user" },
    { key: "program", label: "program" },
    { key: "mode", label: "mode" },
    { key: "reason", label: "reason" },
    { key: "fingerprint", label: "statement", type: "code" },
    { key: "count", label: "count", type: "num" },
    { key: "pinned_seconds", label: "pinned total", type: "num", fmt: secs },
    { key: "longest_pin_seconds", label: "longest", type: "num", fmt: secs },
    { key: "last_seen", label: "last seen", type: "num", fmt: (v) => (v ? clock(v, true) : dash) },
    { key: "hint", label: "hint", type: "hint", fmt: (v) => advice(v) },
  ], { sort: { key: "count", dir: -1 }, empty: "nothing has pinned yet" });
  defineTable("servers", [
    { key: "thread_id", label: "thread id", type: "num", fmt: ident },
    { key: "upstream_user", label: "upstream user" },
    { key: "state", label: "state" },
    { key: "client_id", label: "client", type: "num", fmt: ident },
    { key: "settings", label: "settings", type: "code" },
    { key: "age_seconds", label: "age", type: "num", fmt: secs },
    { key: "idle_seconds", label: "idle for", type: "num", fmt: secs },
  ], { sort: { key: "thread_id", dir: 1 }, empty: "no upstream connections" });
}

// the hint sentence without its "N × reason of user U by `statement`:" prefix (the row
// already shows those)
function advice(hint) {
  if (!hint) return dash;
  const i = hint.indexOf("`: ");
  return i >= 0 ? hint.slice(i + 3) : hint;
}

// ---------------------------------------------------------------------------------------
// refresh

async function getJSON(path) {
  const r = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (r.status === 401) {
    location.reload(); // the login form
    throw new Error("unauthorized");
  }
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

async function refresh() {
  if (busy) return;
  busy = true;
  const minutes = document.getElementById("minutes").value;
  try {
    const [report, pools, sessions, servers, stats] = await Promise.all([
      getJSON("/report?minutes=" + encodeURIComponent(minutes)),
      getJSON("/pools"),
      getJSON("/sessions"),
      getJSON("/servers"),
      getJSON("/stats"),
    ]);
    drawTotals(pools.totals, report, stats);
    drawRatioChart(pools.totals, report.generated_at);
    drawPinsChart(report.series);
    setRows("pools", pools.pools);
    const subpools = [];
    for (const p of pools.pools) for (const sp of p.subpools) subpools.push({ upstream_user: p.upstream_user, ...sp });
    setRows("subpools", subpools);
    setRows("sessions", sessions);
    document.getElementById("sessions-count").textContent = `${sessions.length} now, ${sessions.filter((s) => s.pin).length} pinned`;
    setRows("ledger", report.ledger);
    setRows("servers", servers);
    document.getElementById("error").hidden = true;
    document.getElementById("status").textContent = "updated " + clock(report.generated_at, true);
    document.body.dataset.loaded = String((Number(document.body.dataset.loaded) || 0) + 1);
  } catch (e) {
    const el = document.getElementById("error");
    el.textContent = "cannot read the proxy: " + e.message;
    el.hidden = false;
  } finally {
    busy = false;
  }
}

function schedule() {
  clearInterval(timer);
  timer = null;
  if (document.getElementById("auto").checked) timer = setInterval(refresh, REFRESH_SECONDS * 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("every").textContent = String(REFRESH_SECONDS);
  const minutes = params.get("minutes");
  if (minutes) document.getElementById("minutes").value = minutes;
  defineTables();
  document.getElementById("auto").addEventListener("change", schedule);
  document.getElementById("minutes").addEventListener("change", refresh);
  window.addEventListener("resize", refresh);
  refresh();
  schedule();
});
