// The browser side of `digital-experiments ui`: pages drawn from the JSON API under /api/.
"use strict";

const main = document.getElementById("main");
const crumbs = document.getElementById("crumbs");
const live = document.getElementById("live");
const PAGE = 100; // rows per page of the runs table
const DEFAULT_SORT = "-id"; // newest first: a live sweep's runs land on page one
const DEFAULT_CURVES = 5; // runs whose curves show when none is ticked
const PARALLEL = 2000; // lines the parallel coordinates draw at most (the scatter takes every point sent)
const LIVE_GAP = 2000; // ms between two redraws of the plots that live updates ask for
const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"];
let source = null; // the EventSource of the page being shown
let page = 0; // bumped each time a page is shown: work for an older one stops

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fill(node, ...children) {
  node.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined));
}

async function api(path) {
  const response = await fetch(path);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

const enc = encodeURIComponent;
const experimentPath = (name) => `/api/experiments/${enc(name)}`;
const runLink = (name, id) => `#/e/${enc(name)}/run/${id}`;

function trimZeros(s) {
  return s.includes(".") ? s.replace(/(\.\d*?)0+(?=e|$)/, "$1").replace(/\.(?=e|$)/, "") : s;
}

function number(value) {
  if (Number.isInteger(value)) return String(value);
  const size = Math.abs(value);
  if (size >= 1e5 || (size > 0 && size < 1e-3)) return trimZeros(value.toExponential(2)).replace("e+", "e");
  return trimZeros(value.toPrecision(4));
}

function text(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") return number(value);
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function seconds(value) {
  if (typeof value !== "number") return "–";
  if (value < 1) return (value * 1000).toPrecision(3) + " ms";
  if (value < 60) return value.toPrecision(3) + " s";
  return clock(value);
}

function clock(value) { // whole seconds, as a running run's elapsed time ticks
  if (value < 60) return `${Math.floor(value)} s`;
  const minutes = Math.floor(value / 60);
  if (minutes < 60) return `${minutes}m${String(Math.floor(value % 60)).padStart(2, "0")}s`;
  return `${Math.floor(minutes / 60)}h${String(minutes % 60).padStart(2, "0")}m`;
}

function status(name, title) {
  return el("span", { class: `status status-${name}`, title: title || null, "data-status": name }, name);
}

function flatten(value, prefix = "", into = []) {
  if (value !== null && typeof value === "object" && !Array.isArray(value) && Object.keys(value).length) {
    for (const [key, inner] of Object.entries(value)) flatten(inner, prefix ? `${prefix}.${key}` : key, into);
  } else into.push([prefix, value]);
  return into;
}

function fieldTable(id, value, name) {
  const pairs = value !== null && typeof value === "object" && !Array.isArray(value) ? flatten(value) : [[name, value]];
  return el("table", { id, class: "fields" }, el("tbody", {}, pairs.map(([key, inner]) =>
    el("tr", { "data-field": key }, el("th", {}, key), el("td", { class: typeof inner === "number" ? "num" : null }, text(inner))))));
}

// ---------------------------------------------------------------- plotly, when a page plots

let plotlyLoaded = null;

function plotly() { // 4.8 MB: fetched once, the first time a page draws, never blocking a paint
  if (!plotlyLoaded) {
    plotlyLoaded = new Promise((resolve, reject) => {
      const script = el("script", { src: "/static/plotly.min.js", async: true });
      script.onload = () => resolve(window.Plotly);
      script.onerror = () => { plotlyLoaded = null; reject(new Error("plotly.js could not be loaded")); };
      document.head.append(script);
    });
  }
  return plotlyLoaded;
}

// the next task after the browser has painted: each plot is drawn in its own task
const painted = () => new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));

async function curveCharts(container, name, ids, logY, token) {
  // one chart per metric, the runs named by what differs between them (lr=0.2)
  const data = await api(`${experimentPath(name)}/curves?ids=${ids.join(",")}`);
  const Plotly = await plotly();
  if (token !== page) return null;
  const metrics = Object.keys(data.metrics).sort();
  const colour = Object.fromEntries(data.ids.map((id, i) => [id, PALETTE[i % PALETTE.length]]));
  const kept = new Set(metrics);
  for (const chart of [...container.querySelectorAll(".curve")]) if (!kept.has(chart.dataset.metric)) chart.remove();
  for (const metric of metrics) {
    let chart = [...container.querySelectorAll(".curve")].find((c) => c.dataset.metric === metric);
    if (!chart) {
      chart = el("figure", { class: "curve", "data-metric": metric }, el("figcaption", {}, metric), el("div", { class: "chart" }));
      container.append(chart);
    }
    const runs = data.metrics[metric];
    const points = Object.values(runs).reduce((n, c) => n + c.steps.length, 0);
    const traces = data.ids.filter((id) => runs[id]).map((id) => ({
      x: runs[id].steps, y: runs[id].values, name: data.labels[id], mode: "lines", customdata: runs[id].steps.map(() => id),
      type: points > 5000 ? "scattergl" : "scatter", line: { color: colour[id], width: 1.5 },
      hovertemplate: `%{y:.4g} at step %{x}<extra>${data.labels[id].replace(/</g, "&lt;")}</extra>`,
    }));
    const positive = traces.every((t) => t.y.every((v) => v === null || v > 0));
    await Plotly.react(chart.querySelector(".chart"), traces, {
      margin: { t: 8, r: 8, b: 40, l: 56 }, height: 280, showlegend: traces.length > 1,
      legend: { orientation: "h", y: -0.22, font: { size: 11 } },
      xaxis: { title: { text: "step", standoff: 4 }, automargin: true },
      yaxis: { type: logY && positive ? "log" : "linear", automargin: true, exponentformat: "e" },
    }, { responsive: true, displaylogo: false });
    if (token !== page) return null;
    await painted();
  }
  return data;
}

// ---------------------------------------------------------------- live updates

