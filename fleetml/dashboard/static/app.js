/* fleetml dashboard: Alpine.js components over the JSON API (no build step, no CDN).
 *
 * The logged-in key lives in this tab's sessionStorage and is sent as a Bearer token on every
 * call, so the API's role checks apply unchanged. Pages refresh themselves every REFRESH_MS
 * while visible ("live"), and after every action.
 */
"use strict";

const REFRESH_MS = 10000;
const KEY = "fleetml.key";
const WHO = "fleetml.who";

const fleetml = {
  key() {
    return sessionStorage.getItem(KEY);
  },
  who() {
    try {
      return JSON.parse(sessionStorage.getItem(WHO) || "null");
    } catch {
      return null;
    }
  },
  canAdmin() {
    const who = fleetml.who();
    return !!who && who.role === "admin";
  },
  logout() {
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(WHO);
    location.href = "/ui/login";
  },
  /** Call the API; resolves to the parsed JSON, rejects with the API's `detail`. */
  async api(path, { method = "GET", body, query } = {}) {
    const url = new URL(path, location.origin);
    for (const [k, v] of Object.entries(query || {})) {
      if (v === undefined || v === null || v === "") continue;
      for (const item of [].concat(v)) url.searchParams.append(k, item);
    }
    const headers = { Authorization: `Bearer ${fleetml.key()}` };
    const init = { method, headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(url, init);
    if (resp.status === 401) {
      fleetml.logout();
      throw new Error("the key is no longer valid; log in again");
    }
    const text = await resp.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = { detail: text };
    }
    if (!resp.ok) {
      const detail = (data && data.detail) || `HTTP ${resp.status}`;
      throw new Error(`${method} ${url.pathname}: ${detail}`);
    }
    return data;
  },
  /** Do an action through the API, then reload `component`; a refusal shows the API's reason. */
  async act(component, path, options) {
    try {
      await fleetml.api(path, options);
      await component.load();
      return true;
    } catch (err) {
      fleetml.fail(err);
      return false;
    }
  },
  /** The registered groups, sorted. */
  async groups() {
    const accounts = await fleetml.api("/v1/accounts");
    return [...new Set(accounts.accounts.map((a) => a.group).filter(Boolean))].sort();
  },
  fail(err) {
    console.warn(err);
    if (window.Alpine) Alpine.store("ui").error = String(err.message || err);
  },
  /** Refresh `load` now and every REFRESH_MS while the tab is visible. */
  live(component, load) {
    const run = () => load.call(component).catch(fleetml.fail);
    run();
    const timer = setInterval(() => {
      if (document.visibilityState === "visible") run();
    }, REFRESH_MS);
    window.addEventListener("pagehide", () => clearInterval(timer));
    return run;
  },
  fmt: {
    pct(x) {
      return x === null || x === undefined ? "–" : `${(100 * x).toFixed(0)} %`;
    },
    num(x, digits = 2) {
      return x === null || x === undefined || Number.isNaN(x) ? "–" : Number(x).toFixed(digits);
    },
    when(iso) {
      if (!iso) return "–";
      const d = new Date(iso);
      return d.toISOString().slice(0, 16).replace("T", " ");
    },
  },
  /** A precision-recall curve (``{precision, recall, thresholds}``) with ``threshold`` marked. */
  prChart(el, c, threshold, label) {
    const order = c.recall.map((_, i) => i).sort((a, b) => c.recall[a] - c.recall[b]);
    let chosen = -1;
    let best = Infinity;
    c.thresholds.forEach((x, i) => {
      if (threshold !== undefined && Math.abs(x - threshold) < best) {
        best = Math.abs(x - threshold);
        chosen = i;
      }
    });
    return fleetml.chart(el, order.map((i) => c.recall[i]), [
      { label, values: order.map((i) => c.precision[i]) },
      {
        label: `threshold ${fleetml.fmt.num(threshold, 3)}`,
        values: order.map((i) => (i === chosen ? c.precision[i] : null)),
        stroke: "#dc2626",
        points: true,
        width: 0,
      },
    ], { time: false, height: 200, yRange: [0, 1], xRange: [0, 1] });
  },
  /** Sort and filter rows for a table: `by` a key, `dir` 1 or -1, `text` a substring. */
  view(rows, { by, dir = 1, text = "", fields = [] }) {
    const needle = text.trim().toLowerCase();
    const kept = needle
      ? rows.filter((r) => fields.some((f) => String(r[f] ?? "").toLowerCase().includes(needle)))
      : rows.slice();
    if (by) {
      kept.sort((a, b) => {
        const x = a[by];
        const y = b[by];
        if (x === y) return 0;
        if (x === null || x === undefined) return 1;
        if (y === null || y === undefined) return -1;
        return (x < y ? -1 : 1) * dir;
      });
    }
    return kept;
  },
  /** A uPlot line chart of `series` ({label, values, stroke, dash, band}) over `xs` (ms or x). */
  chart(el, xs, series, { time = true, height = 220, yRange, xRange } = {}) {
    if (!el) return null;
    el.innerHTML = "";
    if (!xs.length) {
      el.textContent = "no data yet";
      return null;
    }
    const opts = {
      width: Math.max(280, el.clientWidth || 600),
      height,
      scales: { x: xRange ? { time, range: xRange } : { time }, y: yRange ? { range: yRange } : {} },
      series: [{}].concat(
        series.map((s) => ({
          label: s.label,
          stroke: s.stroke || "#2563eb",
          dash: s.dash,
          width: s.width || 1.5,
          points: { show: s.points ?? xs.length < 30 },  // a short history: show each point
          fill: s.fill,
        })),
      ),
      axes: [{}, {}],
    };
    const data = [time ? xs.map((x) => x / 1000) : xs].concat(series.map((s) => s.values));
    return new uPlot(opts, data, el);
  },
};

