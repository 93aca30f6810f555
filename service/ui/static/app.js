// The page: its views (Explore, Compare, Profiles, Findings, Targets) share one state, a profile
// type, a label selector and a range among it, and everything a view shows is in the URL, so a
// link can be shared and Back works. The API is called with the token the server asked for.
import { Compare } from "/ui/compare.js";
import { FlameGraph, fmt } from "/ui/flame.js";
import { sandwich } from "/ui/sandwich.js";
import { TimeSeries } from "/ui/timeseries.js";
import { showFindings, showProfiles, showTargets } from "/ui/views.js";

const $ = (id) => document.getElementById(id);
// ``from``/``until``: a range typed or selected on the time series (any time the API reads: unix
// ms, RFC 3339, now-2h); empty: the ``range`` preset.
// ``focus``/``ignore``/``hide``: pprof's filters (regexes); ``sandwich``: the function shown as one.
const DEFAULTS = {
  view: "explore", type: "", selector: "{}", range: "1h", from: "", until: "", layout: "both", search: "", zoom: "",
  focus: "", ignore: "", hide: "", max_nodes: "8192", sandwich: "",
  base_from: "", base_until: "", base_selector: "",
  f_service: "", f_kind: "", f_state: "open", group_by: "",
};
const FINDINGS = ["f_service", "f_kind", "f_state"];
const BASE = ["base_from", "base_until", "base_selector"];
const FILTERS = ["focus", "ignore", "hide"];

function readState() {
  const q = new URLSearchParams(location.search);
  const s = {};
  for (const [k, v] of Object.entries(DEFAULTS)) s[k] = q.get(k) ?? v;
  return s;
}

function writeState(s, replace = false) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(s)) if (v !== DEFAULTS[k]) q.set(k, v);
  const url = `${location.pathname}${q.toString() ? "?" + q : ""}`;
  if (url !== location.pathname + location.search) history[replace ? "replaceState" : "pushState"](null, "", url);
}

// -- the API, with the token the server asks for --------------------------------------------------

function headers() {
  const h = {};
  const token = localStorage.getItem("profstore.token");
  const tenant = localStorage.getItem("profstore.tenant");
  if (token) h.Authorization = `Bearer ${token}`;
  if (tenant) h["X-Scope-OrgID"] = tenant;
  return h;
}

async function api(path, params = {}, method = "GET") {
  const url = `${path}?${new URLSearchParams(params)}`;
  for (;;) {
    const r = await fetch(url, { method, headers: headers() });
    if (r.status === 401 || r.status === 403) {
      await askToken();
      continue;
    }
    const body = await r.json().catch(() => ({ error: r.statusText }));
    if (!r.ok) throw new Error(body.error || body.message || `${r.status}`);
    return body;
  }
}

function askToken() {
  const dialog = $("login");
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        localStorage.setItem("profstore.token", $("token").value);
        localStorage.setItem("profstore.tenant", $("tenant").value);
        resolve();
      },
      { once: true },
    );
    dialog.showModal();
  });
}

