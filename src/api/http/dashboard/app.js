// The dashboard: reads the gateway's admin API and /metrics, draws with uPlot. No build step;
// plain modern JavaScript so that the gateway can embed it as it is.
"use strict";

const TOKEN_KEY = "tollgate.admin-token";
const $ = (id) => document.getElementById(id);
const charts = {};
let timer = null;
let currency = "USD";

// --- formatting ------------------------------------------------------------------------------

function money(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "-";
  const abs = Math.abs(value);
  const digits = abs === 0 ? 2 : abs >= 100 ? 2 : abs >= 1 ? 4 : Math.min(10, 2 - Math.floor(Math.log10(abs)) + 2);
  const symbol = currency === "USD" ? "$" : currency + " ";
  return symbol + value.toFixed(digits);
}
/// Axis ticks: three significant digits, small sums in millionths.
function tick(value) {
  const abs = Math.abs(value);
  if (abs === 0) return "0";
  if (abs < 0.01) return Number((value * 1e6).toPrecision(3)) + " µ" + (currency === "USD" ? "$" : currency);
  return money(Number(value.toPrecision(3)));
}
const count = (value) => (value ?? 0).toLocaleString("en-US");
const percent = (ratio) => (ratio === null || ratio === undefined || Number.isNaN(ratio) ? "-" : (ratio * 100).toFixed(1) + " %");
const ms = (value) => (value === null || value === undefined ? "-" : value.toFixed(2) + " ms");
const seconds = (value) => (value >= 3600 ? (value / 3600).toFixed(2) + " h" : value >= 60 ? (value / 60).toFixed(1) + " min" : value.toFixed(1) + " s");
const clock = (iso) => (iso ? new Date(iso).toLocaleString() : "-");

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function fillTable(id, rows, columns) {
  const body = $(id).tBodies[0];
  body.replaceChildren();
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    const td = cell("nothing in this range", "empty");
    td.colSpan = columns;
    tr.append(td);
    body.append(tr);
    return;
  }
  for (const cells of rows) {
    const tr = document.createElement("tr");
    for (const c of cells) tr.append(c instanceof Node ? wrap(c) : cell(c));
    body.append(tr);
  }
}

function wrap(node) {
  if (node.tagName === "TD") return node;
  const td = document.createElement("td");
  td.append(node);
  return td;
}

function meter(ratio) {
  const outer = document.createElement("span");
  outer.className = "meter" + (ratio >= 1 ? " bad" : ratio >= 0.8 ? " warn" : "");
  const inner = document.createElement("span");
  inner.style.width = Math.min(100, Math.max(0, ratio * 100)).toFixed(1) + "%";
  outer.append(inner);
  const box = document.createElement("span");
  box.append(outer, document.createTextNode(percent(ratio)));
  return box;
}

// --- talking to the gateway ------------------------------------------------------------------

class NeedsToken extends Error {}

async function get(path, asText) {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  const reply = await fetch(path, { headers, cache: "no-store" });
  if (reply.status === 401 || reply.status === 403) throw new NeedsToken(await message(reply));
  if (!reply.ok) throw new Error(path.split("?")[0] + ": " + (await message(reply)));
  return asText ? reply.text() : reply.json();
}

async function message(reply) {
  try {
    const body = await reply.json();
    return body.error || reply.statusText;
  } catch {
    return reply.status + " " + reply.statusText;
  }
}

/// Prometheus text exposition: one sample per line, `name{labels} value`.
function parseMetrics(text) {
  const samples = [];
  const line = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/;
  const label = /(\w+)="((?:[^"\\]|\\.)*)"/g;
  for (const row of text.split("\n")) {
    if (row === "" || row[0] === "#") continue;
    const m = line.exec(row);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || "").matchAll(label)) labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

const pick = (samples, name) => samples.filter((s) => s.name === name);
function byModel(samples, name) {
  const sums = new Map();
  for (const s of pick(samples, name)) sums.set(s.labels.model, (sums.get(s.labels.model) || 0) + s.value);
  return sums;
}

// --- the range -------------------------------------------------------------------------------

function currentRange() {
  const span = Number($("range").value);
  const to = new Date();
  const from = new Date(to.getTime() - span * 1000);
  // Steps are whole minutes; about 60 points whatever the range.
  const step = Math.max(60, Math.round(span / 60 / 60) * 60);
  return { from: from.toISOString(), to: to.toISOString(), step, span };
}