function stream(name, onChange) {
  if (source) source.close();
  source = new EventSource(`${experimentPath(name)}/events`);
  let seen = null;
  source.onopen = () => { live.textContent = "live"; live.classList.add("on"); };
  source.onerror = () => { live.textContent = "reconnecting…"; live.classList.remove("on"); };
  source.onmessage = (event) => {
    const version = JSON.parse(event.data).version;
    if (version !== seen) onChange(version); // the first one too: the runs may have changed since the page's fetch
    seen = version;
  };
}

function stopStream() {
  if (source) source.close();
  source = null;
  live.textContent = "";
  live.classList.remove("on");
}

// a running run's elapsed time goes on ticking between two updates
setInterval(() => {
  const now = performance.now();
  for (const cell of document.querySelectorAll("[data-elapsed]")) {
    const elapsed = Number(cell.dataset.elapsed) + (now - Number(cell.dataset.at)) / 1000;
    cell.querySelector(".elapsed").textContent = clock(elapsed);
  }
}, 1000);

// ---------------------------------------------------------------- experiments

async function showExperiments() {
  stopStream();
  fill(crumbs);
  const data = await api("/api/experiments");
  const rows = data.experiments.map((e) => el("tr", { "data-experiment": e.name },
    el("td", {}, el("a", { href: `#/e/${enc(e.name)}` }, e.name)),
    el("td", { class: "num" }, e.runs),
    el("td", { class: "badges" }, Object.entries(e.statuses).map(([s, n]) => el("span", {}, status(s), " ", n)),
      e.unreadable ? el("span", {}, status("unreadable"), " ", e.unreadable) : null,
      e.refused.length ? el("span", {}, status("refused", e.refused.join("\n"))) : null,
      e.problem ? el("span", {}, status("error", e.problem)) : null),
    el("td", { class: "latest" }, e.latest ? el("a", { href: runLink(e.name, e.latest) }, e.latest) : "–")));
  fill(main,
    el("h1", {}, "Experiments"), el("p", { class: "muted" }, data.root),
    rows.length ? el("table", { id: "experiments" },
      el("thead", {}, el("tr", {}, el("th", {}, "experiment"), el("th", {}, "runs"), el("th", {}, "statuses"), el("th", {}, "latest run"))),
      el("tbody", {}, rows)) : el("p", {}, "No experiments here yet."));
}

// ---------------------------------------------------------------- runs

const view = {};

function viewFromUrl(name, params) {
  const list = (key) => (params.get(key) || "").split(",").filter(Boolean);
  const flag = (key) => (params.has(key) ? params.get(key) === "1" : null); // null: decided by the data
  Object.assign(view, {
    name, where: params.get("where") || "", sort: params.has("sort") ? params.get("sort") : DEFAULT_SORT,
    offset: Math.max(0, (parseInt(params.get("page") || "1", 10) || 1) - 1) * PAGE,
    selected: new Set(list("sel")), hide: new Set(list("hide")), show: new Set(list("show")),
    x: params.get("x") || "", y: params.get("y") || "", colour: params.get("colour") || "",
    logx: flag("logx"), logy: flag("logy"), logcurves: params.get("logcurves") === "1",
    data: null, seq: 0, chooser: null,
  });
}

function saveView() { // the URL keeps the view: a reload shows it again, and it can be shared
  const params = new URLSearchParams();
  if (view.where) params.set("where", view.where);
  if (view.sort !== DEFAULT_SORT) params.set("sort", view.sort);
  if (view.offset) params.set("page", view.offset / PAGE + 1);
  if (view.selected.size) params.set("sel", [...view.selected].join(","));
  if (view.hide.size) params.set("hide", [...view.hide].join(","));
  if (view.show.size) params.set("show", [...view.show].join(","));
  for (const key of ["x", "y", "colour"]) if (view[key]) params.set(key, view[key]);
  for (const key of ["logx", "logy"]) if (view[key] !== null) params.set(key, view[key] ? "1" : "0");
  if (view.logcurves) params.set("logcurves", "1");
  const query = params.toString();
  history.replaceState(null, "", `#/e/${enc(view.name)}${query ? "?" + query : ""}`);
}

function defaultColumns(data) {
  const filled = new Set(data.filled), varying = new Set(data.varying);
  return data.columns.filter((c) => {
    if (c === "id" || c === "status" || c === "duration") return true;
    if (!filled.has(c)) return false;
    const space = c.split(".")[0];
    if (space === "config") return data.total < 2 || varying.has(c); // a setting all runs share says nothing
    return ["result", "metrics", "tags", "notes"].includes(space);
  });
}

function shownColumns(data) {
  const defaults = new Set(defaultColumns(data));
  return data.columns.filter((c) => c === "id" || c === "status" || (defaults.has(c) ? !view.hide.has(c) : view.show.has(c)));
}

function breakable(name) { // a long name may wrap after "_" or ".", so the table fits its window
  return name.split(/(?<=[_.])/).flatMap((part, n) => (n ? [el("wbr"), part] : [part]));
}

function header(column) {
  const dot = column.indexOf(".");
  if (dot < 0) return column;
  return [el("span", { class: "ns" }, column.slice(0, dot)), el("span", { class: "key" }, breakable(column.slice(dot + 1)))];
}

