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
 *
 * What the JSON API does not say comes from the page's settings (body data-settings): which
 * series are counters (running totals, drawn as rates per second: KiB/s, /s) and each
 * series' warning and critical thresholds (dashed lines on its chart).  Times are 24-hour
 * everywhere; memory, which the seed labels "MB", is shown as the MiB it is.
 */
"use strict";

(() => {
  const REFRESH_MS = 5000;
  const RANGES = { "1h": 3600e3, "6h": 6 * 3600e3, "24h": 24 * 3600e3 };
  const DEFAULT_RANGE = "1h";
  // The seed's series, in the seed's order; anything else follows in document order.
  const SEED_ORDER = ["memory", "cpu", "websocket_active", "websocket_total", "latency"];
  // The seed's series read from the target process (the others are pushed or counted).
  const TARGET_SERIES = ["memory", "cpu"];
  const TITLES = {
    memory: "Memory (RSS)",
    cpu: "CPU",
    websocket_active: "Active connections",
    websocket_total: "Total connections",
    latency: "Request latency",
  };
  // A gap this many intervals long between samples is drawn as a gap, not a line.
  const GAP_INTERVALS = 2.5;
  // The seed's unit names, as a person reads them (the value is RSS / 1024 / 1024).
  const DISPLAY_UNITS = { MB: "MiB", KB: "KiB", kB: "KiB", GB: "GiB" };
  const AXIS_FONT = "11px system-ui, sans-serif";
  const X_LABEL_HALF = 30; // px: half of "00:00:00" in AXIS_FONT, and a little room

  const $ = (sel) => document.querySelector(sel);

  function readSettings() {
    try {
      const doc = JSON.parse(document.body.dataset.settings || "{}");
      return { counters: new Set(doc.counters || []), thresholds: doc.thresholds || {} };
    } catch (err) {
      return { counters: new Set(), thresholds: {} };
    }
  }
  const SETTINGS = readSettings();

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
    if (a >= 1e6) return v.toLocaleString(undefined, { notation: "compact", maximumFractionDigits: 1 });
    const digits = a >= 100 ? 0 : a >= 10 ? 1 : 2;
    return v.toLocaleString(undefined, { maximumFractionDigits: digits });
  }

  function displayUnit(unit) {
    return DISPLAY_UNITS[unit] || unit;
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

  // One time format for the header, the cursor and the axes: 24-hour.
  const TIME_S = new Intl.DateTimeFormat(undefined,
    { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
  const TIME_M = new Intl.DateTimeFormat(undefined,
    { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });

  function fmtTime(ms) {
    return TIME_S.format(new Date(ms));
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
  const FROM_ZERO_UNITS = new Set(["MB", "KB", "kB", "GB", "MiB", "KiB", "GiB", "bytes", "B",
    "%", "ms", "s", "count", "1/s", "/s", "B/s", "KiB/s", "MiB/s"]);
  // Whole things (threads, connections) get whole ticks: 0, 2, 4, not 0, 2.5, 5.
  const WHOLE_INCRS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1e3, 2e3, 2.5e3, 5e3,
    1e4, 2e4, 2.5e4, 5e4, 1e5, 2e5, 2.5e5, 5e5, 1e6, 2e6, 2.5e6, 5e6, 1e7, 2e7, 5e7, 1e8,
    2e8, 5e8, 1e9];

  function yRange(unit, limits) {
    return (u, lo, hi) => {
      if (lo === null || hi === null || !Number.isFinite(lo) || !Number.isFinite(hi)) {
        return [0, 1];
      }
      // A threshold not far above the data is brought into view, so its line shows how
      // close the value is; one far above would flatten the data into a line at the bottom.
      for (const t of limits) {
        if (t > hi && t <= Math.max(hi, 0) * 1.6) hi = t;
      }
      const spread = hi - lo;
      const fromZero = lo >= 0 && FROM_ZERO_UNITS.has(unit);
      const min = fromZero ? 0 : lo - (spread || Math.abs(lo) || 1) * 0.1;
      let max = hi + (hi - min) * 0.1;
      if (max <= min) max = min + 1;
      return [min, max];
    };
  }

  // Decimals that write the tick step exactly: 0.25 needs 2 (0.25, 0.5, 0.75), not 1.
  function stepDecimals(incr) {
    for (let d = 0; d < 6; d++) {
      const scaled = incr * 10 ** d;
      if (Math.abs(scaled - Math.round(scaled)) < 1e-6 * Math.max(1, scaled)) return d;
    }
    return 6;
  }

  // Tick labels with as many decimals as the tick step needs (244.5, not 244 twice);
  // millions and up in short form (1.5M), so a label stays a few characters wide.
  function axisValues(u, splits, axisIdx, space, incr) {
    const big = splits.some((v) => Math.abs(v) >= 1e6);
    const digits = stepDecimals(incr || 1);
    return splits.map((v) => (big
      ? v.toLocaleString(undefined, { notation: "compact", maximumFractionDigits: 2 })
      : v.toLocaleString(undefined, {
        minimumFractionDigits: digits, maximumFractionDigits: digits,
      })));
  }

  // 24-hour tick labels, with seconds only when the ticks are less than a minute apart.
  function timeValues(u, splits, axisIdx, space, incr) {
    const format = incr < 60 ? TIME_S : TIME_M;
    return splits.map((v) => format.format(new Date(v * 1000)));
  }

  // The y axis as wide as its longest label (uPlot's fixed width clips "1,000,000").
  function yAxisSize(u, values, axisIdx, cycleNum) {
    const axis = u.axes[axisIdx];
    if (cycleNum > 1 && axis._size) return axis._size;
    let widest = 0;
    if (values && values.length) {
      u.ctx.save();
      u.ctx.font = AXIS_FONT;
      for (const v of values) widest = Math.max(widest, u.ctx.measureText(String(v)).width);
      u.ctx.restore();
    }
    // At least half a time label wide: the x axis' first label is centred on its tick,
    // which may sit at the plot's left edge.
    return Math.ceil(Math.max(widest + axis.ticks.size + axis.gap + 4, X_LABEL_HALF));
  }

  // Warning and critical lines of the series' alert rule, where they fall in the chart.
  function drawThresholds(u, chart) {
    const drawn = [];
    const { ctx, bbox } = u;
    for (const [level, value] of chart.limits) {
      const y = u.valToPos(value, "y", true);
      if (!Number.isFinite(y) || y < bbox.top || y > bbox.top + bbox.height) continue;
      ctx.save();
      ctx.strokeStyle = cssVar(level === "critical" ? "--crit" : "--warn");
      ctx.lineWidth = 2 * Math.round(devicePixelRatio || 1); // whole pixels: a crisp line
      ctx.setLineDash([6 * devicePixelRatio, 4 * devicePixelRatio]);
      ctx.beginPath();
      ctx.moveTo(bbox.left, Math.round(y));
      ctx.lineTo(bbox.left + bbox.width, Math.round(y));
      ctx.stroke();
      ctx.restore();
      drawn.push(`${level}:${value}`);
    }
    chart.card.dataset.thresholds = drawn.join(" ");
    // What the axes drew, for the browser test (label boxes inside the card).
    chart.card.dataset.yLabels = JSON.stringify(u.axes[1]._values || []);
    chart.card.dataset.xLabels = JSON.stringify(u.axes[0]._values || []);
    chart.card.dataset.plotLeft = String(u.bbox.left / devicePixelRatio);
  }

  function limitsOf(meta) {
    const rule = SETTINGS.thresholds[meta.name] || {};
    return ["warning", "critical"]
      .filter((level) => Number.isFinite(rule[level]))
      .map((level) => [level, rule[level]]);
  }

  /* What a card shows of a series: a gauge as stored; a counter (a running total) as its
   * rate per second between neighbouring samples, in B/s, KiB/s or MiB/s for bytes and /s
   * for counts.  A drop (the process restarted) or a gap leaves no rate there. */
  function viewOf(key, s) {
    const unit = s.meta.unit;
    // The seed's own series keep the seed's view (its total connections is a count).
    if (!SETTINGS.counters.has(s.meta.name) || SEED_ORDER.includes(key)) {
      return { ts: s.ts, vals: s.vals, unit: displayUnit(unit), latest: s.meta.latest,
        limits: limitsOf(s.meta), rate: false };
    }
    const ts = [];
    const vals = [];
    const gap = state.intervalMs * GAP_INTERVALS;
    for (let i = 1; i < s.ts.length; i++) {
      const dt = (s.ts[i] - s.ts[i - 1]) / 1000;
      const dv = s.vals[i] - s.vals[i - 1];
      if (dt <= 0 || dt * 1000 > gap || s.vals[i] === null || s.vals[i - 1] === null || dv < 0) {
        continue;
      }
      ts.push(s.ts[i]);
      vals.push(dv / dt);
    }
    let scale = 1;
    let shown = "/s";
    if (unit === "bytes" || unit === "B") {
      const top = Math.max(0, ...vals);
      [scale, shown] = top >= 10 * 1024 * 1024 ? [1024 * 1024, "MiB/s"]
        : top >= 1024 ? [1024, "KiB/s"] : [1, "B/s"];
    }
    const scaled = vals.map((v) => v / scale);
    const fresh = s.meta.latest !== null && s.meta.latest !== undefined && ts.length &&
      ts[ts.length - 1] === s.ts[s.ts.length - 1];
    return { ts, vals: scaled, unit: shown, latest: fresh ? scaled[scaled.length - 1] : null,
      limits: [], rate: true };
  }

  function plotData(s) { // s: a view (ts, vals)
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

  function chartOptions(key, chart, plot, color) {
    const muted = cssVar("--muted");
    const grid = cssVar("--grid");
    const axis = {
      stroke: muted,
      grid: { stroke: grid, width: 1 },
      ticks: { stroke: grid, width: 1, size: 4 },
      font: AXIS_FONT,
      gap: 4,
    };
    const s = state.series.get(key);
    return {
      width: Math.max(plot.clientWidth, 100),
      height: Math.max(plot.clientHeight, 60),
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: {
        x: { time: true, range: () => state.window },
        y: { range: yRange(chart.view.unit, chart.view.limits.map((l) => l[1])) },
      },
      axes: [
        { ...axis, size: 26, space: 56, values: timeValues }, // "12:34:56" + a gap
        { ...axis, size: yAxisSize, space: 22, values: axisValues,
          ...(chart.view.unit === "count" ? { incrs: WHOLE_INCRS } : {}) },
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
        draw: [(u) => drawThresholds(u, chart)],
      },
    };
  }

  function showCursor(key, u) {
    const chart = state.charts.get(key);
    if (!chart || !chart.view) return;
    const i = u.cursor.idx;
    if (i === null || i === undefined || u.data[1][i] === null) {
      showStats(chart, chart.view);
    } else {
      chart.stats.textContent =
        `${fmtTime(u.data[0][i] * 1000)}  ${fmtValue(u.data[1][i], chart.view.unit)}`;
    }
  }

  function showStats(chart, s) { // s: a view
    if (!s.vals.length) {
      chart.stats.textContent = s.rate ? "no rate yet: needs two samples in this range"
        : "no samples in this range";
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
    const unit = s.unit;
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
    return { card, h, latest, stats, plot, uplot: null, observer: null, view: null,
      limits: [] };
  }

  function destroyChart(chart) {
    if (chart.observer) chart.observer.disconnect();
    if (chart.uplot) chart.uplot.destroy();
    chart.observer = null;
    chart.uplot = null;
  }

  // A series outside the seed's that has no sample at all (a sensor this machine lacks):
  // no empty card, one line naming them instead.
  function isAbsent(key, s) {
    return !SEED_ORDER.includes(key) && !s.ts.length &&
      (s.meta.latest === null || s.meta.latest === undefined);
  }

  function drawCharts() {
    const main = $("#charts");
    const keys = [...state.series.keys()].filter((k) => !isAbsent(k, state.series.get(k)));
    const absent = [...state.series.keys()].filter((k) => isAbsent(k, state.series.get(k)));
    const note = $("#absent");
    note.hidden = !absent.length;
    note.dataset.series = absent.join(" ");
    note.textContent = absent.length
      ? `No data here for ${absent.map((k) => title(k, state.series.get(k).meta)).join(", ")
      }: no such sensor or source on this machine, or none measured in this range.`
      : "";
    for (const [key, chart] of state.charts) {
      if (!keys.includes(key)) {
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
      const view = viewOf(key, s);
      chart.view = view;
      chart.limits = view.limits;
      chart.h.textContent = title(key, s.meta);
      chart.h.title = view.rate
        ? `${s.meta.name}: the rate of a running total (${s.meta.unit}), per second`
        : `${s.meta.name} (${view.unit})`;
      chart.latest.textContent = fmtValue(view.latest, view.unit);
      const level = state.alertsByName.get(s.meta.name);
      chart.card.classList.toggle("critical", level === "CRITICAL");
      chart.card.classList.toggle("warning", level === "WARNING");
      chart.card.dataset.samples = String(s.ts.length);
      chart.card.dataset.unit = view.unit;
      chart.card.dataset.first = s.ts.length ? String(s.ts[0]) : "";
      chart.card.dataset.last = s.ts.length ? String(s.ts[s.ts.length - 1]) : "";
      showStats(chart, view);
      if (!view.ts.length) {
        destroyChart(chart);
        chart.plot.classList.add("empty");
        chart.plot.textContent = view.rate && s.ts.length ? "no rate yet: needs two samples"
          : state.targetDown && TARGET_SERIES.includes(key) ? "target down: nothing to sample"
            : "no samples in this range";
        return;
      }
      const data = plotData(view);
      if (chart.uplot && chart.unit === view.unit) {
        chart.uplot.setData(data);
        return;
      }
      destroyChart(chart); // a new unit (B/s became KiB/s): a new y scale
      chart.unit = view.unit;
      chart.plot.classList.remove("empty");
      chart.plot.textContent = "";
      const color = cssVar(`--chart-${(index % 8) + 1}`);
      chart.card.dataset.color = color;
      chart.uplot = new uPlot(chartOptions(key, chart, chart.plot, color), data, chart.plot);
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
    // A target that is down says why, as /healthz does (what was looked for, the nearest
    // names): the same words as the log.
    const banner = $("#target-banner");
    const missing = health.target_missing;
    state.targetDown = up === false;
    banner.hidden = up !== false;
    banner.textContent = up !== false ? ""
      : `Target down: ${missing && missing.message ? missing.message
        : "the watched process is not running"}. Memory, CPU and the process detail are absent until it runs.`;
  }

  const ALERT_FIELDS = new Set([
    "metric", "current_value", "warning_threshold", "critical_threshold", "description", "level",
  ]);

  function renderAlerts(alerts) {
    const box = $("#alerts");
    box.textContent = "";
    const units = new Map([...state.series.values()]
      .map((s) => [s.meta.name, displayUnit(s.meta.unit)]));
    // The per-endpoint percentile rules (request_latency_p95, ...) are in latency's unit.
    const unitOf = (metric) => units.get(metric) ??
      units.get(String(metric).replace(/_p\d+$/, ""));
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
        el("span", "what", `${what} = ${fmtValue(a.current_value, unitOf(a.metric))}`),
        el("span", "detail", `${a.description || ""}${limit !== null && limit !== undefined
          ? ` (${a.level === "CRITICAL" ? "critical" : "warning"} above ${
            fmtValue(limit, unitOf(a.metric))})` : ""}`),
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