// --- drawing ---------------------------------------------------------------------------------

const PALETTE = ["#2b6cb0", "#dd6b20", "#38a169", "#805ad5", "#d53f8c", "#319795", "#b7791f", "#718096", "#e53e3e", "#3182ce"];

function draw(id, data, series, axes) {
  const target = $(id);
  const width = Math.max(300, target.clientWidth || 600);
  const options = {
    width,
    height: 240,
    series: [{}, ...series],
    axes: axes || [{}, { values: (u, ticks) => ticks.map(tick), size: 70 }],
    scales: { x: { time: true } },
    legend: { live: false },
  };
  if (charts[id]) charts[id].destroy();
  target.replaceChildren();
  charts[id] = new uPlot(options, data, target);
}

/// Series of `/v1/costs/timeseries` on a full grid of steps (steps without usage are 0).
function grid(range, stepSeconds) {
  const step = stepSeconds * 1000;
  const first = Math.floor(new Date(range.from).getTime() / step) * step;
  const last = new Date(range.to).getTime();
  const times = [];
  for (let t = first; t <= last; t += step) times.push(t);
  return times;
}

function groupName(group) {
  const values = Object.values(group);
  return values.length ? values.map((v) => v || "(none)").join(" / ") : "all";
}

function drawSpend(series, range, step, grouping) {
  const times = grid(range, step);
  const index = new Map(times.map((t, i) => [t, i]));
  const lines = series.slice(0, PALETTE.length).map((s, i) => {
    const values = new Array(times.length).fill(0);
    for (const p of s.points) {
      const at = index.get(new Date(p.t).getTime());
      if (at !== undefined) values[at] = p.cost_usd;
    }
    return { label: groupName(s.group), values, stroke: PALETTE[i], width: 2 };
  });
  $("spend-caption").textContent = "Spend over time by " + grouping + " (per " + step / 60 + " min)";
  draw("spend-chart", [times.map((t) => t / 1000), ...lines.map((l) => l.values)], lines.map(({ label, stroke, width }) => ({ label, stroke, width })));
}

function drawCache(series, range, step) {
  const times = grid(range, step);
  const index = new Map(times.map((t, i) => [t, i]));
  const requests = new Array(times.length).fill(0);
  const hits = new Array(times.length).fill(0);
  const saved = new Array(times.length).fill(0);
  for (const s of series) {
    for (const p of s.points) {
      const at = index.get(new Date(p.t).getTime());
      if (at === undefined) continue;
      requests[at] += p.requests;
      hits[at] += p.cache_hits;
      saved[at] += p.saved_usd;
    }
  }
  const ratio = requests.map((r, i) => (r > 0 ? hits[i] / r : null));
  draw(
    "cache-chart",
    [times.map((t) => t / 1000), ratio, saved],
    [
      { label: "hit ratio", stroke: PALETTE[0], width: 2, scale: "ratio", value: (u, v) => percent(v) },
      { label: "saved", stroke: PALETTE[2], width: 2, scale: "money", value: (u, v) => money(v) },
    ],
    [
      {},
      { scale: "ratio", values: (u, ticks) => ticks.map((t) => (t * 100).toFixed(0) + "%"), size: 50 },
      { scale: "money", side: 1, values: (u, ticks) => ticks.map(tick), size: 70, grid: { show: false } },
    ],
  );
}

// --- panels ----------------------------------------------------------------------------------

function showTotals(rows, range) {
  const totals = { cost: 0, requests: 0, hits: 0, saved: 0, idle: 0 };
  for (const r of rows) {
    totals.cost += r.cost_usd;
    totals.requests += r.requests;
    totals.hits += r.cache_hits;
    totals.saved += r.saved_usd;
    if (r.group.tenant === "__idle__") totals.idle += r.cost_usd;
  }
  const served = totals.cost - totals.idle;
  const perThousand = totals.requests > 0 ? (served / totals.requests) * 1000 : null;
  const ratio = totals.requests > 0 ? totals.hits / totals.requests : null;
  const set = (id, value, text) => {
    $(id).dataset.value = value === null ? "" : String(value);
    $(id).textContent = text;
  };
  $("totals").dataset.from = range.from;
  $("totals").dataset.to = range.to;
  set("total-spend", totals.cost, money(totals.cost));
  set("total-requests", totals.requests, count(totals.requests));
  set("per-thousand", perThousand, money(perThousand));
  set("hit-ratio", ratio, percent(ratio));
  set("total-saved", totals.saved, money(totals.saved));
  set("total-idle", totals.idle, money(totals.idle));
}