async function showRuns(name, params) {
  stopStream();
  viewFromUrl(name, params);
  const token = page;
  fill(crumbs, " / ", el("a", { href: `#/e/${enc(name)}` }, name));
  const whereBox = el("input", { type: "text", id: "where", placeholder: 'where, e.g. config.lr < 0.01 and status == "completed"', value: view.where });
  const apply = () => { view.where = whereBox.value; view.offset = 0; saveView(); loadRuns(true); };
  whereBox.addEventListener("keydown", (event) => { if (event.key === "Enter") apply(); });
  const compare = () => {
    const why = document.getElementById("compare-why");
    if (view.selected.size < 2) {
      why.textContent = `Tick two runs or more to compare them (${view.selected.size} ticked).`;
      return;
    }
    location.hash = `#/e/${enc(name)}/compare/${[...view.selected].join(",")}`;
  };
  const chooser = el("details", { id: "columns-chooser" }, el("summary", {}, "Columns"), el("div", { class: "menu", id: "columns-menu" }));
  const pickers = el("div", { class: "toolbar", id: "plot-controls" },
    el("label", {}, "x ", el("select", { id: "x", onchange: (e) => { view.x = e.target.value; view.logx = null; saveView(); schedulePlots(true); } })),
    el("label", {}, el("input", { type: "checkbox", id: "logx", onchange: (e) => { view.logx = e.target.checked; saveView(); schedulePlots(true); } }), " log"),
    el("label", {}, "y ", el("select", { id: "y", onchange: (e) => { view.y = e.target.value; view.logy = null; saveView(); schedulePlots(true); } })),
    el("label", {}, el("input", { type: "checkbox", id: "logy", onchange: (e) => { view.logy = e.target.checked; saveView(); schedulePlots(true); } }), " log"),
    el("label", {}, "colour ", el("select", { id: "colour", onchange: (e) => { view.colour = e.target.value; saveView(); schedulePlots(true); } })),
    el("span", { id: "plots-status", class: "muted" }));
  fill(main,
    el("h1", {}, name),
    el("div", { class: "toolbar" }, whereBox, el("button", { id: "apply", onclick: apply }, "Filter"), chooser,
      el("button", { id: "compare", onclick: compare }, "Compare selected"),
      el("button", { id: "clear-selection", onclick: () => { view.selected.clear(); saveView(); renderTable(); schedulePlots(true); } }, "Clear ticks")),
    el("div", { class: "error", id: "where-error" }), el("div", { class: "note", id: "compare-why" }),
    el("div", { class: "error", id: "notice" }), // records not shown, and why
    el("div", { id: "runs-table", class: "table-wrap" }), el("div", { class: "toolbar", id: "pager" }),
    el("h2", {}, "Which setting won?"), pickers,
    el("div", { class: "plots" },
      el("figure", {}, el("figcaption", { id: "scatter-title" }, "scatter"), el("div", { class: "plot", id: "scatter", "data-state": "loading" })),
      el("figure", {}, el("figcaption", {}, "parallel coordinates (coloured by y)"), el("div", { class: "plot", id: "parallel", "data-state": "loading" }))),
    el("h2", {}, "Metric curves"),
    el("div", { class: "toolbar" }, el("span", { id: "curves-note", class: "muted" }),
      el("label", {}, el("input", { type: "checkbox", id: "curves-log", checked: view.logcurves, onchange: (e) => { view.logcurves = e.target.checked; saveView(); schedulePlots(true); } }), " log y")),
    el("div", { class: "curves", id: "curves", "data-state": "loading" }));
  plots.token = token;
  await loadRuns(true);
  if (token === page) stream(name, (version) => { if (!view.data || view.data.version !== version) loadRuns(false); });
}

async function loadRuns(asked) { // asked: by the user (plots redraw now), else by a live update
  const seq = ++view.seq, token = page, name = view.name;
  const params = new URLSearchParams({ where: view.where, sort: view.sort, offset: view.offset, limit: PAGE });
  const message = document.getElementById("where-error");
  let data;
  try {
    data = await api(`${experimentPath(name)}/runs?${params}`);
  } catch (error) {
    if (seq !== view.seq || token !== page) return;
    message.textContent = error.message;
    view.data = null; // the table answered another query: it goes, never left looking like the answer
    fill(document.getElementById("runs-table"), el("p", { class: "muted", id: "no-table" }, "No runs shown: see the message above."));
    fill(document.getElementById("pager"));
    clearPlots("No plots: see the message above.");
    return;
  }
  if (seq !== view.seq || token !== page) return; // an older answer, overtaken
  message.textContent = "";
  const changed = !view.data || view.data.version !== data.version || asked;
  view.data = data;
  fill(document.getElementById("notice"), [...data.refused, data.problem].filter(Boolean).map((m) => el("p", {}, m)));
  renderChooser();
  renderTable();
  fillPickers();
  if (changed) schedulePlots(asked);
}

function sortKey(column) { // the field a column sorts by (the shown duration is a metadata field)
  if (column === "duration") return view.data.sorts.duration || null;
  return column;
}

function renderTable() {
  const data = view.data;
  if (!data) return;
  const name = view.name, columns = shownColumns(data), at = performance.now();
  const current = view.sort.replace(/^-/, "");
  const head = el("tr", {}, el("th", { class: "tick" }, ""), columns.map((column) => {
    const key = sortKey(column);
    const cls = key && key === current ? (view.sort.startsWith("-") ? "sorted-desc" : "sorted-asc") : null;
    return el("th", { class: cls, "data-column": column, title: key ? `${column}: click to sort` : column, onclick: () => {
      if (!key) return;
      view.sort = view.sort === key ? `-${key}` : key;
      view.offset = 0;
      saveView();
      loadRuns(true);
    } }, header(column));
  }));
  const body = data.rows.map((row) => el("tr", { "data-id": row.id, "data-row-status": row.status },
    el("td", { class: "tick" }, el("input", { type: "checkbox", "data-select": row.id, checked: view.selected.has(row.id),
      onchange: (event) => {
        if (event.target.checked) view.selected.add(row.id); else view.selected.delete(row.id);
        document.getElementById("compare-why").textContent = "";
        saveView();
        updateSelection();
        schedulePlots(true);
      } })),
    columns.map((column) => cell(name, row, column, at))));
  const unreadable = data.unreadable.map((u) => el("tr", { "data-id": u.id }, el("td", {}, ""),
    el("td", {}, u.id), el("td", {}, status("unreadable", u.error)), el("td", { colspan: Math.max(1, columns.length - 2), class: "muted" }, u.error)));
  fill(document.getElementById("runs-table"), el("table", { id: "runs" }, el("thead", {}, head), el("tbody", {}, body, unreadable)));
  const last = Math.min(data.offset + data.rows.length, data.matched);
  const move = (offset) => { view.offset = offset; saveView(); loadRuns(true); };
  fill(document.getElementById("pager"),
    el("button", { id: "previous", onclick: () => move(Math.max(0, view.offset - PAGE)), disabled: !data.offset }, "‹ previous"),
    el("span", { id: "counts" }, `runs ${data.matched ? data.offset + 1 : 0}–${last} of ${data.matched}` + (data.matched !== data.total ? ` (${data.total} in all)` : "")),
    el("button", { id: "next", onclick: () => move(view.offset + PAGE), disabled: last >= data.matched }, "next ›"));
  updateSelection();
}

