// m3bng dashboard: plain JavaScript, no build step, nothing loaded from other hosts.
//
// Everything shown comes from the ops API (/api/v1) called with the token the user logged in
// with. Text from the API is only ever placed with textContent / createTextNode (see h() and
// svg() below): no innerHTML, so a payload or an error message can never become markup.
"use strict";

(() => {
  const API = "api/v1"; // relative: works behind a proxy that mounts the service under a prefix
  const TOKEN_KEY = "m3bng.ops.token";
  const REQUEST_TIMEOUT_MS = 15000;
  const REFRESH_MS = 30000;
  const POLL_MS = 1000;
  const POLL_LIMIT_MS = 120000;
  const OPEN = new Set(["pending", "processing"]);
  const REPLAYABLE = new Set(["dead", "skipped", "discarded"]);

  const $ = (id) => document.getElementById(id);
  let me = null; // GET /whoami of the current token
  let renderId = 0; // bumped on every navigation: late answers for an old view are dropped
  let refreshTimer = null;
  let eventTypes = [];
  let instances = null; // GET /instances: [{id, description, paused, pending, dead, ...}], default first

  // ---------------------------------------------------------------- DOM building (no HTML parsing)

  function append(el, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function setAttrs(el, attrs) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    return el;
  }

  // Replace an element's content; null/false children are skipped (replaceChildren would print "null").
  function fill(el, ...children) {
    el.replaceChildren();
    return append(el, children);
  }

  function h(tag, attrs, ...children) {
    return append(setAttrs(document.createElement(tag), attrs), children);
  }

  function svg(tag, attrs, ...children) {
    return append(setAttrs(document.createElementNS("http://www.w3.org/2000/svg", tag), attrs), children);
  }

  function txLink(id, text) {
    return h("a", { href: "#/tx/" + encodeURIComponent(String(Number(id))) }, text ?? "#" + id);
  }

  function badge(status) {
    return h("span", { class: "badge status-" + String(status).replace(/[^a-z_]/g, "") }, status);
  }

  // ---------------------------------------------------------------- formatting

  function fmtTime(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    const p = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  }

  function time(iso) {
    return h("time", { datetime: iso || null, title: iso || null }, fmtTime(iso));
  }

  function fmtDuration(ms) {
    if (ms === null || ms === undefined) return "";
    return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  }

  function fmtAge(seconds) {
    if (seconds === null || seconds === undefined) return "";
    if (seconds < 90) return `${Math.round(seconds)} s`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
    if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
    return `${(seconds / 86400).toFixed(1)} d`;
  }

  function fmtJson(value) {
    return value === undefined ? "" : JSON.stringify(value, null, 2);
  }

  // ---------------------------------------------------------------- messages

  function showError(err, where) {
    const text = err instanceof ApiError ? `${err.message} (${err.code}${err.status ? ", HTTP " + err.status : ""})` : String(err);
    $("error-text").textContent = (where ? where + ": " : "") + text;
    $("error").hidden = false;
  }

  function showNotice(text) {
    $("notice-text").textContent = text;
    $("notice").hidden = false;
  }

  function clearMessages() {
    $("error").hidden = true;
    $("notice").hidden = true;
  }

  function panelError(container, err) {
    const text = err instanceof ApiError ? `${err.message} (${err.code})` : String(err);
    fill(container, h("p", { class: "form-error", role: "alert" }, text));
  }

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, code, message, fields) {
      super(message);
      this.status = status;
      this.code = code;
      this.fields = fields || [];
    }
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json", Authorization: "Bearer " + token() };
    const init = { method, headers, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS), cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(API + path, init);
    } catch (err) {
      throw new ApiError(0, err.name === "TimeoutError" ? "timeout" : "network", "the service did not answer: " + err.message);
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!response.ok) {
      const e = (data && data.error) || {};
      const error = new ApiError(response.status, e.code || "http_" + response.status, e.message || response.statusText || "request failed", e.fields);
      if (response.status === 401 && me) sessionExpired(error);
      throw error;
    }
    return data;
  }

  function query(params) {
    const q = new URLSearchParams();
    for (const [key, value] of Object.entries(params)) {
      if (value !== null && value !== undefined && value !== "") q.append(key, value);
    }
    const s = q.toString();
    return s ? "?" + s : "";
  }

  // ---------------------------------------------------------------- login

  function showView(id) {
    for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== id;
    for (const link of document.querySelectorAll("#nav a")) {
      const nav = id === "overview-view" ? "overview" : id === "mappings-view" || id === "mapping-view" ? "mappings" : "tx";
      const active = link.dataset.nav === nav;
      if (active) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  function showLogin(message) {
    stopRefresh();
    me = null;
    $("nav").hidden = true;
    $("user").hidden = true;
    showView("login-view");
    $("login-error").hidden = !message;
    $("login-error").textContent = message || "";
    $("token").focus();
  }

  function sessionExpired(error) {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin("Your token is no longer accepted: " + error.message);
  }

  async function login(event) {
    event.preventDefault();
    const value = $("token").value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    try {
      me = await api("GET", "/whoami");
    } catch (err) {
      sessionStorage.removeItem(TOKEN_KEY);
      const text = err instanceof ApiError ? `${err.message} (${err.code})` : String(err);
      showLogin("Login failed: " + text);
      return;
    }
    $("token").value = "";
    await route();
  }

  function logout() {
    sessionStorage.removeItem(TOKEN_KEY);
    instances = null;
    clearMessages();
    if (location.hash && location.hash !== "#/") location.hash = "#/";
    showLogin();
  }

  function showUser() {
    $("user-name").textContent = me.name;
    $("user-scope").textContent = me.scope;
    $("user").hidden = false;
    $("nav").hidden = false;
  }

  // ---------------------------------------------------------------- routing (#/, #/tx?…, #/tx/123)

  function parseHash() {
    const raw = location.hash.replace(/^#/, "") || "/";
    const at = raw.indexOf("?");
    const path = at < 0 ? raw : raw.slice(0, at);
    return { path, params: new URLSearchParams(at < 0 ? "" : raw.slice(at + 1)) };
  }

  async function route() {
    const id = ++renderId;
    stopRefresh();
    if (!token()) return showLogin();
    if (!me) {
      try {
        me = await api("GET", "/whoami");
      } catch (err) {
        sessionStorage.removeItem(TOKEN_KEY);
        return showLogin("Login failed: " + err.message);
      }
      if (id !== renderId) return;
    }
    showUser();
    const { path, params } = parseHash();
    const match = path.match(/^\/tx\/(\d+)$/);
    if (match) return showDetail(id, Number(match[1]));
    if (path === "/tx") return showList(id, params);
    const flowMatch = path.match(/^\/mappings\/([A-Za-z0-9_.-]{1,64})$/);
    if (flowMatch) return showMapping(id, flowMatch[1]);
    if (path === "/mappings") return showMappings(id);
    return showOverview(id, params);
  }

  function current(id) {
    return id === renderId;
  }

  // ---------------------------------------------------------------- overview

  function stopRefresh() {
    if (refreshTimer !== null) clearInterval(refreshTimer);
    refreshTimer = null;
  }

  async function showOverview(id, params) {
    showView("overview-view");
    const hours = ["2", "24", "168"].includes(params.get("hours")) ? params.get("hours") : "24";
    $("hours").value = hours;
    await loadOverview(id, Number(hours));
    if (current(id)) {
      refreshTimer = setInterval(() => {
        if (document.visibilityState === "visible") loadOverview(id, Number(hours));
      }, REFRESH_MS);
    }
  }

  async function loadOverview(id, hours) {
    const parts = [
      api("GET", "/stats" + query({ hours })).then((s) => current(id) && renderStats(s), (e) => current(id) && statsFailed(e)),
      api("GET", "/control").then((c) => current(id) && renderControl(c), (e) => {
        if (!current(id)) return;
        panelError($("targets"), e);
        panelError($("flows"), e);
      }),
      api("GET", "/alerts" + query({ state: "firing" })).then((a) => current(id) && renderAlerts(a.items), (e) => current(id) && panelError($("alerts"), e)),
      api("GET", "/dead-letters/summary").then((d) => current(id) && renderDeadLetterGroups(d), (e) => current(id) && panelError($("dlq-groups"), e)),
      api("GET", "/reconcile/latest").then((r) => current(id) && renderReconcile(r.items), (e) => current(id) && panelError($("reconcile"), e)),
      api("GET", "/holds" + query({ limit: 20 })).then((r) => current(id) && renderHolds(r.items), (e) => current(id) && panelError($("holds"), e)),
      api("GET", "/instances").then((r) => current(id) && renderInstances(r.items), (e) => current(id) && panelError($("instances"), e)),
    ];
    await Promise.all(parts);
    if (current(id)) $("refreshed").textContent = "updated " + fmtTime(new Date().toISOString());
  }

  function statsFailed(err) {
    panelError($("cards"), err);
    panelError($("chart-throughput"), err);
    fill($("chart-errors"));
  }

  function card(key, label, value, href, note) {
    const body = [h("span", { class: "value", id: "count-" + key }, value), h("span", { class: "label" }, label), note ? h("span", { class: "note" }, note) : null];
    return href ? h("a", { class: "card", href }, body) : h("div", { class: "card" }, body);
  }

  function renderStats(stats) {
    const sum = (field) => stats.buckets.reduce((n, b) => n + b[field], 0);
    const done = sum("done");
    const dead = sum("dead");
    const finished = done + dead;
    const rate = finished ? ((100 * dead) / finished).toFixed(1) + " %" : "–";
    const c = stats.status_counts;
    const window = stats.hours >= 48 ? `${Math.round(stats.hours / 24)} d` : `${stats.hours} h`;
    fill($("cards"),
      card("backlog", "backlog (pending + processing)", stats.backlog, "#/tx?status=pending"),
      card("dead-letters", "dead letters to resolve", stats.dead_letters, "#/tx?status=dead"),
      card("received", `received in ${window}`, sum("received")),
      card("done", `done in ${window}`, done),
      card("dead", `dead-lettered in ${window}`, dead, null, `error rate ${rate}`),
      card("skipped", "skipped (all time)", c.skipped ?? 0, "#/tx?status=skipped"),
      card("discarded", "discarded (all time)", c.discarded ?? 0, "#/tx?status=discarded"),
      card("held", "held for review", c.held ?? 0, "#/tx?status=held"),
    );
    const seconds = stats.bucket_seconds;
    const per = seconds >= 3600 ? `${seconds / 3600} h` : `${seconds / 60} min`;
    fill($("chart-throughput"),
      chart({
        id: "svg-throughput",
        label: `Events received and done per ${per}`,
        buckets: stats.buckets,
        seconds,
        series: [
          { key: "received", label: "received", kind: "line", value: (b) => b.received },
          { key: "done", label: "done", kind: "line", value: (b) => b.done },
          { key: "dead", label: "dead", kind: "line", value: (b) => b.dead },
        ],
      }),
    );
    fill($("chart-errors"),
      chart({
        id: "svg-errors",
        label: `Share of finished events dead-lettered, per ${per}`,
        buckets: stats.buckets,
        seconds,
        max: 100,
        unit: "%",
        series: [
          {
            key: "rate",
            label: "dead ÷ (done + dead)",
            kind: "bar",
            value: (b) => (b.done + b.dead ? (100 * b.dead) / (b.done + b.dead) : 0),
            detail: (b) => `${b.dead} dead, ${b.done} done`,
          },
        ],
      }),
    );
  }

  function niceMax(value) {
    if (value <= 4) return 4;
    const step = 10 ** Math.floor(Math.log10(value));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * step >= value) return m * step;
    return 10 * step;
  }

  function tickLabel(iso, seconds) {
    const t = fmtTime(iso);
    return seconds >= 3600 * 3 ? t.slice(5, 16) : t.slice(11, 16);
  }

  // An inline SVG chart: one band per bucket, lines or bars per series, hover titles per bucket.
  function chart({ id, label, buckets, seconds, series, max, unit = "" }) {
    const W = 640, H = 220, L = 44, R = 10, T = 12, B = 30;
    const plotW = W - L - R, plotH = H - T - B;
    const n = Math.max(buckets.length, 1);
    const band = plotW / n;
    const top = max ?? niceMax(Math.max(0, ...series.flatMap((s) => buckets.map(s.value))));
    const x = (i) => L + band * (i + 0.5);
    const y = (v) => T + plotH - (plotH * Math.min(v, top)) / top;
    const root = svg("svg", { id, viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label, class: "chart-svg" }, svg("title", {}, label));
    for (const v of [0, top / 2, top]) {
      root.append(
        svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }),
        svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" }, `${Number.isInteger(v) ? v : v.toFixed(1)}${unit}`),
      );
    }
    const ticks = new Set([0, Math.floor((n - 1) / 2), n - 1]);
    for (const i of ticks) {
      if (!buckets[i]) continue;
      root.append(svg("text", { x: x(i), y: H - 10, "text-anchor": "middle", class: "axis" }, tickLabel(buckets[i].start, seconds)));
    }
    for (const s of series) {
      if (s.kind === "bar") {
        buckets.forEach((b, i) => {
          const v = s.value(b);
          if (v > 0) root.append(svg("rect", { x: L + band * i + band * 0.15, width: band * 0.7, y: y(v), height: T + plotH - y(v), class: "bar s-" + s.key }));
        });
      } else {
        const points = buckets.map((b, i) => `${x(i).toFixed(1)},${y(s.value(b)).toFixed(1)}`).join(" ");
        root.append(svg("polyline", { points, class: "line s-" + s.key }));
      }
    }
    // Transparent hover targets with a title listing every series of that bucket.
    buckets.forEach((b, i) => {
      const lines = series.map((s) => `${s.label}: ${fmtNumber(s.value(b))}${unit}${s.detail ? " (" + s.detail(b) + ")" : ""}`);
      root.append(svg("rect", { x: L + band * i, y: T, width: band, height: plotH, class: "hover" }, svg("title", {}, `${fmtTime(b.start)}\n${lines.join("\n")}`)));
    });
    const legend = h("ul", { class: "legend" }, series.map((s) => h("li", {}, h("span", { class: "swatch s-" + s.key }), s.label)));
    return h("div", {}, root, legend);
  }

  function fmtNumber(v) {
    return Number.isInteger(v) ? String(v) : v.toFixed(1);
  }

  function renderAlerts(items) {
    if (!items.length) {
      fill($("alerts"), h("p", { class: "muted ok" }, "No alerts firing."));
      return;
    }
    fill($("alerts"),
      h("ul", { class: "alerts" }, items.map((a) => h("li", { class: "alert" }, h("span", { class: "badge status-dead" }, a.kind), " ", h("strong", {}, a.summary), h("div", { class: "muted" }, "since ", time(a.first_fired_at), ", last seen ", time(a.last_seen_at))))),
    );
  }

  // The newest reconciliation run of each kind (m3bng reconcile), with its counts per class and
  // the findings it left for a person: what "both systems agree" rests on.
  // Open anomaly holds: each row links to the transaction, where its figures and the release
  // and discard buttons are (docs/assist.md).
  function renderHolds(items) {
    if (!items.length) {
      fill($("holds"), h("p", { class: "muted ok" }, "No transaction is held."));
      return;
    }
    fill(
      $("holds"),
      h(
        "table",
        { class: "list", id: "holds-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "transaction"), h("th", {}, "held"), h("th", {}, "flow"), h("th", {}, "rules"), h("th", {}, "why"))),
        h(
          "tbody",
          {},
          items.map((item) =>
            h(
              "tr",
              { "data-event": String(item.event_id) },
              h("td", {}, h("a", { href: `#/tx/${item.event_id}` }, `${item.event_id}`), item.business_key ? h("span", { class: "muted" }, " " + item.business_key) : null),
              h("td", {}, time(item.held_at)),
              h("td", {}, item.flow ?? ""),
              h("td", {}, item.rules.map((r) => h("span", { class: "badge status-held" }, r.replaceAll("_", " ")))),
              h("td", {}, item.findings.map((f) => h("div", {}, f.summary))),
            ),
          ),
        ),
      ),
    );
  }

  function renderReconcile(items) {
    if (!items.length) {
      fill($("reconcile"), h("p", { class: "muted" }, "No reconciliation has run (m3bng reconcile)."));
      return;
    }
    const counts = (c) =>
      Object.entries(c)
        .filter(([name, n]) => n && name !== "m3_calls")
        .map(([name, n]) => `${n} ${name.replaceAll("_", " ")}`)
        .join(", ");
    const rows = items.map(({ run, open }) =>
      h(
        "tr",
        { "data-kind": run.kind, "data-instance": run.instance },
        h("td", {}, run.instance && run.instance !== "default" ? `${run.kind} (${run.instance})` : run.kind),
        h("td", {}, time(run.finished_at || run.started_at)),
        h("td", {}, h("span", { class: `badge status-${run.status === "done" ? "done" : "dead"}` }, run.status), run.error ? " " + run.error : ""),
        h("td", {}, counts(run.counts)),
        h(
          "td",
          { class: "findings" },
          open.length
            ? h("ul", {}, open.map((f) => h("li", { "data-finding": f.finding }, h("strong", {}, f.finding.replaceAll("_", " ")), " ", h("code", {}, f.key))))
            : h("span", { class: "muted ok" }, "none"),
        ),
      ),
    );
    fill($("reconcile"),
      h("table", { class: "list" }, h("thead", {}, h("tr", {}, h("th", {}, "kind"), h("th", {}, "run"), h("th", {}, "status"), h("th", {}, "classes"), h("th", {}, "open findings"))), h("tbody", {}, rows)),
    );
  }

  function renderDeadLetterGroups(summary) {
    if (!summary.groups.length) {
      fill($("dlq-groups"), h("p", { class: "muted ok" }, "No unresolved dead letters."));
      return;
    }
    const rows = summary.groups.map((g) =>
      h(
        "tr",
        {},
        h("td", {}, h("a", { href: "#/tx" + query({ status: "dead", event_type: g.event_type, error_class: g.error_class }) }, g.event_type)),
        h("td", {}, g.reason),
        h("td", {}, g.error_class ?? ""),
        h("td", { class: "num" }, g.count),
      ),
    );
    fill($("dlq-groups"),
      h("table", { class: "list" }, h("thead", {}, h("tr", {}, h("th", {}, "event type"), h("th", {}, "reason"), h("th", {}, "error class"), h("th", { class: "num" }, "count"))), h("tbody", {}, rows)),
      h("p", { class: "muted" }, `${summary.total} unresolved in all.`),
    );
  }

  function pausedCell(item) {
    return item.paused ? h("span", {}, h("span", { class: "badge status-paused" }, "paused"), item.reason ? " " + item.reason : "") : h("span", { class: "muted" }, "running");
  }

  function pauseButton(kind, name, paused) {
    if (!me || me.scope !== "ops:admin") return null;
    return h(
      "button",
      {
        type: "button",
        class: "secondary small",
        onclick: async () => {
          const reason = paused ? null : window.prompt(`Reason for pausing ${kind} ${name} (kept in the audit log):`);
          if (!paused && reason === null) return;
          try {
            await api("POST", paused ? "/control/resume" : "/control/pause", { kind, name, reason: reason || null });
            showNotice(`${kind} ${name} ${paused ? "resumed" : "paused"}.`);
            await loadOverview(renderId, Number($("hours").value));
          } catch (err) {
            showError(err, paused ? "Resume failed" : "Pause failed");
          }
        },
      },
      paused ? "Resume" : "Pause",
    );
  }

  function renderControl(control) {
    eventTypes = control.flows.map((f) => f.event_type);
    fill($("targets"),
      h(
        "table",
        { class: "list" },
        h("thead", {}, h("tr", {}, h("th", {}, "target"), h("th", {}, "circuit"), h("th", {}, "state"), h("th", {}, ""))),
        h(
          "tbody",
          {},
          control.targets.map((t) =>
            h("tr", { "data-target": t.name }, h("td", {}, t.name), h("td", {}, t.circuit ? badge(t.circuit) : h("span", { class: "muted" }, "n/a")), h("td", {}, pausedCell(t)), h("td", {}, pauseButton("target", t.name, t.paused))),
          ),
        ),
      ),
    );
    fill($("flows"),
      h(
        "table",
        { class: "list" },
        h("thead", {}, h("tr", {}, h("th", {}, "flow"), h("th", {}, "target"), h("th", { class: "num" }, "pending"), h("th", { class: "num" }, "processing"), h("th", { class: "num" }, "oldest pending"), h("th", {}, "state"), h("th", {}, ""))),
        h(
          "tbody",
          {},
          control.flows.map((f) =>
            h(
              "tr",
              { "data-flow": f.event_type },
              h("td", {}, h("a", { href: "#/tx" + query({ event_type: f.event_type }) }, f.event_type)),
              h("td", {}, f.target ?? ""),
              h("td", { class: "num" }, f.pending ?? 0),
              h("td", { class: "num" }, f.processing ?? 0),
              h("td", { class: "num" }, fmtAge(f.oldest_pending_age_seconds)),
              h("td", {}, pausedCell(f)),
              h("td", {}, pauseButton("flow", f.event_type, f.paused)),
            ),
          ),
        ),
      ),
    );
  }

  // ---------------------------------------------------------------- BNG instances

  // Shown only when the installation has several instances: with 'default' alone the filter,
  // the column and the panel would say nothing.
  function setInstances(items) {
    instances = items;
    const several = items.length > 1;
    document.body.classList.toggle("several-instances", several);
    $("instance-filter").hidden = !several;
    $("instances-panel").hidden = !several;
    const chosen = $("instance").value;
    fill($("instance"), h("option", { value: "" }, "any"), ...items.map((i) => h("option", { value: i.id }, i.description ? `${i.id}: ${i.description}` : i.id)));
    $("instance").value = items.some((i) => i.id === chosen) ? chosen : "";
  }

  async function ensureInstances() {
    if (instances) return;
    try {
      setInstances((await api("GET", "/instances")).items);
    } catch {
      // the filter is only shown when known
    }
  }

  function renderInstances(items) {
    setInstances(items);
    fill($("instances"),
      h(
        "table",
        { class: "list" },
        h("thead", {}, h("tr", {}, h("th", {}, "instance"), h("th", {}, "BNG"), h("th", { class: "num" }, "pending"), h("th", { class: "num" }, "dead"), h("th", {}, "state"), h("th", {}, ""))),
        h(
          "tbody",
          {},
          items.map((i) =>
            h(
              "tr",
              { "data-instance": i.id },
              h("td", {}, h("a", { href: "#/tx" + query({ instance: i.id }) }, i.id), i.description ? h("span", { class: "muted" }, " " + i.description) : null),
              h("td", {}, i.bng_host ?? ""),
              h("td", { class: "num" }, h("a", { href: "#/tx" + query({ instance: i.id, status: "pending" }) }, String(i.pending))),
              h("td", { class: "num" }, h("a", { href: "#/tx" + query({ instance: i.id, status: "dead" }) }, String(i.dead))),
              h("td", {}, pausedCell(i)),
              h("td", {}, pauseButton("instance", i.id, i.paused)),
            ),
          ),
        ),
      ),
    );
  }

  // ---------------------------------------------------------------- transaction list

  let listState = null; // { params, cursor }

  async function ensureEventTypes() {
    if (!eventTypes.length) {
      try {
        const control = await api("GET", "/control");
        eventTypes = control.flows.map((f) => f.event_type);
      } catch {
        return; // the datalist is only a suggestion
      }
    }
    fill($("event-types"), ...[...new Set(eventTypes)].sort().map((t) => h("option", { value: t })));
  }

  async function showList(id, params) {
    showView("list-view");
    $("q").value = params.get("q") || "";
    $("status").value = params.get("status") || "";
    $("event-type").value = params.get("event_type") || "";
    $("error-class").value = params.get("error_class") || "";
    await ensureInstances();
    if (!current(id)) return;
    $("instance").value = params.get("instance") || "";
    fill($("tx-rows"));
    $("tx-empty").hidden = true;
    $("more").hidden = true;
    listState = { id, params, cursor: null };
    ensureEventTypes();
    await loadPage();
  }

  async function loadPage() {
    const state = listState;
    const filter = {};
    for (const key of ["q", "status", "event_type", "error_class", "source", "since", "until", "program", "instance"]) {
      filter[key] = state.params.get(key);
    }
    filter.limit = 50;
    filter.cursor = state.cursor;
    $("more").disabled = true;
    try {
      const page = await api("GET", "/transactions" + query(filter));
      if (!current(state.id)) return;
      append($("tx-rows"), page.items.map(txRow));
      state.cursor = page.next_cursor;
      $("more").hidden = !page.next_cursor;
      $("tx-empty").hidden = $("tx-rows").children.length > 0;
    } catch (err) {
      if (current(state.id)) showError(err, "Search failed");
    } finally {
      $("more").disabled = false;
    }
  }

  function txRow(tx) {
    return h(
      "tr",
      { "data-tx": tx.id },
      h("td", {}, txLink(tx.id)),
      h("td", { class: "instance-col" }, tx.instance ?? ""),
      h("td", {}, time(tx.received_at)),
      h("td", {}, tx.event_type),
      h("td", {}, tx.business_key ? txLink(tx.id, tx.business_key) : ""),
      h("td", {}, badge(tx.status)),
      h("td", { class: "num" }, tx.attempts),
      h("td", { class: "error-cell", title: tx.last_error || null }, tx.error_class ? h("code", {}, tx.error_class) : "", tx.last_error ? " " + truncate(tx.last_error, 90) : ""),
    );
  }

  function truncate(text, n) {
    return text.length > n ? text.slice(0, n - 1) + "…" : text;
  }

  function search(event) {
    event.preventDefault();
    const params = query({ q: $("q").value.trim(), status: $("status").value, event_type: $("event-type").value.trim(), error_class: $("error-class").value.trim(), instance: $("instance").value });
    const target = "#/tx" + params;
    if (location.hash === target) route();
    else location.hash = target;
  }

  // ---------------------------------------------------------------- transaction detail

  async function showDetail(id, txId) {
    showView("detail-view");
    const container = $("detail");
    fill(container, h("p", { class: "muted" }, `Loading transaction ${txId}…`));
    let tx;
    try {
      tx = await api("GET", `/transactions/${txId}`);
    } catch (err) {
      if (current(id)) panelError(container, err);
      return;
    }
    if (!current(id)) return;
    renderDetail(container, tx);
    if (OPEN.has(tx.status)) pollDetail(id, txId);
  }

  // While a transaction is pending or processing (e.g. just replayed), re-read it until it settles.
  async function pollDetail(id, txId) {
    const until = Date.now() + POLL_LIMIT_MS;
    while (current(id) && Date.now() < until) {
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      if (!current(id)) return;
      let tx;
      try {
        tx = await api("GET", `/transactions/${txId}`);
      } catch (err) {
        if (current(id)) showError(err, "Refreshing the transaction failed");
        return;
      }
      if (!current(id)) return;
      renderDetail($("detail"), tx);
      if (!OPEN.has(tx.status)) return;
    }
  }

  function field(label, ...value) {
    return [h("dt", {}, label), h("dd", {}, ...value)];
  }

  function renderDetail(container, tx) {
    const mapping = tx.mapping || {};
    const mappingNote = mapping.hash && mapping.current_hash && mapping.hash !== mapping.current_hash ? h("span", { class: "badge status-skipped" }, "mapping changed since") : null;
    fill(container,
      h("p", {}, h("a", { href: "#/tx" }, "← Transactions")),
      h("div", { class: "toolbar" }, h("h1", {}, `Transaction ${tx.id}`), h("span", { id: "tx-status", class: "badge big status-" + String(tx.status).replace(/[^a-z_]/g, "") }, tx.status)),
      actionsPanel(tx),
      h(
        "section",
        { class: "panel" },
        h(
          "dl",
          { class: "fields" },
          field("event type", tx.event_type),
          instances && instances.length > 1 ? field("instance", tx.instance) : null,
          field("source", tx.source),
          field("business key", tx.business_key ?? ""),
          field("external id", h("code", {}, tx.external_id)),
          field("correlation id", h("code", {}, tx.correlation_id)),
          field("attempts", tx.attempts),
          field("received", time(tx.received_at)),
          field("updated", time(tx.updated_at)),
          field("finished", time(tx.finished_at)),
          field("error", tx.error_class ? h("code", {}, tx.error_class) : "", tx.last_error ? " " + tx.last_error : ""),
          field("mapping", mapping.name ?? "", mapping.hash ? h("code", { title: mapping.hash }, " " + mapping.hash.slice(0, 12)) : "", " ", mappingNote),
          field("keys", (tx.keys || []).map((k) => h("span", { class: "chip", title: k.kind }, k.value))),
        ),
      ),
      tx.dead_letter ? deadLetterPanel(tx.dead_letter) : null,
      tx.status === "dead" ? fixesPanel(tx) : null,
      anomaliesPanel(tx.anomalies || []),
      stepsPanel(tx),
      h(
        "section",
        { class: "panel" },
        h("h2", {}, "Payload"),
        tx.payload === null ? h("p", { class: "muted" }, "Purged by retention (only its hash is kept).") : h("pre", { id: "payload", class: "json" }, fmtJson(tx.payload)),
        h("details", {}, h("summary", {}, "Checkpoint (keys obtained by completed steps)"), h("pre", { class: "json" }, fmtJson(tx.checkpoint))),
      ),
      replaysPanel(tx.replays || []),
    );
  }

  // The anomaly rules that fired for this transaction: the rule, its figures (value, median,
  // MAD, robust z, thresholds, history size) and the history they were computed from.
  function anomaliesPanel(findings) {
    if (!findings.length) return null;
    const FIGURES = ["value", "median", "mad_log", "robust_z", "ratio", "max_z", "min_ratio", "history_size", "min_history", "max_amount", "window_minutes", "minutes_apart"];
    return h(
      "section",
      { class: "panel", id: "anomalies" },
      h("h2", {}, "Anomaly rules"),
      findings.map((f) =>
        h(
          "div",
          { class: "anomaly", "data-rule": f.rule },
          h("h3", {}, h("span", { class: "badge status-" + (f.action === "hold" ? "hold" : "flag") }, f.action), " ", f.rule.replaceAll("_", " "), f.resolution ? h("span", { class: "muted" }, ` — ${f.resolution} by ${f.resolved_by ?? "?"} ${fmtTime(f.resolved_at)}`) : null),
          h("p", {}, f.summary),
          h(
            "div",
            { class: "figures" },
            FIGURES.filter((k) => f.detail && f.detail[k] !== undefined && f.detail[k] !== null).map((k) => h("div", { "data-figure": k }, h("span", { class: "muted" }, k.replaceAll("_", " ") + " "), h("strong", {}, String(f.detail[k])))),
          ),
          f.detail && f.detail.history && f.detail.history.length
            ? h("details", {}, h("summary", {}, `History (${f.detail.history.length} newest)`), h("pre", { class: "json" }, fmtJson(f.detail.history)))
            : null,
        ),
      ),
    );
  }

  function deadLetterPanel(dl) {
    return h(
      "section",
      { class: "panel dead-letter", id: "dead-letter" },
      h("h2", {}, "Dead letter", dl.resolved_at ? h("span", { class: "badge status-done" }, "resolved: " + (dl.resolution ?? "")) : h("span", { class: "badge status-dead" }, "unresolved")),
      h(
        "dl",
        { class: "fields" },
        field("reason", dl.reason),
        field("error class", dl.error_class ? h("code", {}, dl.error_class) : ""),
        field("error", dl.error ?? ""),
        field("attempts", dl.attempts),
        field("dead-lettered", time(dl.created_at)),
        dl.resolved_at ? field("resolved", time(dl.resolved_at)) : null,
        dl.failed_step_id ? field("failed step", h("button", { type: "button", class: "link", onclick: () => openStep(dl.failed_step_id) }, "step " + dl.failed_step_id)) : null,
      ),
    );
  }

  // Fix suggestions (docs/assist.md): worked out on request from the dead letter and M3, each
  // with its reasons. "Use this" prepares it (a dry run: nothing is replayed) and fills the
  // Actions form with the edited payload and the diff; ops confirm with the replay button.
  function fixesPanel(tx) {
    const body = h("div", {}, h("p", { class: "muted" }, "Looking for fixes (reads M3's item and customer lists)…"));
    const panel = h("section", { class: "panel fixes", id: "fixes" }, h("h2", {}, "Fix suggestions"), body);
    api("GET", `/transactions/${tx.id}/fix-suggestions`).then(
      (found) => fill(body, fixesList(tx, found)),
      (err) => fill(body, h("p", { class: "error" }, `Fix suggestions unavailable: ${err.message}`)),
    );
    return panel;
  }

  function fixesList(tx, found) {
    const canUse = Boolean(me && me.can_replay);
    const items = found.suggestions || [];
    const cause = found.cause || {};
    return h(
      "div",
      {},
      h("p", { id: "fix-cause" }, "Cause: ", h("code", {}, cause.kind), cause.field ? [" · field ", h("code", {}, cause.field)] : "", cause.value ? [" · value ", h("code", {}, cause.value)] : ""),
      items.length
        ? h(
            "ol",
            { id: "fix-list", class: "fix-list" },
            items.map((s) => {
              const needsAdmin = s.edit.length > 0 && !me.sees_personal_data;
              return h(
                "li",
                { class: "fix", "data-kind": s.kind },
                h("div", { class: "fix-head" }, h("span", { class: "score", title: "score (1 = certain)" }, s.score.toFixed(2)), " ", h("strong", { class: "fix-title" }, s.title)),
                h("div", { class: "fix-why muted" }, "Why: ", s.why),
                s.edit.length ? h("div", { class: "fix-edit" }, s.edit.map((c) => h("span", { class: "chip" }, `${c.path}: ${c.before} → ${c.after}`))) : null,
                s.action ? h("div", { class: "fix-action" }, s.action) : null,
                canUse
                  ? h("button", { type: "button", class: "secondary use-fix", disabled: needsAdmin, title: needsAdmin ? "The payload is shown masked; editing it needs a token with ops:admin." : null, onclick: () => useFix(tx, s) }, "Use this")
                  : null,
              );
            }),
          )
        : h("p", { class: "muted" }, "No suggestion for this cause."),
      (found.notes || []).map((n) => h("p", { class: "muted fix-note" }, n)),
    );
  }

  async function useFix(tx, suggestion) {
    clearMessages();
    let prepared;
    try {
      prepared = await api("POST", `/transactions/${tx.id}/fix-suggestions/${suggestion.number}/prepare`);
    } catch (err) {
      showError(err, "Preparing the fix failed");
      return;
    }
    const editor = $("payload-editor");
    const toggle = $("edit-payload");
    const reason = $("action-reason");
    if (!editor || !toggle || !reason) return;
    const edited = "payload" in prepared.replay.body;
    toggle.checked = edited;
    editor.hidden = !edited;
    if (edited) editor.value = fmtJson(prepared.replay.body.payload);
    reason.value = prepared.replay.body.reason;
    const lines = (prepared.diff || []).map((c) => h("span", { class: "add" }, `${c.change} ${c.path}: ${JSON.stringify(c.before)} → ${JSON.stringify(c.after)}\n`));
    const confirm = prepared.mode === "from_start" ? "Replay from start" : "Replay from failed step";
    fill(
      $("fix-prepared"),
      h("p", { id: "fix-prepared-note" }, `Dry run of suggestion ${suggestion.number} (nothing replayed yet): ${lines.length ? lines.length + " change(s)" : "no payload change"}. Confirm with “${confirm}”.`),
      lines.length ? h("pre", { id: "fix-diff", class: "json diff" }, lines) : null,
    );
    $("fix-prepared").hidden = false;
    for (const id of ["replay-start", "replay-failed"]) $(id).classList.toggle("suggested", (id === "replay-start") === (prepared.mode === "from_start"));
    $("actions").scrollIntoView({ block: "center" });
  }

  function openStep(stepId) {
    const el = document.getElementById("step-" + stepId);
    if (!el) return;
    el.open = true;
    el.scrollIntoView({ block: "center" });
  }

  function stepsPanel(tx) {
    const steps = [...(tx.steps || [])].sort((a, b) => a.id - b.id);
    const failedId = tx.dead_letter ? tx.dead_letter.failed_step_id : null;
    return h(
      "section",
      { class: "panel" },
      h("h2", {}, `Steps (${steps.length})`),
      steps.length
        ? h(
            "ol",
            { id: "steps", class: "timeline" },
            steps.map((s) =>
              h(
                "li",
                { class: "step step-" + String(s.status).replace(/[^a-z_]/g, "") + (s.id === failedId ? " failed-step" : "") },
                h(
                  "details",
                  { id: "step-" + s.id },
                  h(
                    "summary",
                    {},
                    h("span", { class: "attempt", title: "attempt" }, "#" + s.attempt),
                    " ",
                    h("strong", {}, s.name),
                    " ",
                    h("span", { class: "target" }, s.target),
                    " ",
                    h("code", {}, s.operation),
                    " ",
                    badge(s.status),
                    " ",
                    h("span", { class: "muted" }, fmtDuration(s.duration_ms), " · ", fmtTime(s.started_at)),
                    s.error ? h("div", { class: "step-error" }, s.error_class ? h("code", {}, s.error_class) : "", " ", s.error) : null,
                  ),
                  h("div", { class: "grid2" }, h("div", {}, h("h3", {}, "Request"), h("pre", { class: "json" }, fmtJson(s.request))), h("div", {}, h("h3", {}, "Response"), h("pre", { class: "json" }, fmtJson(s.response)))),
                ),
              ),
            ),
          )
        : h("p", { class: "muted" }, "No outbound calls recorded."),
    );
  }

  function replaysPanel(replays) {
    if (!replays.length) return null;
    return h(
      "section",
      { class: "panel" },
      h("h2", {}, "Replays"),
      h(
        "table",
        { class: "list" },
        h("thead", {}, h("tr", {}, h("th", {}, "id"), h("th", {}, "when"), h("th", {}, "mode"), h("th", {}, "by"), h("th", {}, "edited"), h("th", {}, "bulk"))),
        h("tbody", {}, replays.map((r) => h("tr", {}, h("td", {}, r.id), h("td", {}, time(r.created_at)), h("td", {}, r.mode), h("td", {}, r.requested_by), h("td", {}, r.edited ? "yes" : ""), h("td", {}, r.bulk_id ?? "")))),
      ),
    );
  }

  // A held transaction: release it (back in line, the hold bypassed) or discard it (closed unsent).
  function holdActions(tx) {
    const reason = h("input", { id: "hold-reason", type: "text", placeholder: "why (kept in the audit log)", spellcheck: "false" });
    const buttons = [];
    const end = async (what) => {
      const why = reason.value.trim();
      if (what === "discard" && !why) {
        showError(new ApiError(0, "reason_required", "say why this held transaction is discarded (the reason field)"), "Discard not sent");
        reason.focus();
        return;
      }
      buttons.forEach((b) => (b.disabled = true));
      clearMessages();
      try {
        await api("POST", `/holds/${tx.id}/${what}`, { reason: why || null });
        showNotice(what === "release" ? `Transaction ${tx.id} released: back in line, the hold bypassed.` : `Transaction ${tx.id} discarded.`);
        await route();
      } catch (err) {
        showError(err, what === "release" ? "Release failed" : "Discard failed");
        buttons.forEach((b) => (b.disabled = false));
      }
    };
    buttons.push(
      h("button", { id: "release-hold", type: "button", onclick: () => end("release") }, "Release"),
      h("button", { id: "discard-hold", type: "button", class: "danger", onclick: () => end("discard") }, "Discard…"),
    );
    return h(
      "section",
      { class: "panel actions", id: "actions" },
      h("h2", {}, "Held for review"),
      h("p", { class: "muted" }, "An anomaly rule stopped this transaction before anything was sent to M3 (see the rules below). Release sends it as it is; discard closes it unsent."),
      h("label", { class: "grow" }, "Reason ", reason),
      h("div", { class: "buttons" }, buttons),
    );
  }

  function actionsPanel(tx) {
    if (!me || !me.can_replay) return null;
    if (tx.status === "held") return holdActions(tx);
    if (!REPLAYABLE.has(tx.status)) {
      return h("section", { class: "panel actions muted" }, `Replay and discard are possible once a transaction is dead, skipped or discarded; this one is ${tx.status}.`);
    }
    const reason = h("input", { id: "action-reason", type: "text", placeholder: "why (kept in the audit log)", spellcheck: "false" });
    // Others see personal data masked: replaying their copy would send the masks.
    const canEdit = me.sees_personal_data;
    const editToggle = h("input", { id: "edit-payload", type: "checkbox", disabled: !canEdit });
    const editor = h("textarea", { id: "payload-editor", rows: "12", spellcheck: "false", hidden: true });
    editor.value = tx.payload === null ? "" : fmtJson(tx.payload); // purged: paste the original
    editToggle.addEventListener("change", () => {
      editor.hidden = !editToggle.checked;
    });
    const buttons = [];
    const disableAll = (yes) => buttons.forEach((b) => (b.disabled = yes));

    async function replay(mode) {
      let payload = null;
      if (editToggle.checked) {
        try {
          payload = JSON.parse(editor.value);
        } catch (err) {
          showError(new ApiError(0, "invalid_json", "the edited payload is not valid JSON: " + err.message), "Replay not sent");
          return;
        }
      }
      disableAll(true);
      clearMessages();
      try {
        const result = await api("POST", `/transactions/${tx.id}/replay`, { mode, payload, reason: reason.value.trim() || null });
        const changes = (result.diff || []).length;
        showNotice(`Replay ${result.replay_id} queued (${mode.replace(/_/g, " ")}${changes ? `, ${changes} field(s) edited` : ""}).`);
        await route(); // re-read; the page then follows the transaction until it settles
      } catch (err) {
        showError(err, "Replay failed");
        disableAll(false);
      }
    }

    async function discard() {
      const why = reason.value.trim();
      if (!why) {
        showError(new ApiError(0, "reason_required", "say why this transaction is discarded (the reason field)"), "Discard not sent");
        reason.focus();
        return;
      }
      disableAll(true);
      clearMessages();
      try {
        await api("POST", `/transactions/${tx.id}/discard`, { reason: why });
        showNotice(`Transaction ${tx.id} discarded.`);
        await route();
      } catch (err) {
        showError(err, "Discard failed");
        disableAll(false);
      }
    }

    buttons.push(
      h("button", { id: "replay-failed", type: "button", onclick: () => replay("from_failed_step") }, "Replay from failed step"),
      h("button", { id: "replay-start", type: "button", class: "secondary", onclick: () => replay("from_start") }, "Replay from start"),
    );
    if (tx.status === "dead") buttons.push(h("button", { id: "discard", type: "button", class: "danger", onclick: discard }, "Discard…"));
    return h(
      "section",
      { class: "panel actions", id: "actions" },
      h("h2", {}, "Actions"),
      h("label", { class: "grow" }, "Reason ", reason),
      h("div", { id: "fix-prepared", class: "fix-prepared", hidden: true }),
      h("div", { class: "buttons" }, buttons),
      h(
        "label",
        { class: "check", title: canEdit ? null : "The payload is shown masked; editing it needs a token with ops:admin." },
        editToggle,
        " Replay with an edited payload",
        canEdit ? "" : h("span", { class: "muted" }, " (needs ops:admin: the payload is shown masked)"),
      ),
      editor,
    );
  }

  // ---------------------------------------------------------------- mappings (the studio's pages)
  //
  // #/mappings: every flow with its live version; #/mappings/<flow>: the live version as a table
  // per call, its YAML, the history with diffs between any two versions and, for ops:admin, a
  // YAML editor to save a draft, publish it and roll back. The API refuses changes to any other
  // token whatever the page shows.

  function isAdmin() {
    return Boolean(me && me.scope === "ops:admin");
  }

  function mappingLink(flow, text) {
    return h("a", { href: "#/mappings/" + encodeURIComponent(flow) }, text ?? flow);
  }

  async function showMappings(id) {
    showView("mappings-view");
    const container = $("mapping-flows");
    fill(container, h("p", { class: "muted" }, "Loading…"));
    let flows;
    try {
      flows = await api("GET", "/mappings");
    } catch (err) {
      if (current(id)) panelError(container, err);
      return;
    }
    if (!current(id)) return;
    if (!flows.items.length) {
      fill(container, h("p", { class: "muted" }, "No mapping versions in the store."));
      return;
    }
    fill(container,
      h(
        "table",
        { class: "list", id: "mapping-flow-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "flow"), h("th", { class: "num" }, "live version"), h("th", {}, "source"), h("th", {}, "published"), h("th", {}, "by"), h("th", { class: "num" }, "drafts"), h("th", {}, "conflict"))),
        h(
          "tbody",
          {},
          flows.items.map((f) =>
            h(
              "tr",
              { "data-flow": f.flow },
              h("td", {}, mappingLink(f.flow)),
              h("td", { class: "num live-version" }, f.live ? String(f.live.version) : h("span", { class: "muted" }, "none")),
              h("td", {}, f.live ? f.live.source : ""),
              h("td", {}, f.live ? time(f.live.published_at) : ""),
              h("td", {}, f.live ? f.live.author : ""),
              h("td", { class: "num" }, f.drafts ? h("span", { class: "badge status-pending" }, String(f.drafts)) : "0"),
              h("td", {}, f.conflict ? h("span", { class: "badge status-dead", title: f.conflict.message }, "conflict") : h("span", { class: "muted" }, "none")),
            ),
          ),
        ),
      ),
    );
  }

  async function showMapping(id, flow) {
    showView("mapping-view");
    const container = $("mapping");
    fill(container, h("p", { class: "muted" }, `Loading ${flow}…`));
    let summary, history;
    try {
      const flows = await api("GET", "/mappings");
      summary = flows.items.find((f) => f.flow === flow) || null;
      history = await api("GET", `/mappings/${encodeURIComponent(flow)}/versions`);
    } catch (err) {
      if (current(id)) panelError(container, err);
      return;
    }
    if (!current(id)) return;
    const live = summary && summary.live;
    let liveText = null;
    let table = null;
    let offer = null;
    if (live) {
      try {
        [liveText, table, offer] = await Promise.all([
          api("GET", `/mappings/${encodeURIComponent(flow)}/versions/${live.version}`),
          api("GET", `/mappings/${encodeURIComponent(flow)}/versions/${live.version}/fields`),
          api("GET", `/mappings/${encodeURIComponent(flow)}/replay-candidates`).catch(() => null),
        ]);
      } catch (err) {
        if (current(id)) panelError(container, err);
        return;
      }
      if (!current(id)) return;
    }
    // The working copy: the text form edits and the YAML editor change, previews render and
    // "Save draft" stores. It starts as the live version's text.
    const work = { flow, id, liveText: liveText ? liveText.text : "", text: liveText ? liveText.text : "", table, liveVersion: live ? live.version : null };
    const admin = isAdmin();
    const tables = h("div", { id: "field-tables-slot" });
    const ruleSlot = h("div", { id: "rule-form-slot" });
    work.rerender = () => fill(tables, table ? fieldTablesPanel(work.table, admin ? work : null) : null);
    work.openForm = (call, field, m3) => fill(ruleSlot, ruleFormPanel(work, call, field, m3));
    work.closeForm = () => fill(ruleSlot);
    work.openVar = (name, value) => fill(ruleSlot, varFormPanel(work, name, value));
    work.rerender();
    const editor = admin ? editorPanel(work) : null;
    fill(container,
      h("p", {}, h("a", { href: "#/mappings" }, "← Mappings")),
      h(
        "div",
        { class: "toolbar" },
        h("h1", {}, flow),
        live ? h("span", { id: "live-version", class: "badge big status-done" }, `live: version ${live.version}`) : h("span", { class: "badge big status-skipped" }, "nothing live"),
        table && table.description ? h("span", { class: "muted" }, table.description) : null,
      ),
      summary && summary.conflict ? h("section", { class: "panel dead-letter", id: "mapping-conflict" }, h("h2", {}, "Conflict"), h("p", {}, summary.conflict.message)) : null,
      offer ? replayOfferPanel(flow, offer) : null,
      tables,
      ruleSlot,
      live ? previewPanel(work) : null,
      liveText && !admin ? h("section", { class: "panel" }, h("h2", {}, `YAML of version ${live.version}`), h("pre", { id: "live-yaml", class: "json yaml" }, liveText.text)) : null,
      editor,
      historyPanel(flow, history.items),
      diffPanel(flow, history.items),
    );
  }

  // The working copy changed (a form edit, or the YAML editor): its table is fetched again, so
  // the fields shown are always those of the text that would be saved.
  async function setWorkingText(work, text) {
    work.text = text;
    const editor = $("yaml-editor");
    if (editor && editor.value !== text) editor.value = text;
    const problems = $("draft-error");
    try {
      work.table = await api("POST", `/mappings/${encodeURIComponent(work.flow)}/fields`, { text });
      if (problems) problems.hidden = true;
    } catch (err) {
      if (problems) showProblems(problems, "The YAML does not load: ", err);
      return;
    }
    const edited = text !== work.liveText;
    const state = $("working-state");
    if (state) {
      state.textContent = edited ? "edited: not saved" : "same as the live version";
      state.className = "badge " + (edited ? "status-pending" : "status-done");
    }
    work.rerender();
  }

  function showProblems(el, title, err) {
    const listed = (err.fields || []).map((f) => (f.field && f.field !== "text" ? `${f.field}: ${f.problem}` : f.problem)).filter(Boolean);
    fill(el,
      h("strong", {}, title),
      listed.length ? h("ul", {}, listed.map((p) => h("li", {}, p))) : (err instanceof ApiError ? `${err.message} (${err.code})` : String(err)),
    );
    el.hidden = false;
  }

  function fieldTablesPanel(table, work) {
    const vars = Object.entries(table.vars || {});
    const title = work ? "Fields of the working copy" : `Fields of version ${table.version}`;
    const edited = work && work.text !== work.liveText;
    return h(
      "section",
      { class: "panel", id: "field-tables" },
      h("h2", {}, title, work ? h("span", { id: "working-state", class: "badge " + (edited ? "status-pending" : "status-done") }, edited ? "edited: not saved" : "same as the live version") : null, h("span", { class: "muted" }, "triggered by " + table.trigger.join(", "))),
      vars.length
        ? h("p", { id: "mapping-vars" }, h("span", { class: "muted" }, "vars: "), vars.map(([k, v]) =>
            work
              ? h("button", { type: "button", class: "chip edit-var", "data-var": k, title: "change this var", onclick: () => work.openVar(k, v) }, `${k} = ${v}`)
              : h("span", { class: "chip", "data-var": k }, `${k} = ${v}`)))
        : null,
      table.calls.map((c) =>
        h(
          "div",
          { class: "call", "data-call": c.call },
          h("h3", {}, h("strong", {}, c.call), " ", h("code", {}, c.operation), " ", h("span", { class: "target" }, c.target), c.for_each ? h("span", { class: "muted" }, ` · for each ${c.for_each}`) : null, c.condition ? h("span", { class: "muted" }, ` · only if ${c.condition}`) : null),
          c.fields.length
            ? h(
                "table",
                { class: "list fields-table" },
                h("thead", {}, h("tr", {}, ["field", "M3 (tenant)", "source", "path", "var / value", "lookup", "condition", "conversion", "default", "required", work ? "" : null].filter((t) => t !== null).map((t) => h("th", {}, t)))),
                h(
                  "tbody",
                  {},
                  c.fields.map((f) =>
                    h(
                      "tr",
                      { "data-field": f.field, title: f.rule },
                      h("td", {}, h("code", {}, f.field)),
                      m3Cell(c, f),
                      h("td", {}, f.source),
                      h("td", {}, f.path ? h("code", {}, f.path) : ""),
                      h("td", {}, f.var ?? f.value ?? ""),
                      h("td", {}, f.lookup ?? ""),
                      h("td", {}, f.condition ?? ""),
                      h("td", {}, f.conversion ?? ""),
                      h("td", { class: "default-cell" }, f.default ?? ""),
                      h("td", {}, f.required ? "yes" : ""),
                      work && !f.field.startsWith("{") ? h("td", {}, h("button", { type: "button", class: "secondary small edit-rule", onclick: () => work.openForm(c, f, f.m3) }, "Edit")) : work ? h("td", {}) : null,
                    ),
                  ),
                ),
              )
            : h("p", { class: "muted" }, "No fields."),
          c.metadata && c.metadata !== "tenant" ? h("p", { class: "muted metadata-note" }, c.metadata) : null,
          (c.missing_mandatory || []).length
            ? h(
                "p",
                { class: "warn missing-mandatory" },
                "Mandatory in M3, filled by no rule: ",
                c.missing_mandatory.map((m) => h("span", { class: "chip", title: m.description }, `${m.name} (${m.description})`)),
              )
            : null,
          work && c.target === "m3" ? fieldSearch(work, c) : null,
          work && c.target === "m3" ? suggestionsPanel(work, c) : null,
        ),
      ),
    );
  }

  // Add a field: search the transaction's input fields in the tenant's metadata by name or
  // description, then fill the chosen one's rule in the form.
  function fieldSearch(work, call) {
    const [program, transaction] = call.operation.split("/");
    const input = h("input", { type: "search", class: "field-search", placeholder: `add a field: search ${call.operation} by name or description`, spellcheck: "false" });
    const results = h("ul", { class: "field-results" });
    async function run(ev) {
      if (ev) ev.preventDefault();
      const exclude = call.fields.map((f) => f.field);
      try {
        const found = await api("GET", `/mappings/m3-fields/${encodeURIComponent(program)}/${encodeURIComponent(transaction)}` + query({ q: input.value.trim() }) + exclude.map((f) => "&exclude=" + encodeURIComponent(f)).join(""));
        if (found.metadata !== "tenant") {
          fill(results, h("li", { class: "muted" }, found.metadata));
          return;
        }
        if (!found.items.length) {
          fill(results, h("li", { class: "muted" }, "No field of the transaction matches."));
          return;
        }
        fill(results, found.items.map((m) =>
          h("li", { "data-field": m.name },
            h("button", { type: "button", class: "pick pick-field", onclick: () => { fill(results); input.value = ""; work.openForm(call, null, m); } }, m.name),
            " ", m.description, " ", h("span", { class: "muted" }, `${m.type}${m.length || ""}${m.mandatory ? " · mandatory" : ""}`),
          ),
        ));
      } catch (err) {
        showError(err, "Search failed");
      }
    }
    return h("form", { class: "toolbar add-field", onsubmit: run }, input, h("button", { type: "submit", class: "secondary small" }, "Search"), results);
  }

  // Suggestions for a call's empty fields: the payload paths most likely to fill each, with
  // the score and the reasons (words, value shape, pairs the installation already uses). Each
  // "Accept" is the form edit a person would have made; the list stays (in work.suggested) and
  // loses the accepted field when the table is drawn again.
  function suggestionsPanel(work, call) {
    work.suggested = work.suggested || {};
    const problems = h("div", { class: "form-error suggest-error", role: "alert", hidden: true });
    const list = h("ul", { class: "suggestions" });
    const found = work.suggested[call.call];
    // The payload the preview is set to: a pasted one, else the chosen transaction, else the
    // shipped sample.
    async function run() {
      const chosen = $("preview-input") ? $("preview-input").value : "";
      const pasted = $("preview-sample") ? $("preview-sample").value.trim() : "";
      let input = chosen ? { event_id: Number(chosen) } : {};
      if (pasted) {
        try {
          input = { sample: JSON.parse(pasted) };
        } catch (err) {
          showProblems(problems, "The pasted payload is not JSON: ", err);
          return;
        }
      }
      try {
        work.suggested[call.call] = await api("POST", `/mappings/${encodeURIComponent(work.flow)}/suggestions`, { text: work.text, call: call.call, ...input });
        work.rerender();
      } catch (err) {
        showProblems(problems, "No suggestions: ", err);
      }
    }
    function accept(field, candidate) {
      applyEdit(work, { call: call.call, field: field.name, rule: candidate.rule }, `${call.call}.${field.name} filled from ${candidate.path} (suggested)`, problems);
    }
    if (found) {
      const filled = new Set(call.fields.map((f) => f.field));
      const open = found.fields.filter((f) => !filled.has(f.field.name));
      const shown = open.filter((f) => f.good || f.field.mandatory);
      const where = found.input.kind === "event" ? `transaction ${found.input.event_id}` : `the ${found.input.kind === "sample" ? "pasted" : "shipped"} sample`;
      fill(list,
        found.metadata !== "tenant" ? h("li", { class: "muted" }, found.metadata) : h("li", { class: "muted" }, `Suggestions for ${call.operation} from ${where}: ${shown.length} of ${open.length} empty fields have a good candidate or are mandatory`),
        shown.map((f) => {
          const [best, ...others] = f.candidates;
          return h("li", { class: "suggestion", "data-field": f.field.name },
            h("code", {}, f.field.name), " ", f.field.description, " ", h("span", { class: "muted" }, `${f.field.type}${f.field.length || ""}${f.field.mandatory ? " · mandatory" : ""}`),
            best && f.good
              ? h("span", {}, " ← ", h("code", { class: "suggested-path" }, best.path), " ", h("span", { class: "badge score" }, best.score.toFixed(2)), " ",
                  h("button", { type: "button", class: "small accept-suggestion", onclick: () => accept(f.field, best) }, "Accept"),
                  h("div", { class: "muted reasons" }, best.reasons.join("; ")),
                  others.length ? h("div", { class: "muted reasons" }, "or: ", others.map((o) => [" ", h("button", { type: "button", class: "pick accept-other", "data-path": o.path, title: o.reasons.join("; "), onclick: () => accept(f.field, o) }, `${o.path} (${o.score.toFixed(2)})`)])) : null)
              : h("span", { class: "warn" }, " no path of the payload fits: a var, a value or a value the flow finds"),
          );
        }),
      );
    }
    return h("div", { class: "suggest" },
      h("button", { type: "button", class: "secondary small suggest-fields", onclick: run }, found ? "Suggest again" : "Suggest"),
      problems,
      list,
    );
  }

  // One form edit sent to the server, which changes the one line in the working copy's YAML;
  // the table, the YAML editor and the diff beside the preview follow.
  async function applyEdit(work, body, done, problems) {
    problems.hidden = true;
    try {
      const result = await api("POST", `/mappings/${encodeURIComponent(work.flow)}/edit`, { text: work.text, base: work.liveText, ...body });
      await setWorkingText(work, result.text);
      work.closeForm();
      showNotice(done + " in the working copy: preview it, then save it as a draft.");
      const shown = $("working-diff");
      if (shown) {
        fill(shown, result.diff.split("\n").map((line) => h("span", { class: line.startsWith("+") && !line.startsWith("+++") ? "add" : line.startsWith("-") && !line.startsWith("---") ? "del" : null }, line + "\n")));
        shown.hidden = false;
      }
    } catch (err) {
      showProblems(problems, "Not applied: ", err);
    }
  }

  // A var (the warehouse, the order type …): the tenant values rules name.
  function varFormPanel(work, name, value) {
    const input = h("input", { id: "var-value", type: "text", spellcheck: "false" });
    input.value = String(value);
    const problems = h("div", { id: "var-error", class: "form-error", role: "alert", hidden: true });
    return h(
      "section",
      { class: "panel actions", id: "var-form", "data-var": name },
      h("h2", {}, `Var ${name}`),
      h("p", { class: "muted" }, "Every rule that names this var uses the new value."),
      h("label", {}, "Value ", input),
      problems,
      h("div", { class: "buttons" },
        h("button", { id: "var-apply", type: "button", onclick: () => applyEdit(work, { var: name, value: input.value }, `var ${name} set to ${input.value}`, problems) }, "Apply"),
        h("button", { type: "button", class: "secondary", onclick: () => work.closeForm() }, "Cancel"),
      ),
    );
  }

  // The rule of one field in a form: its source (path with a picker over a recorded payload,
  // a value, a var, a lookup), a default, and the conversions. "Apply" writes the rule into the
  // working copy's YAML (the server edits the one line) and the table follows.
  function ruleFormPanel(work, call, field, m3) {
    const spec = field ? field.spec || {} : {};
    const name = field ? field.field : m3.name;
    const complex = spec.concat || spec.when;
    const varNames = Object.keys(work.table.vars || {});
    const select = (id, options, chosen) => {
      const el = h("select", { id }, options.map(([value, text]) => h("option", { value }, text)));
      el.value = chosen ?? options[0][0];
      return el;
    };
    const text = (id, value, attrs) => {
      const el = h("input", { id, type: "text", spellcheck: "false", ...(attrs || {}) });
      el.value = value ?? "";
      return el;
    };
    const check = (id, on) => {
      const el = h("input", { id, type: "checkbox" });
      el.checked = Boolean(on);
      return el;
    };
    const sourceOf = spec.lookup ? "lookup" : spec.var !== undefined ? "var" : spec.value !== undefined ? "value" : "from";
    const source = select("rule-source", [["from", "path of the event"], ["value", "a fixed value"], ["var", "a var"], ["lookup", "a lookup table"]], sourceOf);
    const from = text("rule-from", spec.from, { placeholder: "e.g. OrderID, _line.SKU, Customer.Email" });
    const value = text("rule-value", spec.value);
    const variable = select("rule-var", varNames.length ? varNames.map((v) => [v, `${v} = ${work.table.vars[v]}`]) : [["", "no vars"]], spec.var);
    const lookup = select("rule-lookup", (work.table.lookups || []).length ? work.table.lookups.map((l) => [l, l]) : [["", "no lookup tables"]], spec.lookup);
    const dflt = spec.default;
    const defaultKind = select("rule-default-kind", [["", "none"], ["value", "a fixed value"], ["var", "a var"], ["keep", "as in the YAML"]], dflt === undefined ? "" : typeof dflt !== "object" ? "value" : dflt.var !== undefined && Object.keys(dflt).length === 1 ? "var" : dflt.value !== undefined && Object.keys(dflt).length === 1 ? "value" : "keep");
    const defaultValue = text("rule-default", dflt === undefined ? "" : typeof dflt !== "object" ? dflt : dflt.value ?? "");
    const defaultVar = select("rule-default-var", varNames.length ? varNames.map((v) => [v, v]) : [["", "no vars"]], dflt && typeof dflt === "object" ? dflt.var : undefined);
    const type = select("rule-type", [["", "as it comes"], ["str", "text"], ["int", "integer"], ["decimal", "decimal"], ["date", "date (yyyyMMdd)"], ["bool", "boolean"]], spec.type ?? "");
    const upper = check("rule-upper", spec.upper);
    const lower = check("rule-lower", spec.lower);
    const truncate = check("rule-truncate", spec.truncate);
    const maxLength = h("input", { id: "rule-max-length", type: "number", min: "1", max: "999" });
    maxLength.value = spec.max_length ?? "";
    const required = check("rule-required", spec.required);
    const problems = h("div", { id: "rule-error", class: "form-error", role: "alert", hidden: true });
    const paths = h("ul", { id: "path-list", class: "path-list" });
    const editDiff = h("pre", { id: "edit-diff", class: "json diff", hidden: true });

    function rule() {
      const r = {};
      const kind = source.value;
      if (kind === "from" || kind === "lookup") r.from = from.value.trim();
      if (kind === "lookup") r.lookup = lookup.value;
      if (kind === "value") r.value = value.value;
      if (kind === "var") r.var = variable.value;
      if (defaultKind.value === "value") r.default = { value: defaultValue.value };
      if (defaultKind.value === "var") r.default = { var: defaultVar.value };
      if (defaultKind.value === "keep") r.default = dflt;
      if (spec.date_input) r.date_input = spec.date_input;
      if (type.value) r.type = type.value;
      if (upper.checked) r.upper = true;
      if (lower.checked) r.lower = true;
      if (truncate.checked) r.truncate = typeof spec.truncate === "number" ? spec.truncate : true;
      if (maxLength.value) r.max_length = Number(maxLength.value);
      if (required.checked) r.required = true;
      return r;
    }

    const apply = (body, done) => applyEdit(work, body, done, problems);

    async function pick() {
      const chosen = $("preview-input") ? $("preview-input").value : "";
      try {
        const found = await api("POST", `/mappings/${encodeURIComponent(work.flow)}/paths`, { text: work.text, call: call.call, ...(chosen ? { event_id: Number(chosen) } : {}) });
        const where = found.input.kind === "event" ? `transaction ${found.input.event_id} (${found.input.business_key || found.input.event_type})` : `the sample ${found.input.event_type || ""}`;
        fill(paths,
          h("li", { class: "muted" }, `Paths of ${where}: pick one`),
          found.paths.map((p) => h("li", {}, h("button", { type: "button", class: "pick path-option", "data-path": p.path, onclick: () => { from.value = p.path; if (source.value !== "lookup") source.value = "from"; fill(paths); } }, p.path), " ", h("span", { class: "muted" }, p.example))),
        );
      } catch (err) {
        showProblems(problems, "No paths: ", err);
      }
    }

    const m3Line = m3 ? h("p", { id: "rule-m3", class: "muted" }, `${m3.name}: ${m3.description} · ${m3.type}${m3.length || ""}${m3.mandatory ? " · mandatory in M3" : ""}`) : null;
    if (complex) {
      return h("section", { class: "panel actions", id: "rule-form" },
        h("h2", {}, `${call.call} · ${name}`), m3Line,
        h("p", {}, "This rule uses ", h("code", {}, spec.concat ? "concat" : "when"), ": edit it in the YAML below."),
        h("div", { class: "buttons" }, h("button", { type: "button", class: "secondary", onclick: () => work.closeForm() }, "Close")));
    }
    return h(
      "section",
      { class: "panel actions", id: "rule-form", "data-call": call.call, "data-field": name },
      h("h2", {}, field ? `Edit ${call.call} · ${name}` : `Add ${name} to ${call.call}`),
      m3Line,
      h("div", { class: "rule-grid" },
        h("label", {}, "Source ", source),
        h("label", { class: "grow" }, "Path ", from, h("button", { id: "rule-pick", type: "button", class: "secondary small", onclick: pick }, "Pick from payload")),
        h("label", {}, "Value ", value),
        h("label", {}, "Var ", variable),
        h("label", {}, "Lookup ", lookup),
        h("label", {}, "Default ", defaultKind, defaultValue, defaultVar),
        h("label", {}, "Convert ", type),
        h("label", {}, upper, " upper case"),
        h("label", {}, lower, " lower case"),
        h("label", {}, truncate, " truncate to M3's length"),
        h("label", {}, "Max length ", maxLength),
        h("label", {}, required, " required"),
      ),
      paths,
      problems,
      editDiff,
      h("div", { class: "buttons" },
        h("button", { id: "rule-apply", type: "button", onclick: () => apply({ call: call.call, field: name, rule: rule() }, `${call.call}.${name} ${field ? "changed" : "added"}`) }, field ? "Apply" : "Add field"),
        field ? h("button", { id: "rule-remove", type: "button", class: "secondary", onclick: () => apply({ call: call.call, field: name, remove: true }, `${call.call}.${name} removed`) }, "Remove field") : null,
        h("button", { id: "rule-cancel", type: "button", class: "secondary", onclick: () => work.closeForm() }, "Cancel"),
      ),
    );
  }

  // Live preview: the calls the working copy and the live version make for a recorded
  // transaction of the flow's trigger (or the shipped sample, or a pasted payload), side by
  // side, with what differs marked and M3's metadata errors inline. Nothing is sent.
  function previewPanel(work) {
    const choice = h("select", { id: "preview-input" }, h("option", { value: "" }, "the shipped sample"));
    const pasted = h("textarea", { id: "preview-sample", rows: "4", spellcheck: "false", placeholder: "or paste a payload (a webhook body or its data) to preview instead" });
    const out = h("div", { id: "preview-out" });
    (async () => {
      try {
        const types = work.table ? work.table.trigger : [];
        const found = await api("GET", "/transactions" + query({ limit: 20 }) + types.map((t) => "&event_type=" + encodeURIComponent(t)).join(""));
        for (const tx of found.items) choice.append(h("option", { value: tx.id }, `#${tx.id} ${tx.business_key || tx.event_type} · ${tx.status}`));
      } catch {
        /* the shipped sample and a pasted payload still work */
      }
    })();
    async function run() {
      const body = {};
      if (work.text !== work.liveText) body.text = work.text;
      if (pasted.value.trim()) {
        try {
          body.sample = JSON.parse(pasted.value);
        } catch (err) {
          fill(out, h("p", { class: "form-error", role: "alert" }, "The pasted payload is not JSON: " + err.message));
          return;
        }
      } else if (choice.value) body.event_id = Number(choice.value);
      try {
        fill(out, previewResult(await api("POST", `/mappings/${encodeURIComponent(work.flow)}/preview`, body)));
      } catch (err) {
        const el = h("div", { class: "form-error", role: "alert" });
        showProblems(el, "No preview: ", err);
        fill(out, el);
      }
    }
    return h(
      "section",
      { class: "panel", id: "preview-panel" },
      h("h2", {}, "Preview"),
      h("p", { class: "muted" }, "The exact calls the working copy would make, beside those of the live version. Nothing is sent."),
      h("div", { class: "toolbar" }, h("label", {}, "Payload ", choice), h("button", { id: "preview-run", type: "button", onclick: run }, "Preview")),
      pasted,
      h("pre", { id: "working-diff", class: "json diff", hidden: true }),
      out,
    );
  }

  function previewResult(result) {
    const input = result.input;
    const what = input.kind === "event" ? h("span", {}, "transaction ", txLink(input.event_id), ` (${input.business_key || input.event_type}, ${input.status})`) : input.kind === "sample" ? "the pasted payload" : `the shipped sample of ${input.event_type}`;
    const draft = result.draft ? result.draft.calls : null;
    const live = result.live ? result.live.calls : [];
    const sides = draft ? [["live", live], ["working copy", draft]] : [["live", live]];
    const keyed = (calls) => {
      const seen = {};
      return calls.map((c) => {
        seen[c.call] = (seen[c.call] || 0) + 1;
        return [`${c.call}#${seen[c.call]}`, c];
      });
    };
    const order = [];
    const bySide = sides.map(([, calls]) => Object.fromEntries(keyed(calls).map(([k, c]) => { if (!order.includes(k)) order.push(k); return [k, c]; })));
    const cell = (c, field) => {
      if (!c) return h("td", { class: "muted" }, "not made");
      if (c.note) return h("td", { class: "muted" }, c.note);
      const v = c.record[field];
      const problem = (c.problems || []).find((p) => p.field === field);
      return h("td", { class: (c.changed || []).includes(field) ? "changed" : null },
        v === undefined ? h("span", { class: "muted" }, "—") : h("code", {}, typeof v === "object" ? JSON.stringify(v) : String(v)),
        problem ? h("div", { class: "problem" }, problem.problem) : null);
    };
    return h("div", {},
      h("p", { id: "preview-summary" }, "For ", what, draft ? `: ${result.differing_calls} call${result.differing_calls === 1 ? "" : "s"} differ from the live version.` : "."),
      order.map((k) => {
        const calls = bySide.map((side) => side[k]);
        const any = calls.find(Boolean);
        const fields = [...new Set(calls.flatMap((c) => (c ? Object.keys(c.record) : [])).concat(calls.flatMap((c) => (c ? (c.problems || []).map((p) => p.field) : []))))];
        const [name, index] = k.split("#");
        return h("div", { class: "preview-call", "data-call": name, "data-index": index },
          h("h3", {}, h("strong", {}, name), " ", h("code", {}, any.operation), " ", h("span", { class: "target" }, any.target), any.metadata && any.metadata !== "tenant" ? h("span", { class: "muted" }, " · " + any.metadata) : null),
          h("table", { class: "list preview-table" },
            h("thead", {}, h("tr", {}, h("th", {}, "field"), sides.map(([label]) => h("th", {}, label)))),
            h("tbody", {}, (fields.length ? fields : [""]).map((f) => h("tr", { "data-field": f }, h("td", {}, h("code", {}, f)), calls.map((c) => cell(c, f))))),
          ),
        );
      }),
    );
  }

  // After a publish (and whenever there are some): the flow's dead letters the live version
  // could fix, counted first (a dry run), replayed on request by an ops:replay token.
  function replayOfferPanel(flow, offer) {
    if (!offer.fixable.length) return null;
    const canReplay = Boolean(me && (me.scope === "ops:replay" || me.scope === "ops:admin"));
    const n = offer.fixable.length;
    async function replayThem() {
      clearMessages();
      try {
        const done = await api("POST", `/mappings/${encodeURIComponent(flow)}/replay-candidates`, { event_ids: offer.fixable.map((c) => c.event_id), reason: `studio: replay with ${flow} version ${offer.live_version}` });
        showNotice(`${done.replayed.length} dead letter${done.replayed.length === 1 ? "" : "s"} replayed with version ${offer.live_version}.` + (done.not_candidates.length ? ` ${done.not_candidates.length} no longer needed it.` : ""));
        await route();
      } catch (err) {
        showError(err, "Replay failed");
      }
    }
    return h(
      "section",
      { class: "panel", id: "replay-offer" },
      h("h2", {}, "Dead letters version " + offer.live_version + " could fix"),
      h("p", { id: "replay-offer-count" }, `${n} dead letter${n === 1 ? "" : "s"} of ${flow} failed under an earlier version, and version ${offer.live_version} sends other calls for ${n === 1 ? "it" : "them"} (dry run).`,
        offer.unchanged ? ` ${offer.unchanged} more would be sent the same calls again.` : "",
        offer.same_version ? ` ${offer.same_version} failed under version ${offer.live_version} already.` : ""),
      h("ul", {}, offer.fixable.slice(0, 20).map((c) => h("li", {}, txLink(c.event_id), " ", c.business_key || c.event_type, c.failed_with ? h("span", { class: "muted" }, ` · failed with version ${c.failed_with}`) : null, c.error ? h("span", { class: "muted" }, " · " + c.error.slice(0, 120)) : null))),
      canReplay ? h("div", { class: "buttons" }, h("button", { id: "replay-fixable", type: "button", onclick: replayThem }, `Replay ${n} with version ${offer.live_version}`)) : h("p", { class: "muted" }, "An ops:replay token can replay them."),
    );
  }

  // What the tenant's metadata says of a field (MRS001MI LstFields): its description, type and
  // length, and whether M3 requires it; a field the transaction has no input for is flagged.
  function m3Cell(call, f) {
    if (f.m3) {
      const m = f.m3;
      const shape = `${m.type}${m.length ? m.length : ""}${m.mandatory ? " · mandatory" : ""}`;
      return h("td", { class: "m3-cell", title: `${m.name}: ${m.description}` }, m.description, " ", h("span", { class: "muted" }, shape));
    }
    if (call.metadata === "tenant") return h("td", { class: "m3-cell warn" }, "not an input of this transaction");
    return h("td", { class: "m3-cell muted" }, "");
  }

  async function mappingAction(flow, path, body, done, where) {
    clearMessages();
    try {
      const result = await api("POST", `/mappings/${encodeURIComponent(flow)}${path}`, body);
      showNotice(done(result));
      await route();
      return result;
    } catch (err) {
      showError(err, where);
      return null;
    }
  }

  function historyPanel(flow, items) {
    const admin = isAdmin();
    const comment = admin ? h("input", { id: "version-comment", type: "text", placeholder: "why (kept with the version and in the audit log)", spellcheck: "false" }) : null;
    const needComment = () => {
      const why = comment.value.trim();
      if (!why) {
        showError(new ApiError(0, "comment_required", "say why in the comment field: it is kept with the version and in the audit log"), "Not sent");
        comment.focus();
      }
      return why;
    };
    const publish = (v) => async () => {
      const why = needComment();
      if (why) await mappingAction(flow, `/versions/${v.version}/publish`, { comment: why }, (r) => `Version ${r.version} of ${flow} is live.`, "Publish failed");
    };
    const rollback = (v) => async () => {
      const why = needComment();
      if (why) await mappingAction(flow, `/versions/${v.version}/rollback`, { comment: why }, (r) => `Version ${r.version} (a copy of version ${v.version}) of ${flow} is live.`, "Rollback failed");
    };
    const actions = (v) => {
      if (!admin) return null;
      if (v.state === "draft") return h("button", { type: "button", class: "small publish", onclick: publish(v) }, "Publish");
      if (v.state === "superseded") return h("button", { type: "button", class: "secondary small rollback", onclick: rollback(v) }, "Roll back to this");
      return null;
    };
    return h(
      "section",
      { class: "panel", id: "history" },
      h("h2", {}, "History"),
      admin ? h("label", { class: "grow comment" }, "Comment for publish or rollback ", comment) : null,
      h(
        "table",
        { class: "list", id: "history-table" },
        h("thead", {}, h("tr", {}, ["version", "state", "source", "author", "comment", "created", "published", ""].map((t) => h("th", {}, t)))),
        h(
          "tbody",
          {},
          items.map((v) =>
            h(
              "tr",
              { "data-version": v.version, "data-state": v.state },
              h("td", { class: "num" }, String(v.version), v.based_on ? h("span", { class: "muted" }, ` (copy of ${v.based_on})`) : null),
              h("td", {}, h("span", { class: "badge " + (v.state === "live" ? "status-done" : v.state === "draft" ? "status-pending" : "") }, v.state)),
              h("td", {}, v.source),
              h("td", {}, v.author),
              h("td", {}, v.comment ?? ""),
              h("td", {}, time(v.created_at)),
              h("td", {}, time(v.published_at)),
              h("td", {}, actions(v)),
            ),
          ),
        ),
      ),
    );
  }

  function diffPanel(flow, items) {
    const numbers = items.map((v) => v.version);
    const select = (id, chosen) => {
      const el = h("select", { id }, numbers.map((n) => h("option", { value: n }, `version ${n}`)));
      el.value = String(chosen);
      return el;
    };
    const from = select("diff-from", numbers.length > 1 ? numbers[1] : numbers[0]);
    const to = select("diff-to", numbers[0]);
    const out = h("pre", { id: "diff", class: "json diff", hidden: true });
    async function show() {
      try {
        const result = await api("GET", `/mappings/${encodeURIComponent(flow)}/diff` + query({ from: from.value, to: to.value }));
        out.hidden = false;
        if (!result.diff) {
          fill(out, h("span", { class: "muted" }, `Versions ${result.from_version} and ${result.to_version} have the same text.`));
          return;
        }
        fill(out, result.diff.split("\n").map((line) => h("span", { class: line.startsWith("+") && !line.startsWith("+++") ? "add" : line.startsWith("-") && !line.startsWith("---") ? "del" : line.startsWith("@@") ? "hunk" : null }, line + "\n")));
      } catch (err) {
        showError(err, "Diff failed");
      }
    }
    return h(
      "section",
      { class: "panel", id: "diff-panel" },
      h("h2", {}, "Diff"),
      h("div", { class: "toolbar" }, h("label", {}, "from ", from), h("label", {}, "to ", to), h("button", { id: "diff-show", type: "button", class: "secondary", onclick: show }, "Show diff")),
      out,
    );
  }

  function editorPanel(work) {
    const flow = work.flow;
    const editor = h("textarea", { id: "yaml-editor", rows: "24", spellcheck: "false" });
    editor.value = work.text;
    editor.addEventListener("change", () => setWorkingText(work, editor.value));
    const comment = h("input", { id: "draft-comment", type: "text", placeholder: "what changes (optional)", spellcheck: "false" });
    const problems = h("div", { id: "draft-error", class: "form-error", role: "alert", hidden: true });
    const save = h("button", { id: "save-draft", type: "button" }, "Save draft");
    save.addEventListener("click", async () => {
      problems.hidden = true;
      clearMessages();
      save.disabled = true;
      try {
        const draft = await api("POST", `/mappings/${encodeURIComponent(flow)}/drafts`, { text: editor.value, comment: comment.value.trim() || null });
        showNotice(`Draft version ${draft.version} of ${flow} saved: publish it from the history.`);
        await route();
      } catch (err) {
        save.disabled = false;
        showProblems(problems, "The draft was not saved: ", err);
      }
    });
    return h(
      "section",
      { class: "panel actions", id: "editor" },
      h("h2", {}, "YAML of the working copy"),
      h("p", { class: "muted" }, `Starts from live version ${work.liveVersion}; form edits above change it line by line. A draft runs nowhere until it is published; it is checked as a file is (line and field named).`),
      h("label", { class: "grow" }, "Comment ", comment),
      editor,
      problems,
      h("div", { class: "buttons" }, save),
    );
  }

  // ---------------------------------------------------------------- start

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", login);
    $("logout").addEventListener("click", logout);
    $("search-form").addEventListener("submit", search);
    $("more").addEventListener("click", loadPage);
    $("refresh").addEventListener("click", () => loadOverview(renderId, Number($("hours").value)));
    $("hours").addEventListener("change", () => {
      location.hash = "#/" + query({ hours: $("hours").value });
    });
    $("error-close").addEventListener("click", () => ($("error").hidden = true));
    $("notice-close").addEventListener("click", () => ($("notice").hidden = true));
    window.addEventListener("hashchange", () => {
      $("error").hidden = true;
      route();
    });
    route();
  });
})();