function showTenants(rows) {
  const served = rows.filter((r) => r.group.tenant !== "__idle__").sort((a, b) => b.cost_usd - a.cost_usd);
  fillTable(
    "tenants",
    served.map((r) => [
      r.group.tenant, r.group.team || "-", count(r.requests), money(r.cost_usd),
      money(r.requests > 0 ? (r.cost_usd / r.requests) * 1000 : null), percent(r.hit_ratio),
      money(r.saved_usd), ms(r.p50_latency_ms), ms(r.p99_latency_ms),
    ]),
    9,
  );
}

function showModels(rows) {
  const models = new Map();
  for (const r of rows) {
    const name = r.group.model;
    const m = models.get(name) || { requests: 0, cost: 0, hits: 0, saved: 0, idle: 0, p50: null, p99: null };
    if (r.group.tenant === "__idle__") {
      m.idle += r.cost_usd;
    } else {
      m.requests += r.requests;
      m.cost += r.cost_usd;
      m.hits += r.cache_hits;
      m.saved += r.saved_usd;
      // Percentiles do not add up across tenants: the busiest tenant's stand for the model.
      if (m.p50 === null || r.requests > (m.top || 0)) Object.assign(m, { p50: r.p50_latency_ms, p99: r.p99_latency_ms, top: r.requests });
    }
    models.set(name, m);
  }
  fillTable(
    "models",
    [...models].sort((a, b) => b[1].cost - a[1].cost).map(([name, m]) => [
      name, count(m.requests), money(m.cost), money(m.requests > 0 ? (m.cost / m.requests) * 1000 : null),
      percent(m.requests > 0 ? m.hits / m.requests : null), money(m.saved), money(m.idle), ms(m.p50), ms(m.p99),
    ]),
    9,
  );
}

function batchBars(buckets) {
  // Cumulative buckets to counts per size band, drawn as small bars.
  const box = document.createElement("span");
  box.className = "bars";
  let previous = 0;
  const bands = buckets.filter((b) => b.le !== "+Inf").map((b) => {
    const n = b.value - previous;
    previous = b.value;
    return { le: b.le, n };
  });
  const most = Math.max(1, ...bands.map((b) => b.n));
  for (const b of bands) {
    const bar = document.createElement("span");
    bar.style.height = ((b.n / most) * 100).toFixed(0) + "%";
    bar.title = "up to " + b.le + " rows: " + count(b.n) + " batches";
    box.append(bar);
  }
  return box;
}

function showDevices(samples) {
  const busy = pick(samples, "tollgate_device_busy_seconds_total");
  const idle = pick(samples, "tollgate_device_idle_seconds_total");
  const idleOf = (s) => idle.find((i) => i.labels.model === s.labels.model && i.labels.instance === s.labels.instance);
  const busyOf = (s) => busy.find((b) => b.labels.model === s.labels.model && b.labels.instance === s.labels.instance);
  fillTable(
    "instances",
    pick(samples, "tollgate_device_utilization_ratio").map((s) => [
      s.labels.model, s.labels.instance, meter(s.value), seconds(busyOf(s)?.value || 0), seconds(idleOf(s)?.value || 0),
    ]),
    5,
  );
  const gauge = (name) => new Map(pick(samples, name).map((s) => [s.labels.model, s.value]));
  const ready = gauge("tollgate_model_ready");
  const loaded = gauge("tollgate_model_loaded");
  const instances = gauge("tollgate_model_instances");
  const depth = gauge("tollgate_queue_depth");
  const inflight = gauge("tollgate_inflight_requests");
  const refused = byModel(samples, "tollgate_rejections_total");
  const idleCost = byModel(samples, "tollgate_idle_cost_usd_total");
  const batches = gauge("tollgate_batch_size_count");
  const rows = gauge("tollgate_batch_size_sum");
  const models = [...new Set([...ready.keys(), ...depth.keys()])].sort();
  fillTable(
    "queues",
    models.map((model) => {
      const buckets = pick(samples, "tollgate_batch_size_bucket").filter((b) => b.labels.model === model).map((b) => ({ le: b.labels.le, value: b.value }));
      const n = batches.get(model) || 0;
      return [
        model, ready.get(model) ? "yes" : "no", loaded.has(model) ? (loaded.get(model) ? "yes" : "unloaded") : "-",
        count(instances.get(model) ?? 0), count(depth.get(model) ?? 0), count(inflight.get(model) ?? 0),
        count(refused.get(model) ?? 0), count(n), n > 0 ? ((rows.get(model) || 0) / n).toFixed(2) : "-",
        batchBars(buckets), money(idleCost.get(model) ?? 0),
      ];
    }),
    11,
  );
}