function cell(name, row, column, at) {
  const value = row[column];
  if (column === "id") return el("td", { class: "id" }, el("a", { href: runLink(name, row.id) }, row.id));
  if (column === "status") return el("td", {}, status(value, row.error));
  if (column === "duration") {
    if (row.status === "running" && typeof row.elapsed === "number") {
      return el("td", { class: "num running", "data-elapsed": row.elapsed, "data-at": at, title: "running for" },
        el("span", { class: "elapsed" }, clock(row.elapsed)),
        typeof row.step === "number" ? el("span", { class: "step" }, ` · step ${row.step}`) : null);
    }
    return el("td", { class: "num" }, seconds(row.duration));
  }
  const shown = text(value);
  return el("td", { class: typeof value === "number" ? "num" : null, title: shown.length > 12 ? shown : null }, shown);
}

function updateSelection() {
  const count = view.selected.size;
  const button = document.getElementById("compare");
  if (button) button.textContent = count ? `Compare selected (${count})` : "Compare selected";
}

function renderChooser() {
  const data = view.data, menu = document.getElementById("columns-menu");
  if (!menu) return;
  const defaults = new Set(defaultColumns(data)), shown = new Set(shownColumns(data));
  const known = data.columns.join(",");
  if (view.chooser !== known) { // rebuilt only when the columns change, so an open menu stays put
    view.chooser = known;
    const groups = {};
    for (const column of data.columns) (groups[column.split(".")[0]] ||= []).push(column);
    fill(menu, Object.entries(groups).map(([space, columns]) => el("fieldset", {}, el("legend", {}, space),
      columns.map((column) => el("label", {}, el("input", { type: "checkbox", "data-column-toggle": column,
        disabled: column === "id" || column === "status", onchange: (event) => {
          const on = event.target.checked;
          if (defaults.has(column) || defaultColumns(view.data).includes(column)) { if (on) view.hide.delete(column); else view.hide.add(column); }
          else if (on) view.show.add(column); else view.show.delete(column);
          saveView();
          renderChooser();
          renderTable();
        } }), " ", column.includes(".") ? column.slice(column.indexOf(".") + 1) : column)))),
    el("button", { id: "columns-reset", onclick: () => { view.hide.clear(); view.show.clear(); saveView(); renderChooser(); renderTable(); } }, "Default columns"));
  }
  for (const box of menu.querySelectorAll("[data-column-toggle]")) box.checked = shown.has(box.dataset.columnToggle);
  document.querySelector("#columns-chooser summary").textContent = `Columns (${shown.size} of ${data.columns.length})`;
}

// the columns a plot can use: settings and outcomes that differ between runs
function plottable(data) {
  const filled = new Set(data.filled), varying = new Set(data.varying);
  return data.columns.filter((c) => ["config", "result", "metrics"].includes(c.split(".")[0])
    && filled.has(c) && (varying.has(c) || data.total < 2));
}

function fillPickers() {
  const data = view.data, numeric = new Set(data.numeric);
  const usable = plottable(data);
  const numbers = usable.filter((c) => numeric.has(c));
  if (data.sorts.duration && data.varying.includes(data.sorts.duration)) numbers.push("duration");
  const configs = numbers.filter((c) => c.startsWith("config."));
  const outcomes = [...numbers.filter((c) => c.startsWith("result.") || c === "result"), ...numbers.filter((c) => c.startsWith("metrics."))];
  if (!numbers.includes(view.x)) view.x = configs[0] || numbers[0] || "";
  if (!numbers.includes(view.y)) view.y = outcomes[0] || numbers.find((c) => c !== view.x) || "";
  const colours = usable.filter((c) => c !== view.x && c !== view.y);
  if (view.colour && !colours.includes(view.colour)) view.colour = "";
  for (const [id, options, none] of [["x", numbers, false], ["y", numbers, false], ["colour", colours, true]]) {
    const select = document.getElementById(id);
    const wanted = [...(none ? [""] : []), ...options];
    if ([...select.options].map((o) => o.value).join(",") !== wanted.join(",")) {
      fill(select, wanted.map((c) => el("option", { value: c }, c || "none")));
    }
    select.value = view[id];
  }
}

// ---------------------------------------------------------------- the runs page's plots

const plots = { running: false, again: false, asked: false, last: 0, timer: null, token: -1 };

function schedulePlots(asked) {
  if (plots.running) { plots.again = true; plots.asked ||= asked; return; }
  clearTimeout(plots.timer);
  const wait = asked ? 0 : Math.max(0, plots.last + LIVE_GAP - performance.now());
  plots.timer = setTimeout(runPlots, wait);
}

async function runPlots() {
  const token = plots.token;
  if (token !== page || !view.data) return;
  plots.running = true;
  const state = document.getElementById("plots-status");
  state.classList.add("loading");
  state.textContent = "drawing…";
  try {
    await painted(); // the table shows first
    await drawPlots(token);
  } catch (error) {
    if (token === page) { state.textContent = error.message; state.classList.add("error"); }
  } finally {
    plots.running = false;
    plots.last = performance.now();
    if (token === page) state.classList.remove("loading");
    if (plots.again) { // asked for while drawing: once more, for whichever page is shown now
      const asked = plots.asked;
      plots.again = false;
      plots.asked = false;
      schedulePlots(asked);
    }
  }
}

