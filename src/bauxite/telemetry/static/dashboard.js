// Bauxite carbon dashboard: reads dashboard/series (JSON from the gateway's own totals) and draws it with uPlot.
// No build step and no third-party requests: this file, uPlot and the stylesheet are served by the gateway.
"use strict";

const SERIES_URL = "dashboard/series";
const REFRESH_MS = 10000;
const TOKEN_KEY = "bauxite-telemetry-token";
const PALETTE = ["#2f7d4f", "#1f5fa8", "#c0612b", "#7b4fa3", "#b0902b", "#2b9aa0", "#a83254", "#5a6b60"];
const charts = new Map(); // chart id -> {plot, labels}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children) node.append(child);
  return node;
}

function sum(group) {
  return Object.values(group || {}).reduce((a, b) => a + b, 0);
}

// Grams CO2e in the unit that keeps 3 significant figures readable.
function grams(g) {
  if (g >= 1e6) return (g / 1e6).toPrecision(3) + " t";
  if (g >= 1e3) return (g / 1e3).toPrecision(3) + " kg";
  return g.toPrecision(3) + " g";
}

function joules(j) {
  const wh = j / 3600;
  if (wh >= 1e3) return (wh / 1e3).toPrecision(3) + " kWh";
  return wh.toPrecision(3) + " Wh";
}

function bytes(b) {
  if (b >= 1048576) return (b / 1048576).toFixed(1) + " MiB";
  if (b >= 1024) return (b / 1024).toFixed(1) + " KiB";
  return b.toFixed(0) + " B";
}

function percent(part, whole) {
  return whole > 0 ? ((100 * part) / whole).toFixed(1) + " %" : "–";
}

function card(id, title, value, sub) {
  return el("div", {class: "card", id},
    el("h2", {}, title), el("div", {class: "value", "data-value": id}, value), el("div", {class: "sub"}, sub));
}

function renderCards(data) {
  const now = data.since_start, hour = data.last_hour;
  const idle = (w) => sum(w.idle_carbon_g_by_region);
  const carbon = (w) => sum(w.carbon_g_by_region) + idle(w);
  // Gross counts only requests where routing saved carbon; net also subtracts where it added some
  // (fallbacks, cache affinity onto a dirtier cluster), so net is what routing really saved.
  const gross = (w) => sum(w.avoided_g_by_source);
  const added = (w) => sum(w.added_g_by_source);
  const avoided = (w) => gross(w) - added(w);
  const tokens = (w, kind) => (w.tokens_by_kind || {})[kind] || 0;
  const source = (w, name) => ((w.avoided_g_by_source || {})[name] || 0) - ((w.added_g_by_source || {})[name] || 0);
  const used = sum(now.buffer_used_bytes), cap = sum(now.buffer_capacity_bytes);
  const cards = [
    card("total-carbon", "CO2e, all clusters and APIs", grams(carbon(now)),
      "last hour " + grams(carbon(hour)) + " · since start" +
      (idle(now) > 0 ? " · of which clusters idle " + grams(idle(now)) : "")),
    card("energy", "Energy attributed to requests", joules(sum(now.energy_j)),
      "last hour " + joules(sum(hour.energy_j)) + " · since start"),
    card("avoided", "CO2e avoided (net)", grams(avoided(now)),
      percent(avoided(now), carbon(now) + avoided(now)) + " of what would have been emitted · gross " +
      grams(gross(now)) + ", added " + grams(added(now)) + " · green routing " +
      grams(source(now, "green_routing")) + " · KV cache " + grams(source(now, "kv_cache"))),
    card("kv", "KV-aware routing", percent(tokens(now, "cached"), tokens(now, "prompt")),
      "of prompt tokens were cached · saved " + grams(source(now, "kv_cache")) + " CO2e · last hour " +
      percent(tokens(hour, "cached"), tokens(hour, "prompt"))),
    card("decisions", "Routing decisions", sum(now.routing_by_reason).toFixed(0),
      "last hour " + sum(hour.routing_by_reason).toFixed(0)),
    card("buffer", "Telemetry buffer", percent(used, cap),
      "in use of " + bytes(cap) + " · peak " + bytes(sum(now.buffer_high_water_bytes)) + " · dropped " +
      sum(now.records_dropped).toFixed(0)),
  ];
  document.getElementById("cards").replaceChildren(...cards);
}

// Per-bucket ratio of two counter groups keyed alike (e.g. joules and tokens per cluster), times `scale`.
function ratioSeries(top, bottom, scale) {
  const out = {};
  for (const [name, values] of Object.entries(top || {})) {
    const under = (bottom || {})[name] || [];
    out[name] = values.map((v, i) => (under[i] > 0 ? (scale * v) / under[i] : null));
  }
  return out;
}

// Per-bucket increases as hourly rates: buckets differ in length (the last one is still filling).
function perHour(groups, dt) {
  const out = {};
  for (const [name, values] of Object.entries(groups || {})) {
    out[name] = values.map((v, i) => (dt[i] > 0 ? (3600 * v) / dt[i] : null));
  }
  return out;
}