function status(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

// -- the view ------------------------------------------------------------------------------------

let state = readState();
let rows = [];
let tree = null;
const callers = new FlameGraph($("callers"), $("sandwich-tip"));
const callees = new FlameGraph($("callees"), $("sandwich-tip"));
const flame = new FlameGraph($("flame"), $("tooltip"), {
  onZoom: (path) => {
    state.zoom = path.join("\u001f");
    $("zoomed").textContent = path.length ? `zoomed: ${path[path.length - 1]}` : "";
    writeState(state);
  },
});

const series = new TimeSeries($("ts"), {
  onSelect: (from, until) => {
    state = { ...state, from: String(from), until: String(until), zoom: "" };
    writeState(state);
    load();
  },
});

/** A time as the API reads it (parse_time), in unix seconds, for the axis; NaN if unreadable. */
function seconds(text, now) {
  const t = text.trim();
  const rel = t.match(/^now(?:([+-])((?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+))?$/);
  if (rel) {
    if (!rel[1]) return now;
    const units = { ms: 1e-3, s: 1, m: 60, h: 3600, d: 86400, w: 604800 };
    let span = 0;
    for (const [, v, u] of rel[2].matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/g)) span += Number(v) * units[u];
    return rel[1] === "-" ? now - span : now + span;
  }
  if (/^-?\d+(\.\d+)?$/.test(t)) {
    const digits = t.split(".")[0].replace("-", "").length;
    return Number(t) / (digits <= 11 ? 1 : digits <= 14 ? 1e3 : digits <= 17 ? 1e6 : 1e9);
  }
  return Date.parse(t) / 1000;
}

/** The range asked for: the API's ``from``/``until``, and the same in unix seconds for the axis. */
function window_() {
  const now = Date.now() / 1000;
  if (state.from) {
    const until = state.until || "now";
    return { params: { from: state.from, until }, seconds: [seconds(state.from, now), seconds(until, now)] };
  }
  const from = `now-${state.range}`;
  return { params: { from, until: "now" }, seconds: [seconds(from, now), now] };
}

function query() {
  const sel = state.selector.trim() || "{}";
  return `${state.type}${sel.startsWith("{") ? sel : `{${sel}}`}`;
}

function fill() {
  for (const k of ["type", "selector", "range", "from", "until", "layout", "search", "max_nodes", ...FILTERS, ...BASE, ...FINDINGS]) {
    $(k).value = state[k];
  }
  if (![...$("group_by").options].some((o) => o.value === state.group_by)) {
    $("group_by").append(new Option(state.group_by, state.group_by));
  }
  $("group_by").value = state.group_by;
  $("range").value = state.from ? "custom" : state.range;
  $("panes").className = state.layout;
}

const VIEWS = ["explore", "compare", "profiles", "findings", "targets"];
const TARGETS_REFRESH_MS = 5000;
let refresh = 0;
let compare = null; // made when first shown: its canvases measure their pane

async function load() {
  fill();
  for (const v of VIEWS) $(`${v}-view`).hidden = v !== state.view;
  $("controls").hidden = state.view === "targets" || state.view === "findings";
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.view === state.view) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  clearTimeout(refresh);
  if (state.view === "targets") {
    try {
      const targets = await showTargets(api);
      status(`${targets.length} targets, ${targets.filter((t) => t.health === "down").length} down`);
    } catch (e) {
      status(e.message, true);
    }
    refresh = setTimeout(() => state.view === "targets" && load(), TARGETS_REFRESH_MS); // health moves on its own
    return;
  }
  if (state.view === "findings") {
    await findings();
    return;
  }
  if (!state.type) return;
  if (state.view === "compare") {
    await showCompare();
    return;
  }
  if (state.view === "profiles") {
    status("loading…");
    try {
      const n = await showProfiles(api, { query: query(), ...window_().params }, state.type.split(":")[2] || "", openProfile);
      status(`${n} profiles`);
    } catch (e) {
      status(e.message, true);
    }
    return;
  }
  exportLinks();
  status("loading…");
  const win = window_();
  const params = { query: query(), ...win.params };
  const filters = filterParams();
  try {
    const [answer, top, ts] = await Promise.all([
      api("/api/v1/flamegraph", { ...params, ...filters, max_nodes: state.max_nodes }),
      api("/api/v1/top", { ...params, ...filters, limit: 500 }),
      api("/api/v1/timeseries", state.group_by ? { ...params, group_by: state.group_by } : params),
    ]);
    const unit = state.type.split(":")[2] || "";
    flame.unit = unit;
    series.setData(ts.series, ...win.seconds, unit);
    rows = top.rows;
    tree = answer.tree || { name: "total", self: 0, total: 0, children: [] };
    flame.setData(tree, state.zoom ? state.zoom.split("\u001f") : []);
    flame.setSearch(state.search);
    $("zoomed").textContent = state.zoom ? `zoomed: ${state.zoom.split("\u001f").pop()}` : "";
    table();
    showSandwich();
    status(answer.total ? `${fmt(answer.total, unit)} in total` : "no profiles in this range");
  } catch (e) {
    status(e.message, true);
  }
}

function table() {
  const body = $("top").tBodies[0];
  const search = state.search.trim().toLowerCase();
  body.replaceChildren(
    ...rows
      .filter((r) => !search || r.name.toLowerCase().includes(search))
      .map((r) => {
        const tr = document.createElement("tr");
        if (search) tr.className = "match";
        tr.tabIndex = 0;
        tr.title = `sandwich of ${r.name}`;
        const open = () => {
          state.sandwich = r.name;
          writeState(state);
          showSandwich();
        };
        tr.addEventListener("click", open);
        tr.addEventListener("keydown", (e) => e.key === "Enter" && open());
        for (const v of [r.name, fmt(r.flat, flame.unit), r.flat_percent.toFixed(2), fmt(r.cum, flame.unit), r.cum_percent.toFixed(2)]) {
          const td = document.createElement("td");
          td.textContent = v;
          tr.append(td);
        }
        return tr;
      }),
  );
}