function clearPlots(why) {
  for (const id of ["scatter", "parallel", "curves"]) {
    const node = document.getElementById(id);
    if (!node) continue;
    if (window.Plotly && id !== "curves") window.Plotly.purge(node);
    fill(node, el("p", { class: "muted empty" }, why));
    node.dataset.state = "empty";
  }
  const state = document.getElementById("plots-status");
  if (state) state.textContent = "";
}

function unempty(node) { // a plot about to be drawn where a note said why there was none
  for (const note of node.querySelectorAll(":scope > .empty")) note.remove();
}

function empty(id, why) {
  const node = document.getElementById(id);
  if (window.Plotly && node.classList.contains("js-plotly-plot")) window.Plotly.purge(node);
  fill(node, el("p", { class: "muted empty" }, why));
  node.dataset.state = "empty";
}

// a column's values as the plots use them: numbers, or a few categories
function describe(values) {
  const present = values.filter((v) => v !== null && v !== undefined);
  if (!present.length) return null;
  if (present.every((v) => typeof v === "number" && Number.isFinite(v))) {
    const low = Math.min(...present), high = Math.max(...present);
    if (low === high) return null; // never changes: says nothing
    return { kind: "number", low, high, log: low > 0 && high / low >= 100, share: present.length / values.length };
  }
  const categories = [...new Set(present.map((v) => (typeof v === "object" ? JSON.stringify(v) : String(v))))].sort();
  if (categories.length < 2 || categories.length > 12) return null;
  return { kind: "category", categories, share: present.length / values.length };
}

const label = (v) => (typeof v === "object" && v !== null ? JSON.stringify(v) : String(v));

async function drawPlots(token) {
  const data = view.data, name = view.name;
  const usable = plottable(data);
  const wanted = [...new Set([...usable, view.x, view.y, view.colour].filter(Boolean))];
  const params = new URLSearchParams({ where: view.where, columns: wanted.join(","), keep: view.y, ids: [...view.selected].join(",") });
  const points = await api(`${experimentPath(name)}/points?${params}`);
  const Plotly = await plotly();
  if (token !== page) return;
  const state = document.getElementById("plots-status");
  const leftOut = Object.entries(points.left_out).map(([s, n]) => `${n} ${s}`).join(", ");
  state.textContent = (points.shown < points.plotted ? `${points.shown} of ${points.plotted} completed runs shown (a sample that keeps the best and worst by y)` : `${points.plotted} completed runs`)
    + (leftOut ? `; left out: ${leftOut}` : "");
  const kinds = Object.fromEntries(wanted.map((c) => [c, describe(points[c])]));
  await drawScatter(Plotly, points, kinds, token);
  if (token !== page) return;
  await painted();
  await drawParallel(points, kinds, usable, token);
  if (token !== page) return;
  await painted();
  await drawCurves(token);
  if (token === page) performance.mark("plots-drawn"); // for benchmarks/ui_bench.py
}

async function drawScatter(Plotly, points, kinds, token) {
  const { x, y, colour } = view;
  const node = document.getElementById("scatter");
  document.getElementById("scatter-title").textContent = x && y ? `${y} against ${x}` : "scatter";
  if (!x || !y || !points.ids.length) { empty("scatter", points.ids.length ? "No two numeric columns that differ between runs." : "No completed run to plot."); return; }
  const autoLog = (column) => Boolean(kinds[column] && kinds[column].kind === "number" && kinds[column].log);
  const positive = (column) => points[column].every((v) => v === null || v > 0);
  const logx = (view.logx === null ? autoLog(x) : view.logx) && positive(x);
  const logy = (view.logy === null ? autoLog(y) : view.logy) && positive(y);
  document.getElementById("logx").checked = logx;
  document.getElementById("logy").checked = logy;
  const type = points.ids.length > 1000 ? "scattergl" : "scatter"; // WebGL for big sweeps
  const base = { mode: "markers", type, hovertemplate: `${x}=%{x:.4g}<br>${y}=%{y:.4g}<br>%{customdata}<extra></extra>` };
  const pick = (indexes, column) => indexes.map((i) => points[column][i]);
  const all = points.ids.map((_, i) => i);
  const traces = [];
  const kind = colour ? kinds[colour] : null;
  if (kind && kind.kind === "category") {
    kind.categories.forEach((category, n) => {
      const rows = all.filter((i) => label(points[colour][i]) === category);
      traces.push({ ...base, x: pick(rows, x), y: pick(rows, y), customdata: pick(rows, "ids"), name: `${colour.replace(/^config\./, "")}=${category}`, marker: { color: PALETTE[n % PALETTE.length], size: 6 } });
    });
  } else {
    const marker = kind ? { color: points[colour], colorscale: "Viridis", showscale: true, size: 6, colorbar: { title: { text: colour, side: "right" }, thickness: 12 } } : { size: 6, color: PALETTE[0] };
    traces.push({ ...base, x: points[x], y: points[y], customdata: points.ids, name: "runs", marker, showlegend: false });
  }
  const ticked = all.filter((i) => view.selected.has(points.ids[i]));
  if (ticked.length) {
    traces.push({ ...base, x: pick(ticked, x), y: pick(ticked, y), customdata: pick(ticked, "ids"), name: "ticked",
      marker: { size: 13, color: "rgba(0,0,0,0)", line: { color: "#d62728", width: 2 } } });
  }
  unempty(node);
  await Plotly.react(node, traces, {
    margin: { t: 10, r: 10, b: 48, l: 60 }, height: 360, hovermode: "closest",
    showlegend: traces.length > 1, legend: { orientation: "h", y: 1.08, font: { size: 11 } },
    xaxis: { title: { text: x }, type: logx ? "log" : "linear", automargin: true, exponentformat: "e" },
    yaxis: { title: { text: y }, type: logy ? "log" : "linear", automargin: true, exponentformat: "e" },
  }, { responsive: true, displaylogo: false });
  if (token !== page) return;
  if (!node.dataset.clicks) { // a point opens its run
    node.dataset.clicks = "1";
    node.on("plotly_click", (event) => { const id = event.points[0] && event.points[0].customdata; if (id) location.hash = runLink(view.name, id); });
  }
  node.dataset.state = "drawn";
}