document.addEventListener("alpine:init", () => {
  Alpine.store("ui", { error: "" });

  // Every page but the login needs a key: without one, go and log in.
  if (document.body.dataset.page !== "login" && !fleetml.key()) {
    location.href = "/ui/login";
  }

  Alpine.data("session", () => ({
    who: fleetml.who(),
    init() {
      const here = document.body.dataset.page;
      for (const a of document.querySelectorAll("nav a")) {
        if (a.dataset.page === here) a.classList.add("active");
      }
    },
    logout: fleetml.logout,
  }));

  Alpine.data("login", () => ({
    key: "",
    message: "",
    async submit() {
      this.message = "";
      const resp = await fetch("/v1/whoami", { headers: { Authorization: `Bearer ${this.key}` } });
      if (resp.status !== 200) {
        this.message = "This key is not valid (unknown or revoked).";
        return;
      }
      const who = await resp.json();
      if (who.role === "runtime") {
        this.message = "Runtime keys cannot log in to the dashboard: use an ops or admin key.";
        return;
      }
      sessionStorage.setItem(KEY, this.key);
      sessionStorage.setItem(WHO, JSON.stringify(who));
      location.href = "/ui/fleet";
    },
  }));

  Alpine.data("fleet", () => ({
    rows: [],
    groups: [],
    group: "",
    text: "",
    by: "risk_max",
    dir: -1,
    updated: null,
    init() {
      fleetml.live(this, this.load);
    },
    async load() {
      const [accounts, predictions, alerts] = await Promise.all([
        fleetml.api("/v1/accounts"),
        fleetml.api("/v1/predictions", { query: { limit: 5000 } }),
        fleetml.api("/v1/alerts", { query: { state: "open", limit: 1000 } }),
      ]);
      const byAccount = Object.fromEntries(predictions.predictions.map((p) => [p.account_id, p]));
      const open = {};
      for (const a of alerts.alerts) open[a.account_id] = (open[a.account_id] || 0) + 1;
      this.rows = accounts.accounts.map((a) => {
        const p = byAccount[a.account_id] || {};
        const risk = Object.fromEntries((p.risk || []).map((h) => [h.horizon, h]));
        const values = Object.values(risk).map((h) => h.risk).filter((x) => x !== null);
        return {
          ...a,
          group: a.group || "",
          risk: risk,
          risk_max: values.length ? Math.max(...values) : null,
          at_risk: Object.values(risk).some((h) => h.at_risk),
          anomaly: p.anomaly ? p.anomaly.score : null,
          is_anomaly: !!(p.anomaly && p.anomaly.is_anomaly),
          stale: p.stale === undefined ? true : p.stale,
          alerts: open[a.account_id] || 0,
        };
      });
      this.groups = [...new Set(this.rows.map((r) => r.group).filter(Boolean))].sort();
      this.horizons = [...new Set(this.rows.flatMap((r) => Object.keys(r.risk)))];
      this.updated = new Date();
    },
    horizons: [],
    get shown() {
      const rows = this.group ? this.rows.filter((r) => r.group === this.group) : this.rows;
      return fleetml.view(rows, {
        by: this.by,
        dir: this.dir,
        text: this.text,
        fields: ["account_id", "group", "role", "state", "master_id"],
      });
    },
    sort(key) {
      this.dir = this.by === key ? -this.dir : 1;
      this.by = key;
    },
    fmt: fleetml.fmt,
  }));

  Alpine.data("account", () => ({
    id: new URLSearchParams(location.search).get("id") || "",
    account: null,
    prediction: null,
    events: [],
    decisions: [],
    metrics: [],
    history: { points: [], thresholds: {} },
    init() {
      if (!this.id) {
        fleetml.fail(new Error("no account given: open one from the fleet page"));
        return;
      }
      fleetml.live(this, this.load);
    },
    async load() {
      const id = encodeURIComponent(this.id);
      const [account, prediction, events, decisions] = await Promise.all([
        fleetml.api(`/v1/accounts/${id}`),
        fleetml.api(`/v1/predictions/${id}`).catch(() => null),
        fleetml.api("/v1/events", { query: { account_id: this.id, limit: 200 } }),
        fleetml.api("/v1/decisions", { query: { account_id: this.id, limit: 100 } }),
      ]);
      // the 24 hours up to the account's newest data (a replayed or stalled fleet is not "now")
      const until = prediction && prediction.data_until ? Date.parse(prediction.data_until) : Date.now();
      const from = new Date(until - 24 * 3600 * 1000).toISOString();
      const [metrics, history] = await Promise.all([
        fleetml.api("/v1/metrics", { query: { account_id: this.id, from, limit: 5000 } }),
        fleetml.api(`/v1/predictions/${id}/history`, { query: { from, limit: 20000 } }),
      ]);
      this.history = history;
      this.account = account;
      this.prediction = prediction;
      this.events = events.events.slice(-50).reverse();
      this.decisions = decisions.decisions;
      this.metrics = metrics.samples;
      this.$nextTick(() => this.draw());
    },
    draw() {
      this.drawRisk();
      const box = this.$refs.charts;
      if (!box) return;
      box.innerHTML = "";
      const names = [...new Set(this.metrics.flatMap((s) => Object.keys(s.values)))].sort();
      const xs = this.metrics.map((s) => Date.parse(s.ts));
      // samples the anomaly model flagged, marked on every metric
      const flagged = new Set(
        this.history.points.filter((p) => p.family === "anomaly" && p.flag).map((p) => Date.parse(p.ts)),
      );
      for (const name of names.slice(0, 8)) {
        const holder = document.createElement("div");
        holder.className = "chart";
        const title = document.createElement("h3");
        title.textContent = name;
        box.append(title, holder);
        const values = this.metrics.map((s) => s.values[name] ?? null);
        const marks = values.map((v, i) => (flagged.has(xs[i]) ? v : null));
        fleetml.chart(holder, xs, [
          { label: name, values },
          { label: "anomaly", values: marks, stroke: "#dc2626", points: true, width: 0 },
        ], { height: 160 });
      }
    },
    drawRisk() {
      const el = this.$refs.risk;
      if (!el) return;
      const risk = this.history.points.filter((p) => p.family === "risk");
      const xs = [...new Set(risk.map((p) => Date.parse(p.ts)))].sort((a, b) => a - b);
      const at = Object.fromEntries(xs.map((x, i) => [x, i]));
      const horizons = [...new Set(risk.map((p) => p.horizon))];
      const colours = ["#2563eb", "#7c3aed", "#0891b2", "#65a30d"];
      const series = [];
      horizons.forEach((h, k) => {
        const values = xs.map(() => null);
        for (const p of risk.filter((q) => q.horizon === h)) values[at[Date.parse(p.ts)]] = p.score;
        series.push({ label: `risk ${h}`, values, stroke: colours[k % colours.length] });
        const t = this.history.thresholds[h];
        if (t !== undefined) {
          series.push({ label: `threshold ${h}`, values: xs.map(() => t), stroke: colours[k % colours.length], dash: [5, 5], width: 1 });
        }
      });
      fleetml.chart(el, xs, series, { height: 200, yRange: [0, 1] });
    },
    fmt: fleetml.fmt,
  }));

  Alpine.data("alerts", () => ({
    rows: [],
    state: "open",
    note: "",
    canAct: true,
    init() {
      this.reload = fleetml.live(this, this.load);
    },
    async load() {
      const data = await fleetml.api("/v1/alerts", { query: { state: this.state, limit: 500 } });
      this.rows = data.alerts;
    },
    async act(alert, verb) {
      const body = this.note ? { note: this.note } : {};
      if (await fleetml.act(this, `/v1/alerts/${alert.id}/${verb}`, { method: "POST", body })) {
        this.note = "";
      }
    },
    judge(alert, verdict) {
      const body = { verdict, note: this.note || null };
      return fleetml.act(this, `/v1/alerts/${alert.id}/feedback`, { method: "POST", body });
    },
    silence(alert, hours) {
      const ends = new Date(Date.now() + hours * 3600 * 1000).toISOString();
      const body = { account_id: alert.account_id, kind: alert.kind, ends_at: ends, comment: this.note || null };
      return fleetml.act(this, "/v1/silences", { method: "POST", body });
    },
    fmt: fleetml.fmt,
  }));

  Alpine.data("actions", () => ({
    rows: [],
    state: "",
    init() {
      fleetml.live(this, this.load);
    },
    async load() {
      const data = await fleetml.api("/v1/actions", { query: { state: this.state, limit: 500 } });
      this.rows = data.actions;
    },
    get waiting() {
      return this.rows.filter((a) => a.state === "awaiting_approval");
    },
    decide(action, verb) {
      return fleetml.act(this, `/v1/actions/${action.id}/${verb}`, { method: "POST" });
    },
    fmt: fleetml.fmt,
  }));

  Alpine.data("recommendations", () => ({
    rows: [],
    state: "open",
    comments: {},
    init() {
      fleetml.live(this, this.load);
    },
    async load() {
      const data = await fleetml.api("/v1/recommendations", {
        query: { state: this.state, limit: 500 },
      });
      this.rows = data.recommendations;
    },
    decide(rec, verb) {
      const comment = this.comments[rec.id];
      const body = comment ? { comment } : {};
      return fleetml.act(this, `/v1/recommendations/${rec.id}/${verb}`, { method: "POST", body });
    },
    json(x) {
      return JSON.stringify(x, null, 1);
    },
    fmt: fleetml.fmt,
  }));

  Alpine.data("weights", () => ({
    groups: [],
    group: "",
    rows: [],
    policy: null,
    edit: {},
    editing: null,
    canAdmin: fleetml.canAdmin(),
    init() {
      fleetml.live(this, this.load);
    },
    async load() {
      this.groups = await fleetml.groups();
      if (!this.group && this.groups.length) this.group = this.groups[0];
      if (!this.group) return;
      const [weights, policy] = await Promise.all([
        fleetml.api("/v1/weights", { query: { group: this.group } }),
        fleetml.api(`/v1/groups/${encodeURIComponent(this.group)}/policy`),
      ]);
      this.rows = weights.accounts;
      this.policy = policy;
      if (this.editing !== this.group) {
        this.edit = { mode: policy.mode, algorithm: policy.algorithm };
        this.editing = this.group;
      }
    },
    save() {
      const path = `/v1/groups/${encodeURIComponent(this.group)}/policy`;
      return fleetml.act(this, path, { method: "PATCH", body: this.edit });
    },
    fmt: fleetml.fmt,
  }));

  Alpine.data("forecasts", () => ({
    groups: [],
    group: "",
    forecast: null,
    message: "",
    init() {
      fleetml.live(this, this.load);
    },
    async load() {
      this.groups = await fleetml.groups();
      if (!this.group && this.groups.length) this.group = this.groups[0];
      if (!this.group) return;
      try {
        this.forecast = await fleetml.api("/v1/forecasts", { query: { group: this.group } });
        this.message = "";
      } catch (err) {
        this.forecast = null;
        this.message = String(err.message || err);
      }
      this.accuracy = await fleetml.api("/v1/forecasts/accuracy", { query: { group: this.group } });
      this.$nextTick(() => this.draw());
    },
    accuracy: null,
    /** The newest past forecast that fully came true, against the actual values, and the error
     * of every past forecast over time. */
    drawAccuracy() {
      const a = this.accuracy;
      if (!a) return;
      const o = a.overlay;
      if (o) {
        const xs = o.points.map((p) => Date.parse(p.ts));
        const col = (k) => o.points.map((p) => p[k]);
        fleetml.chart(this.$refs.overlay, xs, [
          { label: "forecast", values: col("yhat"), stroke: "#2563eb", width: 2 },
          { label: "80 % low", values: col("lo80"), stroke: "#93c5fd", dash: [4, 4] },
          { label: "80 % high", values: col("hi80"), stroke: "#93c5fd", dash: [4, 4] },
          { label: "actual", values: col("actual"), stroke: "#16a34a", width: 2 },
        ], { height: 240 });
      } else if (this.$refs.overlay) {
        this.$refs.overlay.textContent = "No past forecast has fully come true yet.";
      }
      const runs = a.runs;
      fleetml.chart(this.$refs.errors, runs.map((r) => Date.parse(r.computed_at)), [
        { label: "sMAPE %", values: runs.map((r) => r.smape), stroke: "#dc2626", points: true },
      ], { height: 180 });
    },
    draw() {
      this.drawAccuracy();
      const f = this.forecast;
      if (!f || !f.points) {
        if (this.$refs.chart) this.$refs.chart.textContent = this.message || "no forecast yet";
        return;
      }
      const xs = f.points.map((p) => Date.parse(p.ts));
      const col = (k) => f.points.map((p) => (p[k] === undefined ? null : p[k]));
      fleetml.chart(this.$refs.chart, xs, [
        { label: "forecast", values: col("yhat"), stroke: "#2563eb", width: 2 },
        { label: "80 % low", values: col("lo80"), stroke: "#93c5fd", dash: [4, 4] },
        { label: "80 % high", values: col("hi80"), stroke: "#93c5fd", dash: [4, 4] },
        { label: "95 % low", values: col("lo95"), stroke: "#cbd5e1", dash: [2, 4] },
        { label: "95 % high", values: col("hi95"), stroke: "#cbd5e1", dash: [2, 4] },
      ], { height: 300 });
    },
    fmt: fleetml.fmt,
  }));

  Alpine.data("models", () => ({
    models: [],
    jobs: [],
    registry: true,
    init() {
      fleetml.live(this, this.load);
    },
    async load() {
      const [models, jobs, precision] = await Promise.all([
        fleetml.api("/v1/models"),
        fleetml.api("/v1/jobs", { query: { limit: 50 } }),
        fleetml.api("/v1/alerts/precision"),
      ]);
      this.precision = precision.kinds;
      this.models = models.models;
      this.registry = models.registry_available;
      this.jobs = jobs.runs;
      await this.loadDrift();
      // the champion's curves, or the challenger's while no version is champion
      const risk = this.models.find((m) => m.family === "risk");
      const alias = risk && (risk.champion ? "champion" : risk.challenger ? "challenger" : null);
      this.evaluation = alias
        ? await fleetml.api("/v1/models/risk/evaluation", { query: { alias } })
        : null;
      const anomaly = this.models.find((m) => m.family === "anomaly");
      this.anomalyEvaluation = anomaly && anomaly.champion
        ? await fleetml.api("/v1/models/anomaly/evaluation")
        : null;
      this.$nextTick(() => this.draw());
    },
    evaluation: null,
    anomalyEvaluation: null,
    precision: [],
    drift: [],
    /** The per-feature drift table: its current window, rows shown folded, families unfolded. */
    driftHours: 24,
    top: 10,
    expanded: {},
    /** PSI per feature (and per metric) of each champion; the API reuses answers for a minute. */
    async loadDrift() {
      const drifting = this.models.filter((m) => m.champion && m.family !== "forecast");
      this.drift = await Promise.all(drifting.map((m) => fleetml.api(
        `/v1/models/${m.family}/drift`, { query: { hours: this.driftHours } })));
    },
    featureWindow(d) {
      return d.feature_window || { skipped: "this server gives no per-feature drift" };
    },
    /** Most drifted first (no PSI last), the top rows unless the family is unfolded. */
    shown(d) {
      const rows = fleetml.view(d.features || [], { by: "psi", dir: -1 });
      return this.expanded[d.family] ? rows : rows.slice(0, this.top);
    },
    counts(d) {
      const n = { major: 0, moderate: 0, stable: 0 };
      for (const r of d.features || []) if (r.level in n) n[r.level] += 1;
      return `${n.major} major, ${n.moderate} moderate, ${n.stable} stable of ${(d.features || []).length} features`;
    },
    levelStyle(level) {
      const colour = { major: "var(--bad)", moderate: "var(--warn)", stable: "#15803d" }[level];
      return colour ? `color: ${colour}; font-weight: 600` : "color: var(--muted)";
    },
    /** Per horizon of the risk champion: its calibration curve and its precision-recall curve
     * with the chosen threshold marked, as measured on the training run's test split. */
    draw() {
      const box = this.$refs.curves;
      if (!box) return;
      box.innerHTML = "";
      const art = (this.evaluation && this.evaluation.artifacts) || {};
      const reliability = art.reliability || {};
      const curves = art.pr_curves || {};
      const thresholds = (art.evaluation && art.evaluation.thresholds) || {};
      for (const h of Object.keys(reliability)) {
        const title = document.createElement("h3");
        const v = this.evaluation;
        title.textContent = `risk ${h}, ${v.alias} v${v.version}: calibration and precision-recall (test split)`;
        const row = document.createElement("div");
        row.className = "pair";
        const cal = document.createElement("div");
        const pr = document.createElement("div");
        cal.className = pr.className = "chart";
        row.append(cal, pr);
        box.append(title, row);
        const bins = reliability[h].filter((b) => b.count > 0 && b.mean_predicted !== null);
        bins.sort((a, b) => a.mean_predicted - b.mean_predicted);
        const xs = bins.map((b) => b.mean_predicted);
        fleetml.chart(cal, xs, [
          { label: "observed", values: bins.map((b) => b.observed_rate), points: true },
          { label: "perfect", values: xs, stroke: "#9ca3af", dash: [4, 4] },
        ], { time: false, height: 200, yRange: [0, 1], xRange: [0, 1] });
        const c = curves[h];
        if (!c || !c.recall.length) {
          pr.textContent = "this run logged no precision-recall curve";
          continue;
        }
        fleetml.prChart(pr, c, thresholds[h], "precision");
      }
      if (!box.children.length) box.textContent = "No risk model yet: train one (fleetml train risk).";
      this.drawAnomaly();
    },
    /** The anomaly champion's held-out precision-recall curve of the score, threshold marked. */
    drawAnomaly() {
      const el = this.$refs.anomalyCurve;
      if (!el) return;
      const v = this.anomalyEvaluation;
      const c = v && v.artifacts && v.artifacts.pr_curve;
      if (!c || !c.recall.length) {
        el.textContent = v ? "This run logged no precision-recall curve (no labelled faults held out, or trained before it was logged)." : "No anomaly champion yet.";
        return;
      }
      const rule = (v.artifacts.evaluation && v.artifacts.evaluation.rule) || {};
      fleetml.prChart(el, c, rule.threshold, "precision (per row)");
    },
    metrics(version) {
      return version ? Object.entries(version.metrics || {}) : [];
    },
    fmt: fleetml.fmt,
  }));
});

window.fleetml = fleetml;