/** The base window: as asked, else the window of the same length just before the current one. */
function baseWindow() {
  if (state.base_from) return { from: state.base_from, until: state.base_until || "now" };
  const [from, until] = window_().seconds;
  return { from: String(Math.floor((2 * from - until) * 1000)), until: String(Math.floor(from * 1000)) };
}

function baseQuery() {
  const sel = state.base_selector.trim();
  return sel ? `${state.type}${sel.startsWith("{") ? sel : `{${sel}}`}` : query();
}

function filterParams() {
  return Object.fromEntries(FILTERS.filter((k) => state[k]).map((k) => [k, state[k]]));
}

async function showCompare() {
  compare ??= new Compare();
  status("loading…");
  const unit = state.type.split(":")[2] || "";
  const base = baseWindow();
  try {
    const d = await compare.show(
      api, { query: query(), ...window_().params }, { query: baseQuery(), ...base }, filterParams(), unit, state.search,
    );
    status(`base ${fmt(d.base_total, unit)}, current ${fmt(d.current_total, unit)}`);
  } catch (e) {
    status(e.message, true);
  }
}

async function downloadSide(side) {
  const base = baseWindow();
  const current = { query: query(), ...window_().params };
  const params =
    side === "base" ? { query: baseQuery(), ...base }
    : side === "current" ? current
    : { ...current, base_from: base.from, base_until: base.until, ...(baseQuery() !== query() ? { base_query: baseQuery() } : {}) };
  await download(`${location.origin}/api/v1/export?${new URLSearchParams(params)}`, `${side}.pb.gz`);
}

async function findings() {
  try {
    const filters = { service: state.f_service, kind: state.f_kind, state: state.f_state };
    const list = await showFindings(api, filters, openFinding, async (f) => {
      await api(`/api/v1/regressions/${f.id}/ack`, {}, "POST");
      await findings();
    });
    status(`${list.length} findings`);
  } catch (e) {
    status(e.message, true);
  }
}

/** A finding as a diff: its baseline against the time since the change, its function searched for. */
function openFinding(f) {
  const link = new URLSearchParams(f.links.diff.split("?")[1]);
  const q = link.get("query");
  const brace = q.indexOf("{");
  state = {
    ...state, view: "compare", type: q.slice(0, brace), selector: q.slice(brace), range: state.range,
    from: link.get("from"), until: link.get("until"), base_from: link.get("base_from"),
    base_until: link.get("base_until"), base_selector: "", search: f.function, zoom: "", sandwich: "",
  };
  writeState(state);
  load();
}

/** One stored profile in Explore: its series' labels, its own instant (ms around its ns time). */
function openProfile(p) {
  const labels = Object.entries(p.labels).map(([k, v]) => `${k}="${v.replace(/["\\]/g, "\\$&")}"`);
  state = {
    ...state, view: "explore", selector: `{${labels.join(",")}}`, zoom: "", sandwich: "",
    from: String(Math.floor(p.ts / 1e6)), until: String(Math.ceil(p.ts / 1e6)),
  };
  writeState(state);
  load();
}

/** The export of what Explore shows, and the command lines that open it in ``go tool pprof``. */
function exportLinks() {
  const q = new URLSearchParams({ query: query(), ...window_().params });
  const url = `${location.origin}/api/v1/export?${q}`;
  $("export-link").href = url;
  const token = localStorage.getItem("profstore.token");
  $("pprof-command").textContent = token
    ? `curl -sf -H "Authorization: Bearer $PROFSTORE_TOKEN" -o profile.pb.gz '${url}'\ngo tool pprof -http=: profile.pb.gz`
    : `go tool pprof -http=: '${url}'`;
}

async function download(url = $("export-link").href, name = "profile.pb.gz") {
  const r = await fetch(url, { headers: headers() });
  if (!r.ok) {
    status(`export: ${(await r.json().catch(() => ({}))).error || r.status}`, true);
    return;
  }
  const a = document.createElement("a");
  a.href = URL.createObjectURL(await r.blob());
  a.download = name;
  a.click();
  URL.revokeObjectURL(a.href);
}

function showSandwich() {
  const pane = $("sandwich-pane");
  const both = state.sandwich && tree ? sandwich(tree, state.sandwich) : null;
  pane.hidden = !both;
  if (!both) return;
  $("sandwich-name").textContent = state.sandwich;
  for (const g of [callers, callees]) g.unit = flame.unit;
  callers.setData(both.callers);
  callees.setData(both.callees);
}