function shortNames(columns) { // "lr" for config.lr, unless two columns end the same
  const tails = columns.map((c) => (c.includes(".") ? c.slice(c.indexOf(".") + 1) : c));
  return columns.map((c, i) => (tails.filter((t) => t === tails[i]).length > 1 ? c : tails[i]));
}

function thin(indexes, most, values) { // at most `most` of indexes: both ends by values, an even spread of the rest
  if (indexes.length <= most) return indexes;
  const kept = new Set();
  if (values && indexes.every((i) => typeof values[i] === "number")) {
    const ranked = [...indexes].sort((a, b) => values[a] - values[b]), ends = Math.floor(most / 10);
    for (const i of [...ranked.slice(0, ends), ...ranked.slice(-ends)]) kept.add(i);
  }
  const rest = indexes.filter((i) => !kept.has(i)), room = most - kept.size;
  for (let n = 0; n < room; n++) kept.add(rest[Math.floor((n * rest.length) / room)]);
  return indexes.filter((i) => kept.has(i));
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) if (value !== undefined && value !== null) node.setAttribute(key, value);
  for (const child of children.flat()) if (child !== null && child !== undefined) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];

function viridis(t) { // t in [0, 1]
  const at = Math.min(Math.max(t, 0), 1) * (VIRIDIS.length - 1), k = Math.min(Math.floor(at), VIRIDIS.length - 2), f = at - k;
  const [r, g, b] = VIRIDIS[k].map((c, n) => Math.round(c + (VIRIDIS[k + 1][n] - c) * f));
  return `rgb(${r},${g},${b})`;
}