function showBudgets(body) {
  fillTable(
    "budgets",
    body.budgets.map((b) => [
      b.tenant, meter(b.used_ratio), money(b.spent_usd), money(b.limit_usd) + " / " + b.period,
      money(b.projected_usd), b.runs_out ? clock(b.runs_out) : "not this period", b.action,
    ]),
    7,
  );
}

function showAlerts(body) {
  const list = $("alerts");
  list.replaceChildren();
  const recent = body.alerts.slice().reverse().slice(0, 50);
  if (recent.length === 0) {
    const li = document.createElement("li");
    li.className = "empty";
    li.textContent = "no alerts";
    list.append(li);
  }
  for (const a of recent) {
    const li = document.createElement("li");
    const time = document.createElement("time");
    time.dateTime = a.time;
    time.textContent = clock(a.time);
    const kind = document.createElement("span");
    kind.className = "kind";
    kind.textContent = a.kind;
    li.append(time, kind, document.createTextNode(a.message));
    list.append(li);
  }
}

// --- the loop --------------------------------------------------------------------------------

async function refresh() {
  const range = currentRange();
  const grouping = $("group").value;
  const span = "from=" + encodeURIComponent(range.from) + "&to=" + encodeURIComponent(range.to);
  try {
    const [costs, byModelRows, series, totalSeries, metrics, budgets, alerts] = await Promise.all([
      get("/v1/costs?group_by=team,tenant&" + span),
      get("/v1/costs?group_by=model,tenant&" + span),
      get("/v1/costs/timeseries?group_by=" + grouping + "&step_seconds=" + range.step + "&" + span),
      get("/v1/costs/timeseries?group_by=tenant&step_seconds=" + range.step + "&" + span),
      get("/metrics", true),
      get("/v1/budgets"),
      get("/v1/alerts"),
    ]);
    currency = costs.currency || "USD";
    $("login").hidden = true;
    $("board").hidden = false;
    showTotals(costs.rows, range);
    showTenants(costs.rows);
    showModels(byModelRows.rows);
    drawSpend(series.series, range, series.step_seconds, grouping);
    drawCache(totalSeries.series.filter((s) => s.group.tenant !== "__idle__"), range, totalSeries.step_seconds);
    showDevices(parseMetrics(metrics));
    showBudgets(budgets);
    showAlerts(alerts);
    $("status").className = "";
    $("status").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.refreshed = String(Date.now());
  } catch (error) {
    if (error instanceof NeedsToken) {
      askForToken(sessionStorage.getItem(TOKEN_KEY) ? "that token was refused: " + error.message : "");
      return;
    }
    $("status").className = "error";
    $("status").textContent = error.message;
  }
}

function askForToken(why) {
  stop();
  $("board").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = why;
  $("status").textContent = "waiting for the admin token";
  $("token").focus();
}

function stop() {
  if (timer !== null) clearInterval(timer);
  timer = null;
}

function start() {
  stop();
  refresh();
  const every = Number($("every").value);
  if (every > 0) timer = setInterval(refresh, every * 1000);
  $("forget").hidden = !sessionStorage.getItem(TOKEN_KEY);
}

/// Asks for the token before any call that would be refused without it.
async function begin() {
  try {
    const access = await (await fetch("/dashboard/access.json", { cache: "no-store" })).json();
    if (access.token_required && !sessionStorage.getItem(TOKEN_KEY)) {
      askForToken("");
      return;
    }
  } catch (error) {
    $("status").className = "error";
    $("status").textContent = "the gateway did not answer: " + error.message;
  }
  start();
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value);
  $("token").value = "";
  start();
});
$("forget").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  askForToken("");
});
for (const id of ["range", "group", "every"]) $(id).addEventListener("change", start);
window.addEventListener("resize", () => {
  for (const chart of Object.values(charts)) chart.setSize({ width: Math.max(300, chart.root.parentElement.clientWidth), height: 240 });
});
begin();