function chartSpecs(data) {
  const s = data.series;
  const total = {};
  const regions = perHour(s.carbon_g_by_region, data.dt_s);
  if (Object.keys(regions).length) {
    total["all"] = data.t.map((_, i) => Object.values(regions).reduce((a, v) => a + (v[i] || 0), 0));
  }
  const intensity = Object.assign({}, s.intensity_g_per_kwh);
  if (data.threshold_gco2_per_kwh !== null) {
    intensity["threshold"] = data.t.map(() => data.threshold_gco2_per_kwh);
  }
  const prompt = (s.tokens_by_kind || {}).prompt || [];
  const cached = (s.tokens_by_kind || {}).cached || [];
  const buffer = Object.assign({}, {used: (s.buffer_used_bytes || {}).total || []},
    {"peak": (s.buffer_high_water_bytes || {}).total || []});
  return [
    ["chart-carbon-region", "CO2e by region (g/h)", Object.assign(total, regions)],
    ["chart-carbon-department", "CO2e by department (g/h)", perHour(s.carbon_g_by_department, data.dt_s)],
    ["chart-carbon-model", "CO2e by model (g/h)", perHour(s.carbon_g_by_model, data.dt_s)],
    ["chart-intensity", "Grid intensity by region (gCO2e/kWh)", intensity],
    ["chart-routing", "Routing decisions by reason (per hour)", perHour(s.routing_by_reason, data.dt_s)],
    ["chart-avoided", "CO2e avoided by source (g/h)", perHour(s.avoided_g_by_source, data.dt_s)],
    ["chart-kv", "Cached share of prompt tokens (%)", ratioSeries({cached: cached}, {cached: prompt}, 100)],
    ["chart-energy-per-token", "Energy per 1,000 tokens by cluster (J)",
      ratioSeries(s.cluster_energy_j, s.cluster_tokens, 1000)],
    ["chart-buffer", "Telemetry buffer in use (bytes)", buffer],
  ];
}

function drawChart(container, id, title, t, groups) {
  const labels = Object.keys(groups || {}).sort();
  const data = [t, ...labels.map((name) => groups[name])];
  const known = charts.get(id);
  if (known && known.labels.join("\u0000") === labels.join("\u0000")) {
    known.plot.setData(data);
    return;
  }
  if (known) known.plot.destroy();
  const box = document.getElementById(id) || el("div", {class: "chart", id});
  box.replaceChildren(el("h2", {}, title));
  container.append(box);
  const width = Math.max(box.clientWidth - 16, 300);
  const opts = {
    width, height: 220,
    scales: {x: {time: true}},
    series: [{}, ...labels.map((name, i) => ({
      label: name, stroke: name === "threshold" ? "#a3261b" : PALETTE[i % PALETTE.length],
      dash: name === "threshold" ? [6, 4] : undefined, width: 1.5, spanGaps: false,
    }))],
    axes: [{}, {size: 60}],
  };
  charts.set(id, {plot: new uPlot(opts, data, box), labels});
}

function table(title, rows, columns = ["since start", "last hour"]) {
  const body = rows.map((row) => el("tr", {}, ...row.map((cell) => el("td", {}, cell))));
  return el("table", {}, el("caption", {}, title),
    el("thead", {}, el("tr", {}, el("th", {}, ""), ...columns.map((name) => el("th", {}, name)))),
    el("tbody", {}, ...body));
}

function renderTables(data) {
  const now = data.since_start, hour = data.last_hour;
  const rowsOf = (group, fmt) => Object.keys(now[group] || {}).sort()
    .map((name) => [name, fmt(now[group][name]), fmt((hour[group] || {})[name] || 0)]);
  const perKtok = (w, name) => {
    const tok = (w.cluster_tokens || {})[name] || 0;
    return tok > 0 ? ((1000 * ((w.cluster_energy_j || {})[name] || 0)) / tok).toFixed(1) + " J" : "–";
  };
  const clusters = Object.keys(now.cluster_tokens || {}).sort()
    .map((name) => [name, perKtok(now, name), perKtok(hour, name)]);
  const intensity = Object.keys(now.intensity_g_per_kwh || {}).sort()
    .map((name) => [name, now.intensity_g_per_kwh[name].toFixed(0)]);
  document.getElementById("tables").replaceChildren(
    table("CO2e by department", rowsOf("carbon_g_by_department", grams)),
    table("CO2e by model", rowsOf("carbon_g_by_model", grams)),
    table("CO2e by region", rowsOf("carbon_g_by_region", grams)),
    table("CO2e avoided by source", rowsOf("avoided_g_by_source", grams)),
    table("Routing decisions by reason", rowsOf("routing_by_reason", (v) => v.toFixed(0))),
    table("Energy per 1,000 tokens by cluster", clusters),
    table("Grid intensity (gCO2e/kWh)", intensity, ["now"]),
  );
}

function render(data) {
  document.getElementById("bucket").textContent = data.bucket_s + " s";
  document.getElementById("content").hidden = false;
  document.getElementById("token-form").hidden = true;
  renderCards(data);
  const container = document.getElementById("charts");
  for (const [id, title, groups] of chartSpecs(data)) drawChart(container, id, title, data.t, groups);
  renderTables(data);
  const status = document.getElementById("status");
  status.className = "";
  status.textContent = "updated " + new Date(data.now * 1000).toLocaleTimeString() + " · gateway up since " +
    new Date(data.started_at * 1000).toLocaleString();
}

async function refresh() {
  const status = document.getElementById("status");
  const token = sessionStorage.getItem(TOKEN_KEY);
  let response;
  try {
    response = await fetch(SERIES_URL, {headers: token ? {Authorization: "Bearer " + token} : {}});
  } catch (err) {
    status.className = "error";
    status.textContent = "gateway unreachable; retrying";
    return;
  }
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    document.getElementById("token-form").hidden = false;
    status.textContent = "token required";
    return;
  }
  if (!response.ok) {
    status.className = "error";
    status.textContent = "gateway answered " + response.status + "; retrying";
    return;
  }
  render(await response.json());
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
  refresh();
});

refresh();
setInterval(refresh, REFRESH_MS);