async function types() {
  const list = await api("/api/v1/profile-types");
  $("type").replaceChildren(
    ...list.map((t) => {
      const o = document.createElement("option");
      o.value = t.id;
      o.textContent = `${t.name} ${t.sample_type} (${t.sample_unit})`;
      return o;
    }),
  );
  const names = await api("/api/v1/labels").catch(() => []);
  $("group_by").replaceChildren(new Option("nothing", ""), ...names.filter((n) => !n.startsWith("__")).map((n) => new Option(n, n)));
  if (!state.type && list.length) {
    state.type = (list.find((t) => t.name === "process_cpu") || list[0]).id;
    writeState(state, true);
  }
}

// Suggestions for the selector: label names, then the values of the name being typed.
async function suggest() {
  const text = $("selector").value;
  const m = text.match(/([A-Za-z_][A-Za-z0-9_]*)\s*=~?\s*"?([^"]*)$/);
  let options = [];
  try {
    if (m) {
      const values = await api(`/api/v1/labels/${encodeURIComponent(m[1])}/values`, { query: state.type ? `${state.type}{}` : "" });
      const head = text.slice(0, text.length - m[0].length);
      options = values.map((v) => `${head}${m[1]}="${v}"}`.replace(/^(?!\{)/, "{"));
    } else {
      const names = await api("/api/v1/labels");
      const head = text.replace(/}\s*$/, "").replace(/^\{?/, "{");
      const sep = head.length > 1 && !head.endsWith(",") ? "," : "";
      options = names.filter((n) => !n.startsWith("__")).map((n) => `${head}${sep}${n}="`);
    }
  } catch {
    return; // suggestions are a help, not an answer
  }
  $("suggestions").replaceChildren(
    ...options.slice(0, 200).map((v) => {
      const o = document.createElement("option");
      o.value = v;
      return o;
    }),
  );
}

$("controls").addEventListener("submit", (e) => {
  e.preventDefault();
  const range = $("range").value;
  // Typed times win; a preset chosen instead of "from and until" clears them.
  const typed = $("from").value.trim() !== "" && ($("from").value !== state.from || $("until").value !== state.until);
  const custom = typed || range === "custom";
  state = {
    ...state, type: $("type").value, selector: $("selector").value, layout: $("layout").value, zoom: "",
    range: range === "custom" ? state.range : range,
    from: custom ? $("from").value.trim() : "", until: custom ? $("until").value.trim() : "",
  };
  writeState(state);
  load();
});
$("layout").addEventListener("change", () => {
  state.layout = $("layout").value;
  $("panes").className = state.layout;
  writeState(state);
  flame.draw();
});
$("search").addEventListener("input", () => {
  state.search = $("search").value;
  writeState(state, true);
  flame.setSearch(state.search);
  table();
});
$("reset").addEventListener("click", () => flame.zoom(null));
for (const k of FILTERS) {
  $(k).addEventListener("change", () => {
    state[k] = $(k).value.trim();
    writeState(state);
    load();
  });
}
$("max_nodes").addEventListener("change", () => {
  state.max_nodes = $("max_nodes").value;
  writeState(state);
  load();
});
$("download").addEventListener("click", () => download());
$("group_by").addEventListener("change", () => {
  state.group_by = $("group_by").value;
  writeState(state);
  load();
});
for (const b of document.querySelectorAll("[data-export]")) b.addEventListener("click", () => downloadSide(b.dataset.export));
$("findings-form").addEventListener("submit", (e) => {
  e.preventDefault();
  for (const k of FINDINGS) state[k] = $(k).value.trim();
  writeState(state);
  load();
});
$("base-form").addEventListener("submit", (e) => {
  e.preventDefault();
  for (const k of BASE) state[k] = $(k).value.trim();
  writeState(state);
  load();
});
for (const a of document.querySelectorAll("nav a")) {
  a.addEventListener("click", (e) => {
    e.preventDefault(); // the view changes, the query stays
    state = { ...state, view: a.dataset.view };
    writeState(state);
    load();
  });
}
$("sandwich-close").addEventListener("click", () => {
  state.sandwich = "";
  writeState(state);
  showSandwich();
});
$("selector").addEventListener("focus", suggest);
$("selector").addEventListener("input", suggest);
window.addEventListener("popstate", () => {
  state = readState();
  load();
});

(async () => {
  try {
    await types();
  } catch (e) {
    status(e.message, true);
    return;
  }
  await load();
})();
