/* crankshaft-exporter dashboard: polls the exporter's JSON API and draws it.
 *
 * Every URL is relative to the page, so it works behind a reverse proxy's path prefix.
 * Any top-level object of GET /metrics shaped like a series ({name, unit, samples: [...]})
 * gets a chart: the seed's series first, then whatever else the exporter declares (board
 * health, process detail, ...), so new series appear without editing this file.
 *
 * History is fetched once per range (?last_n= enough samples to cover it), then only what
 * is new since the previous refresh, merged by timestamp: a 24 h view on a small board
 * costs a few hundred bytes per refresh, not the whole history again.
 */
"use strict";

(() => {
  const REFRESH_MS = 5000;
  const RANGES = { "1h": 3600e3, "6h": 6 * 3600e3, "24h": 24 * 3600e3 };
  const DEFAULT_RANGE = "1h";
  // The seed's series, in the seed's order; anything else follows in document order.
  const SEED_ORDER = ["memory", "cpu", "websocket_active", "websocket_total", "latency"];
  const TITLES = {
    memory: "Memory (RSS)",
    cpu: "CPU",
    websocket_active: "Active connections",
    websocket_total: "Total connections",
    latency: "Request latency",
  };
  // A gap this many intervals long between samples is drawn as a gap, not a line.
  const GAP_INTERVALS = 2.5;

  const $ = (sel) => document.querySelector(sel);

  const state = {
    range: DEFAULT_RANGE,
    series: new Map(), // document key -> {meta, ts: [ms], vals: []}
    charts: new Map(), // document key -> {card, plot, uplot, observer}
    full: true, // next refresh fetches the whole range
    fetchedAt: 0, // performance.now() of the last history fetch
    uptimeMs: -1,
    intervalMs: 60000,
    window: [0, 1], // x range in seconds, shared by every chart
    alertsByName: new Map(),
    refreshes: 0,
    busy: false,
    again: false,
    timer: 0,
  };

  // --- formatting ----------------------------------------------------------------------

  function fmtNum(v) {
    if (v === null || v === undefined || !Number.isFinite(v)) return "–";
    const a = Math.abs(v);
    const digits = a >= 100 ? 0 : a >= 10 ? 1 : 2;
    return v.toLocaleString(undefined, { maximumFractionDigits: digits });
  }

  function fmtValue(v, unit) {
    const n = fmtNum(v);
    if (n === "–" || !unit || unit === "count") return n;
    return `${n} ${unit}`;
  }

  function fmtDuration(seconds) {
    if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
    if (seconds > 0 && seconds < 1) return `${Math.round(seconds * 1000)} ms`;
    const s = Math.floor(seconds);
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    if (d > 0) return `${d} d ${h} h`;
    if (h > 0) return `${h} h ${m} min`;
    if (m > 0) return `${m} min ${s % 60} s`;
    return `${s} s`;
  }

  function fmtTime(ms) {
    return new Date(ms).toLocaleTimeString(undefined, { hour12: false });
  }

  const ACRONYMS = new Set(["cpu", "gpu", "io", "rss", "soc"]);

  function title(key, meta) {
    if (TITLES[key]) return TITLES[key];
    const words = String(meta.name || key).split("_")
      .map((w) => (ACRONYMS.has(w) ? w.toUpperCase() : w)).join(" ");
    return words.charAt(0).toUpperCase() + words.slice(1);
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  // --- fetching ------------------------------------------------------------------------

  async function getJSON(url) {
    const response = await fetch(url, {
      headers: { Accept: "application/json" },
      cache: "no-store",
    });
    // /healthz answers 503 with its JSON document when the collector is late.
    if (!response.ok && !(response.status === 503 && url === "healthz")) {
      throw new Error(`${url}: HTTP ${response.status}`);
    }
    return response.json();
  }

  function isSeries(value) {
    return value !== null && typeof value === "object" && !Array.isArray(value) &&
      Array.isArray(value.samples) && typeof value.name === "string";
  }

  function seriesKeys(doc) {
    const present = Object.keys(doc).filter((k) => isSeries(doc[k]));
    const seed = SEED_ORDER.filter((k) => present.includes(k));
    return seed.concat(present.filter((k) => !SEED_ORDER.includes(k)));
  }

  /* Merge a GET /metrics?last_n=N document into state; returns false when samples may
   * have been missed (more arrived than asked for), so the next refresh fetches all. */
  function mergeHistory(doc, lastN, full, span) {
    let complete = true;
    const keys = seriesKeys(doc);
    for (const key of [...state.series.keys()]) {
      if (!keys.includes(key)) state.series.delete(key);
    }
    for (const key of keys) {
      const incoming = doc[key];
      let s = state.series.get(key);
      if (!s || full) {
        s = { meta: incoming, ts: [], vals: [] };
        state.series.set(key, s);
      }
      s.meta = incoming;
      const samples = incoming.samples;
      const last = s.ts.length ? s.ts[s.ts.length - 1] : -Infinity;
      // As many samples as asked for, all newer than what we hold (or we held none):
      // older ones may lie beyond them.
      if (!full && samples.length >= lastN && samples[0].timestamp > last) {
        complete = false;
      }
      for (const sample of samples) {
        if (sample.timestamp > (s.ts.length ? s.ts[s.ts.length - 1] : -Infinity)) {
          s.ts.push(sample.timestamp);
          s.vals.push(sample.value);
        }
      }
      const cutoff = doc.timestamp - span;
      let drop = 0;
      while (drop < s.ts.length && s.ts[drop] < cutoff) drop++;
      if (drop) {
        s.ts.splice(0, drop);
        s.vals.splice(0, drop);
      }
    }
    return complete;
  }

  // --- charts --------------------------------------------------------------------------

  // Amounts read best from zero (half the memory is half the bar); any other unit (a
  // temperature around 50 °C, a voltage) is scaled to its data.
  const FROM_ZERO_UNITS = new Set(["MB", "KB", "kB", "GB", "bytes", "B", "%", "ms", "s",
    "count", "1/s", "/s"]);

  function yRange(unit) {
    return (u, lo, hi) => {
      if (lo === null || hi === null || !Number.isFinite(lo) || !Number.isFinite(hi)) {
        return [0, 1];
      }
      const spread = hi - lo;
      const fromZero = lo >= 0 && FROM_ZERO_UNITS.has(unit);
      const min = fromZero ? 0 : lo - (spread || Math.abs(lo) || 1) * 0.1;
      let max = hi + (hi - min) * 0.1;
      if (max <= min) max = min + 1;
      return [min, max];
    };
  }

  // Tick labels with as many decimals as the tick step needs (244.5, not 244 twice).
  function axisValues(u, splits, axisIdx, space, incr) {
    const digits = Math.min(6, Math.max(0, -Math.floor(Math.log10(incr || 1))));
    return splits.map((v) => v.toLocaleString(undefined, {
      minimumFractionDigits: digits, maximumFractionDigits: digits,
    }));
  }

  function plotData(s) {
    const xs = [];
    const ys = [];
    const gap = state.intervalMs * GAP_INTERVALS;
    for (let i = 0; i < s.ts.length; i++) {
      if (i > 0 && s.ts[i] - s.ts[i - 1] > gap) {
        xs.push((s.ts[i - 1] + state.intervalMs) / 1000);
        ys.push(null);
      }
      xs.push(s.ts[i] / 1000);
      ys.push(s.vals[i]);
    }
    return [xs, ys];
  }

  function chartOptions(key, s, plot, color) {
    const muted = cssVar("--muted");
    const grid = cssVar("--grid");
    const axis = {
      stroke: muted,
      grid: { stroke: grid, width: 1 },
      ticks: { stroke: grid, width: 1, size: 4 },
      font: "11px system-ui, sans-serif",
    };
    return {
      width: Math.max(plot.clientWidth, 100),
      height: Math.max(plot.clientHeight, 60),
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: {
        x: { time: true, range: () => state.window },
        y: { range: yRange(s.meta.unit) },
      },
      axes: [
        { ...axis, size: 26, space: 60 },
        { ...axis, size: 50, space: 24, values: axisValues },
      ],
      series: [
        {},
        {
          label: title(key, s.meta),
          stroke: color,
          width: 1.5,
          fill: `${color}26`,
          spanGaps: false,
        },
      ],
      hooks: {
        setCursor: [(u) => showCursor(key, u)],
      },
    };
  }

  function showCursor(key, u) {
    const chart = state.charts.get(key);
    const s = state.series.get(key);
    if (!chart || !s) return;
    const i = u.cursor.idx;
    if (i === null || i === undefined || u.data[1][i] === null) {
      showStats(chart, s);
    } else {
      chart.stats.textContent =
        `${fmtTime(u.data[0][i] * 1000)}  ${fmtValue(u.data[1][i], s.meta.unit)}`;
    }
  }

  function showStats(chart, s) {
    if (!s.vals.length) {
      chart.stats.textContent = "no samples in this range";
      return;
    }
    let min = Infinity;
    let max = -Infinity;
    let sum = 0;
    let n = 0;
    for (const v of s.vals) {
      if (v === null || !Number.isFinite(v)) continue;
      min = Math.min(min, v);
      max = Math.max(max, v);
      sum += v;
      n++;
    }
    const unit = s.meta.unit;
    chart.stats.textContent = n
      ? `min ${fmtValue(min, unit)} · avg ${fmtValue(sum / n, unit)} · max ${fmtValue(max, unit)}`
      : "no values";
  }

  function makeCard(key) {
    const card = el("section", "card");
    card.dataset.series = key;
    const head = el("header");
    const h = el("h3");
    const latest = el("span", "latest");
    head.append(h, latest);
    const stats = el("div", "stats");
    const plot = el("div", "plot");
    card.append(head, stats, plot);
    return { card, h, latest, stats, plot, uplot: null, observer: null };
  }

  function destroyChart(chart) {
    if (chart.observer) chart.observer.disconnect();
    if (chart.uplot) chart.uplot.destroy();
    chart.observer = null;
    chart.uplot = null;
  }

  function drawCharts() {
    const main = $("#charts");
    const keys = [...state.series.keys()];
    for (const [key, chart] of state.charts) {
      if (!state.series.has(key)) {
        destroyChart(chart);
        chart.card.remove();
        state.charts.delete(key);
      }
    }
    keys.forEach((key, index) => {
      const s = state.series.get(key);
      let chart = state.charts.get(key);
      if (!chart) {
        chart = makeCard(key);
        state.charts.set(key, chart);
      }
      // Keep document order (the seed's first), also for series that appear later.
      if (main.children[index] !== chart.card) main.insertBefore(chart.card, main.children[index] || null);
      chart.h.textContent = title(key, s.meta);
      chart.h.title = `${s.meta.name} (${s.meta.unit})`;
      chart.latest.textContent = fmtValue(s.meta.latest, s.meta.unit);
      const level = state.alertsByName.get(s.meta.name);
      chart.card.classList.toggle("critical", level === "CRITICAL");
      chart.card.classList.toggle("warning", level === "WARNING");
      chart.card.dataset.samples = String(s.ts.length);
      chart.card.dataset.first = s.ts.length ? String(s.ts[0]) : "";
      chart.card.dataset.last = s.ts.length ? String(s.ts[s.ts.length - 1]) : "";
      showStats(chart, s);
      if (!s.ts.length) {
        destroyChart(chart);
        chart.plot.classList.add("empty");
        chart.plot.textContent = "no samples in this range";
        return;
      }
      const data = plotData(s);
      if (chart.uplot) {
        chart.uplot.setData(data);
        return;
      }
      chart.plot.classList.remove("empty");
      chart.plot.textContent = "";
      const color = cssVar(`--chart-${(index % 8) + 1}`);
      chart.card.dataset.color = color;
      chart.uplot = new uPlot(chartOptions(key, s, chart.plot, color), data, chart.plot);
      chart.observer = new ResizeObserver(() => {
        if (chart.uplot) {
          chart.uplot.setSize({
            width: Math.max(chart.plot.clientWidth, 100),
            height: Math.max(chart.plot.clientHeight, 60),
          });
        }
      });
      chart.observer.observe(chart.plot);
    });
  }

  function updateWindow(docTimestamp, span) {
    const end = docTimestamp;
    let start = end - span;
    let oldest = Infinity;
    for (const s of state.series.values()) {
      if (s.ts.length) oldest = Math.min(oldest, s.ts[0]);
    }
    // A young exporter: show the history it has, not an hour of empty space.
    if (Number.isFinite(oldest)) start = Math.max(start, oldest);
    start = Math.min(start, end - Math.max(2 * state.intervalMs, 60e3));
    state.window = [start / 1000, end / 1000];
  }

  // --- header, alerts, tables ------------------------------------------------------------

  function renderHeader(health, summary) {
    const badge = $("#target-state");
    const up = health.target_up;
    badge.textContent = up === true ? "up" : up === false ? "down" : "not sampled";
    badge.className = `badge ${up === true ? "up" : up === false ? "down" : "unknown"}`;
    $("#uptime").textContent = fmtDuration(summary.uptime_seconds);
    $("#interval").textContent = health.is_collecting
      ? fmtDuration(health.collection_interval_ms / 1000)
      : "stopped";
    $("#updated").textContent = fmtTime(summary.timestamp || Date.now());
  }

  const ALERT_FIELDS = new Set([
    "metric", "current_value", "warning_threshold", "critical_threshold", "description", "level",
  ]);

  function renderAlerts(alerts) {
    const box = $("#alerts");
    box.textContent = "";
    const units = new Map([...state.series.values()].map((s) => [s.meta.name, s.meta.unit]));
    state.alertsByName = new Map();
    const order = { CRITICAL: 0, WARNING: 1 };
    const sorted = [...alerts].sort((a, b) => (order[a.level] ?? 2) - (order[b.level] ?? 2));
    for (const a of sorted) {
      if (state.alertsByName.get(a.metric) !== "CRITICAL") state.alertsByName.set(a.metric, a.level);
      const level = String(a.level || "").toLowerCase();
      const row = el("div", `alert ${level}`);
      row.dataset.metric = a.metric;
      row.dataset.level = a.level;
      // Labels beyond the seed's fields (endpoint, extension) name which one fired.
      const labels = Object.keys(a)
        .filter((k) => !ALERT_FIELDS.has(k) && a[k] !== null && typeof a[k] !== "object")
        .map((k) => `${k}="${a[k]}"`);
      const what = labels.length ? `${a.metric}{${labels.join(",")}}` : a.metric;
      const limit = a.level === "CRITICAL" ? a.critical_threshold : a.warning_threshold;
      row.append(
        el("span", "level", a.level),
        el("span", "what", `${what} = ${fmtValue(a.current_value, units.get(a.metric))}`),
        el("span", "detail", `${a.description || ""}${limit !== null && limit !== undefined
          ? ` (${a.level === "CRITICAL" ? "critical" : "warning"} above ${
            fmtValue(limit, units.get(a.metric))})` : ""}`),
      );
      box.append(row);
    }
    if (!sorted.length) box.append(el("p", "none", "No active alerts."));
    const base = "crankshaft-exporter";
    document.title = sorted.length ? `(${sorted.length}) ${sorted[0].level} · ${base}` : base;
  }

  function fillTable(id, rows) {
    const table = $(`#${id}`);
    const body = table.tBodies[0];
    body.textContent = "";
    for (const cells of rows) {
      const tr = document.createElement("tr");
      for (const cell of cells) {
        const td = document.createElement("td");
        if (cell instanceof Node) td.append(cell);
        else td.textContent = cell;
        tr.append(td);
      }
      body.append(tr);
    }
    table.classList.toggle("is-empty", rows.length === 0);
    $(`#${id}-empty`).hidden = rows.length !== 0;
  }

  function renderTables(doc) {
    const breakdown = doc.latency_breakdown && typeof doc.latency_breakdown === "object"
      ? doc.latency_breakdown : {};
    const latency = Object.entries(breakdown)
      .sort((a, b) => (b[1].p99 ?? -1) - (a[1].p99 ?? -1) || a[0].localeCompare(b[0]))
      .map(([endpoint, q]) => [endpoint, fmtNum(q.p50), fmtNum(q.p95), fmtNum(q.p99),
        fmtNum(q.count)]);
    fillTable("latency", latency);

    const extensions = doc.extensions && typeof doc.extensions === "object" ? doc.extensions : {};
    const rank = (status) => (status === "crashed" ? 0 : 1);
    const rows = Object.entries(extensions)
      .map(([name, value]) => [name, typeof value === "object" && value ? value.status : value])
      .sort((a, b) => rank(a[1]) - rank(b[1]) || a[0].localeCompare(b[0]))
      .map(([name, status]) => [name, el("span", `badge ${status}`, String(status))]);
    fillTable("extensions", rows);
  }

  // --- the refresh loop ------------------------------------------------------------------

  function showStatus(message) {
    const status = $("#status");
    status.hidden = !message;
    status.textContent = message || "";
  }

  async function refresh() {
    const range = state.range;
    const span = RANGES[range];
    const [health, summary, alerts] = await Promise.all([
      getJSON("healthz"), getJSON("metrics/summary"), getJSON("metrics/alerts"),
    ]);
    if (Number.isFinite(health.collection_interval_ms) && health.collection_interval_ms > 0) {
      state.intervalMs = health.collection_interval_ms;
    }
    const all = Math.ceil(span / state.intervalMs) + 1;
    const full = state.full;
    let lastN = all;
    if (!full) {
      const since = performance.now() - state.fetchedAt;
      lastN = Math.min(all, Math.ceil(since / state.intervalMs) + 2);
    }
    const startedAt = performance.now();
    const doc = await getJSON(`metrics?last_n=${lastN}`);
    if (range !== state.range) return; // the range changed meanwhile: this answer is stale
    if (!full && doc.uptime_ms < state.uptimeMs) {
      // The exporter restarted: what we hold may not be what it holds; fetch everything.
      state.full = true;
      state.again = true;
      return;
    }
    const complete = mergeHistory(doc, lastN, full, span);
    state.uptimeMs = doc.uptime_ms;
    state.fetchedAt = startedAt;
    state.full = !complete;
    if (!complete) state.again = true;

    renderHeader(health, summary);
    renderAlerts(alerts);
    updateWindow(doc.timestamp, span);
    drawCharts();
    renderTables(doc);
    showStatus("");
    state.refreshes += 1;
    document.body.dataset.refreshes = String(state.refreshes);
  }

  async function tick() {
    if (state.busy) {
      state.again = true;
      return;
    }
    state.busy = true;
    state.again = false;
    try {
      await refresh();
    } catch (err) {
      showStatus(`Cannot update from the exporter: ${err.message}. Retrying.`);
    } finally {
      state.busy = false;
      clearTimeout(state.timer);
      state.timer = setTimeout(tick, state.again ? 0 : REFRESH_MS);
    }
  }

  function setRange(range) {
    if (!RANGES[range]) range = DEFAULT_RANGE;
    for (const b of document.querySelectorAll(".ranges button")) {
      b.setAttribute("aria-pressed", String(b.dataset.range === range));
    }
    if (range === state.range && state.refreshes) return;
    state.range = range;
    state.full = true;
    clearTimeout(state.timer);
    tick();
  }

  function start() {
    if (typeof uPlot === "undefined") {
      showStatus("The chart library did not load (static/uPlot.iife.min.js).");
      return;
    }
    for (const b of document.querySelectorAll(".ranges button")) {
      b.addEventListener("click", () => {
        if (location.hash !== `#${b.dataset.range}`) location.hash = b.dataset.range;
        else setRange(b.dataset.range);
      });
    }
    window.addEventListener("hashchange", () => setRange(location.hash.slice(1)));
    // Chart colours come from the stylesheet's variables: redraw when the scheme flips.
    window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
      for (const chart of state.charts.values()) destroyChart(chart);
      drawCharts();
    });
    setRange(location.hash.slice(1) || DEFAULT_RANGE);
  }

  start();
})();