function niceTicks(low, high, count = 5) {
  const raw = (high - low) / count, power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let v = Math.ceil(low / step) * step; v <= high + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

// one axis of the parallel coordinates: where a value sits (0 at the bottom, 1 at the top) and its ticks
function axisOf(column, kind) {
  if (kind.kind === "category") {
    const n = kind.categories.length, index = Object.fromEntries(kind.categories.map((c, k) => [c, k]));
    return { at: (v) => (index[label(v)] + 0.5) / n, ticks: kind.categories.map((c, k) => [(k + 0.5) / n, c]) };
  }
  if (kind.log) {
    const low = Math.log10(kind.low), high = Math.log10(kind.high);
    const ticks = [];
    for (let p = Math.ceil(low - 1e-9); p <= high + 1e-9; p++) ticks.push([(p - low) / (high - low), number(10 ** p)]);
    return { at: (v) => (Math.log10(v) - low) / (high - low), ticks, log: true };
  }
  const { low, high } = kind;
  return { at: (v) => (v - low) / (high - low), ticks: niceTicks(low, high).map((v) => [(v - low) / (high - low), number(v)]) };
}

// parallel coordinates on a canvas, drawn a slice of lines per frame: however many runs, the
// page stays responsive (plotly's WebGL version costs seconds to start without a GPU)
async function drawParallel(points, kinds, usable, token) {
  const order = (c) => (c.startsWith("config.") ? 0 : c.startsWith("metrics.") ? 1 : 2); // outcomes at the right
  let columns = usable.filter((c) => kinds[c] && kinds[c].share >= 0.5).sort((a, b) => order(a) - order(b)).slice(0, 12);
  const complete = points.ids.map((_, i) => i).filter((i) => columns.every((c) => points[c][i] !== null && points[c][i] !== undefined));
  columns = columns.filter((c) => describe(complete.map((i) => points[c][i])));
  if (columns.length < 2 || complete.length < 2) { empty("parallel", "Fewer than two columns that differ between completed runs."); return; }
  const by = view.y && columns.includes(view.y) ? view.y : columns[columns.length - 1];
  const rows = thin(complete, PARALLEL, points[by]);
  const node = document.getElementById("parallel");
  const width = node.clientWidth || 600, height = 360, top = 46, bottom = 24, left = 24, bar = kinds[by].kind === "number" ? 84 : 16;
  const gap = (width - left - bar - 40) / (columns.length - 1);
  const x = (k) => left + k * gap, y = (t) => top + (1 - t) * (height - top - bottom);
  const axes = columns.map((c) => axisOf(c, kinds[c]));
  const names = shortNames(columns);
  const canvas = el("canvas", { width: Math.round(width * devicePixelRatio), height: Math.round(height * devicePixelRatio), style: `width:${width}px;height:${height}px` });
  const picture = svg("svg", { width, height, class: "parallel-axes" });
  const titles = columns.map((column, k) => names[k] + (axes[k].log ? " (log)" : ""));
  columns.forEach((column, k) => {
    picture.append(svg("g", { class: "axis", "data-column": column }, svg("title", {}, column), // the whole name, on hover
      svg("line", { x1: x(k), x2: x(k), y1: y(0), y2: y(1), stroke: "#444" }),
      svg("text", { class: "axis-title", x: x(k), y: 16 + (k % 2) * 14, "text-anchor": "middle" }, titles[k]),
      axes[k].ticks.map(([t, name]) => svg("g", { class: "tick" },
        svg("line", { x1: x(k), x2: x(k) + 3, y1: y(t), y2: y(t), stroke: "#444" }),
        svg("text", { x: x(k) + 5, y: y(t) + 3 }, name.length > 10 ? name.slice(0, 9) + "…" : name)))));
  });
  const byKind = kinds[by], colours = byKind.kind === "number" ? axes[columns.indexOf(by)] : null;
  if (colours) { // the colour bar: the last axis's values
    const gradient = svg("linearGradient", { id: "parallel-scale", x1: 0, x2: 0, y1: 1, y2: 0 },
      VIRIDIS.map((_, n) => svg("stop", { offset: n / (VIRIDIS.length - 1), "stop-color": viridis(n / (VIRIDIS.length - 1)) })));
    picture.append(svg("defs", {}, gradient), svg("rect", { x: width - bar + 14, y: y(1), width: 10, height: y(0) - y(1), fill: "url(#parallel-scale)" }),
      svg("g", {}, svg("title", {}, by), svg("text", { class: "scale-title", x: width - bar + 4, y: y(1) - 8 }, names[columns.indexOf(by)].slice(0, 13))),
      svg("text", { x: width - bar + 28, y: y(1) + 8 }, number(byKind.high)), svg("text", { x: width - bar + 28, y: y(0) }, number(byKind.low)));
  }
  unempty(node);
  fill(node, el("div", { class: "parallel", "data-columns": columns.join(","), "data-lines": rows.length }, canvas, picture));
  // titles alternate between two rows: each keeps within a gap of its axis on either side (and
  // inside the picture), so it never meets the next one on its row; a longer one is cut
  picture.querySelectorAll(".axis-title").forEach((title, k) => {
    const low = Math.max(2, x(k) - gap + 4), high = Math.min(width - bar, x(k) + gap - 4);
    let text = titles[k];
    while (title.getComputedTextLength() > high - low && text.length > 2) {
      text = text.slice(0, -1);
      title.textContent = text + "…";
    }
    const half = title.getComputedTextLength() / 2;
    title.setAttribute("x", Math.min(Math.max(x(k), low + half), high - half));
  });
  node.dataset.state = "drawing";
  const context = canvas.getContext("2d");
  context.scale(devicePixelRatio, devicePixelRatio);
  context.lineWidth = 1;
  context.globalAlpha = rows.length > 300 ? 0.35 : 0.7;
  const stroke = (i) => {
    context.beginPath();
    columns.forEach((column, k) => { const py = y(axes[k].at(points[column][i])); if (k) context.lineTo(x(k), py); else context.moveTo(x(k), py); });
    context.stroke();
  };
  const SLICE = 300; // lines per frame
  for (let start = 0; start < rows.length; start += SLICE) {
    for (const i of rows.slice(start, start + SLICE)) {
      context.strokeStyle = colours ? viridis(colours.at(points[by][i])) : PALETTE[0];
      stroke(i);
    }
    await painted();
    if (token !== page || !node.contains(canvas)) return;
  }
  const ticked = complete.filter((i) => view.selected.has(points.ids[i]));
  context.globalAlpha = 1;
  context.lineWidth = 2.5;
  context.strokeStyle = "#d62728";
  for (const i of ticked) stroke(i); // the ticked runs, on top
  node.querySelector(".parallel").dataset.ticked = ticked.length;
  node.dataset.state = "drawn";
}

async function drawCurves(token) {
  const data = view.data, container = document.getElementById("curves"), note = document.getElementById("curves-note");
  const ticked = [...view.selected];
  const ids = ticked.length ? ticked.slice(0, 20) : data.rows.slice(0, DEFAULT_CURVES).map((r) => r.id);
  if (!ids.length) { fill(container, el("p", { class: "muted empty" }, "No runs.")); container.dataset.state = "empty"; note.textContent = ""; return; }
  if (container.querySelector(".empty")) fill(container);
  const drawn = await curveCharts(container, view.name, ids, view.logcurves, token);
  if (!drawn || token !== page) return;
  const what = ticked.length ? `the ${ids.length} ticked run${ids.length > 1 ? "s" : ""}` + (ticked.length > ids.length ? ` (the first ${ids.length} of ${ticked.length})` : "")
    : `the ${ids.length} run${ids.length > 1 ? "s" : ""} at the top of the table; tick runs to choose others`;
  note.textContent = `Curves of ${what}.`;
  if (!Object.keys(drawn.metrics).length) {
    fill(container, el("p", { class: "muted empty" }, "These runs logged no metrics (log them with digital_experiments.log())."));
    container.dataset.state = "empty";
    return;
  }
  container.dataset.state = "drawn";
}

// ---------------------------------------------------------------- one run

function highlight(code) {
  const escape = (s) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;");
  const pattern = /(#[^\n]*)|("""[\s\S]*?"""|'''[\s\S]*?'''|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')|\b(def|return|if|elif|else|for|while|in|not|and|or|import|from|as|with|try|except|finally|raise|class|lambda|yield|async|await|None|True|False|pass|break|continue)\b|\b(\d+(?:\.\d+)?)\b/g;
  let out = "", last = 0;
  for (const match of code.matchAll(pattern)) {
    out += escape(code.slice(last, match.index));
    const cls = match[1] ? "com" : match[2] ? "str" : match[3] ? "kw" : "numlit";
    out += `<span class="${cls}">${escape(match[0])}</span>`;
    last = match.index + match[0].length;
  }
  return out + escape(code.slice(last));
}

function block(title, value, open = true) {
  if (value === null || value === undefined || (typeof value === "object" && !Object.keys(value).length)) return null;
  const body = el("pre", {}, typeof value === "string" ? value : JSON.stringify(value, null, 2));
  return open ? el("section", {}, el("h2", {}, title), body) : el("details", {}, el("summary", {}, title), body);
}

function tagsAndNotes(tags, notes) {
  const entries = Object.entries(tags || {});
  return el("div", { class: "annotations" },
    el("div", { id: "tags" }, entries.length ? entries.map(([k, v]) => el("span", { class: "tag", "data-tag": k }, v === true ? k : `${k}=${text(v)}`))
      : el("span", { class: "muted" }, "no tags")),
    (notes || []).length ? el("ul", { id: "notes" }, notes.map((n) => el("li", {}, n))) : null);
}

async function showRun(name, id) {
  stopStream();
  const token = page;
  fill(crumbs, " / ", el("a", { href: `#/e/${enc(name)}` }, name), " / ", id);
  const run = await api(`${experimentPath(name)}/runs/${id}`);
  if (run.unreadable) {
    fill(main, el("h1", {}, id), el("p", {}, status("unreadable")), el("pre", { class: "error" }, run.unreadable));
    return;
  }
  const base = `${experimentPath(name)}/runs/${id}/artefacts/`;
  const artefacts = run.artefacts.map((a) => {
    const url = base + a.path.split("/").map(enc).join("/");
    const preview = a.kind === "image" ? el("img", { class: "artefact", src: url, alt: a.path })
      : a.kind === "text" ? el("pre", { "data-src": url }, "…") : null;
    return el("section", { "data-artefact": a.path }, el("h3", {}, el("a", { href: url, download: a.path.split("/").pop() }, a.path), el("span", { class: "muted" }, ` ${a.size} bytes`)), preview);
  });
  const code = run.code ? el("section", {}, el("h2", {}, "Code"), el("pre", { id: "code" })) : null;
  const timing = run.timing && typeof run.timing === "object" ? run.timing : {};
  const duration = typeof timing.duration === "number" ? timing.duration : timing.total && timing.total.duration;
  fill(main,
    el("h1", {}, id),
    el("p", { class: "facts" }, status(run.status), typeof duration === "number" ? ` · ${seconds(duration)}` : null, timing.start ? ` · started ${timing.start}` : null),
    tagsAndNotes(run.tags, run.notes),
    run.error ? el("section", {}, el("h2", {}, "Error"), el("pre", { class: "error", id: "traceback" }, run.error.traceback || `${run.error.type}: ${run.error.message}`)) : null,
    el("div", { class: "columns" },
      el("section", {}, el("h2", {}, "Config"), fieldTable("config", run.config, "config")),
      el("section", {}, el("h2", {}, "Result"), fieldTable("result", run.result, "result"))),
    el("section", { id: "run-metrics" }, el("h2", {}, "Metrics"), el("div", { class: "curves", id: "run-curves" })),
    Object.keys(timing).length ? el("section", {}, el("h2", {}, "Timing"), fieldTable("timing", timing, "timing")) : null,
    code, el("h2", {}, `Artefacts (${artefacts.length})`), artefacts,
    block("Git", run.git, false), block("Packages", run.packages, false), block("System", run.system, false),
    block("Other metadata", run.metadata, false));
  if (code) document.getElementById("code").innerHTML = highlight(run.code);
  for (const pre of main.querySelectorAll("pre[data-src]")) {
    fetch(pre.dataset.src).then((r) => r.text()).then((t) => { pre.textContent = t; });
  }
  const metrics = (await api(`${experimentPath(name)}/runs/${id}/metrics`)).metrics;
  if (token !== page) return;
  if (!Object.keys(metrics).length) { document.getElementById("run-metrics").remove(); return; }
  await curveCharts(document.getElementById("run-curves"), name, [id], false, token);
}

// ---------------------------------------------------------------- compare

async function showCompare(name, ids) {
  stopStream();
  const token = page;
  fill(crumbs, " / ", el("a", { href: `#/e/${enc(name)}` }, name), " / compare");
  const chosen = (ids || "").split(",").filter(Boolean);
  if (chosen.length < 2) {
    fill(main, el("h1", {}, "Compare"), el("p", { class: "error", id: "compare-why" },
      `Compare needs two runs or more, and this link names ${chosen.length}: tick two runs or more on the `,
      el("a", { href: `#/e/${enc(name)}` }, "runs page"), " and press Compare selected."));
    return;
  }
  const data = await api(`${experimentPath(name)}/compare?ids=${chosen.join(",")}`);
  if (token !== page) return;
  fill(main, el("h1", {}, `${data.ids.length} runs compared`),
    data.fields.length ? el("div", { class: "table-wrap" }, el("table", { id: "compare-table" },
      el("thead", {}, el("tr", {}, el("th", {}, "field"), data.ids.map((id) => el("th", {}, el("a", { href: runLink(name, id) }, id))))),
      el("tbody", {}, data.fields.map((field, i) => el("tr", { "data-field": field }, el("td", {}, field), data.ids.map((id) => el("td", {}, text(data.values[id][i]))))))))
      : el("p", {}, "These runs do not differ."),
    el("h2", {}, "Metric curves"), el("div", { class: "curves", id: "compare-curves" }));
  const drawn = await curveCharts(document.getElementById("compare-curves"), name, data.ids, false, token);
  if (drawn && token === page && !Object.keys(drawn.metrics).length) {
    fill(document.getElementById("compare-curves"), el("p", { class: "muted" }, "These runs logged no metrics."));
  }
}

// ---------------------------------------------------------------- routing

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const cut = raw.indexOf("?");
  const path = cut < 0 ? raw : raw.slice(0, cut);
  return { parts: path.split("/").map(decodeURIComponent), params: new URLSearchParams(cut < 0 ? "" : raw.slice(cut + 1)) };
}

async function route() {
  page += 1;
  const { parts, params } = parseHash();
  try {
    if (parts[0] === "e" && parts[2] === "run") await showRun(parts[1], parts[3]);
    else if (parts[0] === "e" && parts[2] === "compare") await showCompare(parts[1], parts[3]);
    else if (parts[0] === "e" && parts[1]) await showRuns(parts[1], params);
    else await showExperiments();
  } catch (error) {
    fill(main, el("p", { class: "error" }, error.message));
  }
}

window.addEventListener("hashchange", route);
route();
