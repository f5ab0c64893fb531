// The browser side of `digital-experiments ui`: pages drawn from the JSON API under /api/.
"use strict";

const main = document.getElementById("main");
const crumbs = document.getElementById("crumbs");
const live = document.getElementById("live");
let source = null; // the EventSource of the page being shown

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null) node.setAttribute(key, value);
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

function text(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toPrecision(6).replace(/\.?0+(e|$)/, "$1");
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function seconds(value) {
  if (typeof value !== "number") return "–";
  if (value < 1) return (value * 1000).toPrecision(3) + " ms";
  if (value < 60) return value.toPrecision(3) + " s";
  const minutes = Math.floor(value / 60);
  return `${minutes}m${String(Math.round(value % 60)).padStart(2, "0")}s`;
}

function status(name, title) {
  return el("span", { class: `status status-${name}`, title: title || null, "data-status": name }, name);
}

function stream(name, onChange) {
  if (source) source.close();
  source = new EventSource(`/api/experiments/${encodeURIComponent(name)}/events`);
  let seen = null;
  source.onopen = () => { live.textContent = "live"; live.classList.add("on"); };
  source.onerror = () => { live.textContent = "reconnecting…"; live.classList.remove("on"); };
  source.onmessage = (event) => {
    const version = JSON.parse(event.data).version;
    if (version !== seen) onChange(); // the first one too: the page may predate the runs
    seen = version;
  };
}

function stopStream() {
  if (source) source.close();
  source = null;
  live.textContent = "";
  live.classList.remove("on");
}

// ---------------------------------------------------------------- experiments

async function showExperiments() {
  stopStream();
  fill(crumbs);
  const data = await api("/api/experiments");
  const rows = data.experiments.map((e) => el("tr", { "data-experiment": e.name },
    el("td", {}, el("a", { href: `#/e/${encodeURIComponent(e.name)}` }, e.name)),
    el("td", { class: "num" }, e.runs),
    el("td", { class: "badges" }, Object.entries(e.statuses).map(([s, n]) => el("span", {}, status(s), " ", n)),
      e.unreadable ? el("span", {}, status("unreadable"), " ", e.unreadable) : null,
      e.refused.length ? el("span", {}, status("refused", e.refused.join("\n"))) : null,
      e.problem ? el("span", {}, status("error", e.problem)) : null),
    el("td", {}, e.latest || "–")));
  fill(main, 
    el("h1", {}, "Experiments"), el("p", { class: "muted" }, data.root),
    rows.length ? el("table", { id: "experiments" },
      el("thead", {}, el("tr", {}, el("th", {}, "experiment"), el("th", {}, "runs"), el("th", {}, "statuses"), el("th", {}, "latest run"))),
      el("tbody", {}, rows)) : el("p", {}, "No experiments here yet."));
}

// ---------------------------------------------------------------- runs

const view = { name: null, where: "", sort: "", offset: 0, selected: new Set() };

async function showRuns(name) {
  if (view.name !== name) Object.assign(view, { name, where: "", sort: "", offset: 0, selected: new Set() });
  fill(crumbs, " / ", el("a", { href: `#/e/${encodeURIComponent(name)}` }, name));
  const whereBox = el("input", { type: "text", id: "where", placeholder: 'where, e.g. config.lr < 0.01 and status == "completed"', value: view.where });
  const message = el("div", { class: "error", id: "where-error" });
  const notice = el("div", { class: "error", id: "notice" }); // records not shown, and why
  const table = el("div", { id: "runs-table" });
  const pager = el("div", { class: "toolbar", id: "pager" });
  const plots = el("div", { class: "plots" },
    el("div", { class: "wide toolbar" }, "scatter: x ", el("select", { id: "x" }), " y ", el("select", { id: "y" }),
      " colour ", el("select", { id: "colour" }), el("button", { id: "plot", onclick: () => drawPlots(name) }, "Plot")),
    el("div", { class: "plot", id: "scatter" }), el("div", { class: "plot", id: "parallel" }),
    el("div", { class: "plot wide", id: "curves" }));
  const apply = () => { view.where = whereBox.value; view.offset = 0; loadRuns(name); };
  whereBox.addEventListener("keydown", (event) => { if (event.key === "Enter") apply(); });
  fill(main, 
    el("h1", {}, name),
    el("div", { class: "toolbar" }, whereBox, el("button", { id: "apply", onclick: apply }, "Filter"),
      el("button", { id: "compare", onclick: () => {
        if (view.selected.size >= 2) location.hash = `#/e/${encodeURIComponent(name)}/compare/${[...view.selected].join(",")}`;
      } }, "Compare selected")),
    message, notice, table, pager, el("h2", {}, "Plots"), plots);
  await loadRuns(name);
  stream(name, () => loadRuns(name));
}

async function loadRuns(name) {
  const params = new URLSearchParams({ where: view.where, sort: view.sort, offset: view.offset, limit: 100 });
  const message = document.getElementById("where-error");
  let data;
  try {
    data = await api(`/api/experiments/${encodeURIComponent(name)}/runs?${params}`);
    message.textContent = "";
  } catch (error) {
    message.textContent = error.message;
    return;
  }
  view.data = data;
  fill(document.getElementById("notice"), [...data.refused, data.problem].filter(Boolean).map((m) => el("p", {}, m)));
  const head = el("tr", {}, el("th", {}, ""), data.columns.map((column) => {
    const key = view.sort.replace(/^-/, "");
    const cls = key === column ? (view.sort.startsWith("-") ? "sorted-desc" : "sorted-asc") : null;
    return el("th", { class: cls, "data-column": column, onclick: () => {
      view.sort = view.sort === column ? `-${column}` : column;
      view.offset = 0;
      loadRuns(name);
    } }, column);
  }));
  const body = data.rows.map((row) => el("tr", { "data-id": row.id },
    el("td", {}, el("input", { type: "checkbox", "data-select": row.id, ...(view.selected.has(row.id) ? { checked: "" } : {}),
      onchange: (event) => { event.target.checked ? view.selected.add(row.id) : view.selected.delete(row.id); } })),
    data.columns.map((column) => {
      const value = row[column];
      if (column === "id") return el("td", {}, el("a", { href: `#/e/${encodeURIComponent(name)}/run/${row.id}` }, row.id));
      if (column === "status") return el("td", {}, status(value, row.error));
      if (column === "duration") return el("td", { class: "num" }, seconds(value));
      return el("td", { class: typeof value === "number" ? "num" : null, title: text(value) }, text(value));
    })));
  const unreadable = data.unreadable.map((u) => el("tr", { "data-id": u.id }, el("td", {}, ""),
    el("td", {}, u.id), el("td", {}, status("unreadable", u.error)), el("td", { colspan: data.columns.length - 2, class: "muted" }, u.error)));
  fill(document.getElementById("runs-table"), el("table", { id: "runs" }, el("thead", {}, head), el("tbody", {}, body, unreadable)));
  const last = Math.min(data.offset + data.rows.length, data.matched);
  fill(document.getElementById("pager"), 
    el("button", { id: "previous", onclick: () => { view.offset = Math.max(0, view.offset - 100); loadRuns(name); }, ...(data.offset ? {} : { disabled: "" }) }, "‹ previous"),
    el("span", { id: "counts" }, `runs ${data.matched ? data.offset + 1 : 0}–${last} of ${data.matched}` + (data.matched !== data.total ? ` (${data.total} in all)` : "")),
    el("button", { id: "next", onclick: () => { view.offset += 100; loadRuns(name); }, ...(last < data.matched ? {} : { disabled: "" }) }, "next ›"));
  fillPickers(data.numeric);
}

function fillPickers(numeric) {
  for (const [id, fallback] of [["x", 0], ["y", 1], ["colour", -1]]) {
    const select = document.getElementById(id);
    if (!select || select.options.length) continue;
    if (id === "colour") select.append(el("option", { value: "" }, "none"));
    for (const column of numeric) select.append(el("option", { value: column }, column));
    const configs = numeric.filter((c) => c.startsWith("config."));
    const results = [...numeric.filter((c) => c.startsWith("result.")), ...numeric.filter((c) => c.startsWith("metrics."))];
    if (id === "x" && configs.length) select.value = configs[0];
    if (id === "y" && results.length) select.value = results[0];
    else if (fallback >= 0 && numeric[fallback]) select.value = select.value || numeric[fallback];
  }
}

async function drawPlots(name) {
  const x = document.getElementById("x").value, y = document.getElementById("y").value;
  const colour = document.getElementById("colour").value;
  const numeric = view.data ? view.data.numeric : [];
  const columns = [...new Set([x, y, colour, ...numeric].filter(Boolean))];
  const params = new URLSearchParams({ where: view.where, columns: columns.join(",") });
  const data = await api(`/api/experiments/${encodeURIComponent(name)}/points?${params}`);
  const marker = colour ? { color: data[colour], colorscale: "Viridis", showscale: true, colorbar: { title: { text: colour } } } : {};
  const type = data.ids.length > 5000 ? "scattergl" : "scatter"; // WebGL for big sweeps
  Plotly.newPlot("scatter", [{ x: data[x], y: data[y], text: data.ids, mode: "markers", type, marker }],
    { title: { text: `${y} against ${x}` }, xaxis: { title: { text: x } }, yaxis: { title: { text: y } }, margin: { t: 40 } }, { responsive: true });
  const dims = numeric.filter((c) => data[c]).map((c) => ({ label: c, values: data[c] }));
  if (dims.length >= 2) {
    Plotly.newPlot("parallel", [{ type: "parcoords", dimensions: dims, line: colour ? { color: data[colour], colorscale: "Viridis" } : {} }],
      { title: { text: "parallel coordinates" }, margin: { t: 60 } }, { responsive: true });
  }
  const chosen = [...view.selected];
  const traces = [];
  for (const id of chosen) {
    const metrics = (await api(`/api/experiments/${encodeURIComponent(name)}/runs/${id}/metrics`)).metrics;
    for (const [metric, curve] of Object.entries(metrics)) traces.push({ x: curve.steps, y: curve.values, name: `${metric} · ${id}`, mode: "lines" });
  }
  Plotly.newPlot("curves", traces, { title: { text: chosen.length ? "metrics of the selected runs" : "select runs to see their metric curves" }, xaxis: { title: { text: "step" } }, margin: { t: 40 } }, { responsive: true });
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

async function showRun(name, id) {
  stopStream();
  fill(crumbs, " / ", el("a", { href: `#/e/${encodeURIComponent(name)}` }, name), " / ", id);
  const run = await api(`/api/experiments/${encodeURIComponent(name)}/runs/${id}`);
  if (run.unreadable) {
    fill(main, el("h1", {}, id), el("p", {}, status("unreadable")), el("pre", { class: "error" }, run.unreadable));
    return;
  }
  const base = `/api/experiments/${encodeURIComponent(name)}/runs/${id}/artefacts/`;
  const artefacts = run.artefacts.map((a) => {
    const url = base + a.path.split("/").map(encodeURIComponent).join("/");
    const preview = a.kind === "image" ? el("img", { class: "artefact", src: url, alt: a.path })
      : a.kind === "text" ? el("pre", { "data-src": url }, "…") : null;
    return el("section", { "data-artefact": a.path }, el("h2", {}, el("a", { href: url, download: a.path.split("/").pop() }, a.path), el("span", { class: "muted" }, ` ${a.size} bytes`)), preview);
  });
  const code = run.code ? el("section", {}, el("h2", {}, "Code"), el("pre", { id: "code" })) : null;
  fill(main, 
    el("h1", {}, id), el("p", {}, status(run.status)),
    block("Config", run.config), block("Result", run.result), block("Timing", run.timing),
    run.error ? el("section", {}, el("h2", {}, "Error"), el("pre", { class: "error", id: "traceback" }, run.error.traceback || `${run.error.type}: ${run.error.message}`)) : null,
    el("div", { class: "plot", id: "run-curves" }),
    code, el("h2", {}, `Artefacts (${artefacts.length})`), artefacts,
    block("Git", run.git, false), block("Packages", run.packages, false), block("System", run.system, false),
    block("Other metadata", run.metadata, false));
  if (code) document.getElementById("code").innerHTML = highlight(run.code);
  for (const pre of main.querySelectorAll("pre[data-src]")) {
    fetch(pre.dataset.src).then((r) => r.text()).then((t) => { pre.textContent = t; });
  }
  const metrics = (await api(`/api/experiments/${encodeURIComponent(name)}/runs/${id}/metrics`)).metrics;
  const traces = Object.entries(metrics).map(([metric, curve]) => ({ x: curve.steps, y: curve.values, name: metric, mode: "lines" }));
  if (traces.length) Plotly.newPlot("run-curves", traces, { title: { text: "metrics" }, xaxis: { title: { text: "step" } }, margin: { t: 40 } }, { responsive: true });
  else document.getElementById("run-curves").remove();
}

// ---------------------------------------------------------------- compare

async function showCompare(name, ids) {
  stopStream();
  fill(crumbs, " / ", el("a", { href: `#/e/${encodeURIComponent(name)}` }, name), " / compare");
  const data = await api(`/api/experiments/${encodeURIComponent(name)}/compare?ids=${ids}`);
  fill(main, el("h1", {}, `${data.ids.length} runs compared`),
    data.fields.length ? el("table", { id: "compare-table" },
      el("thead", {}, el("tr", {}, el("th", {}, "field"), data.ids.map((id) => el("th", {}, el("a", { href: `#/e/${encodeURIComponent(name)}/run/${id}` }, id))))),
      el("tbody", {}, data.fields.map((field, i) => el("tr", { "data-field": field }, el("td", {}, field), data.ids.map((id) => el("td", {}, text(data.values[id][i])))))))
      : el("p", {}, "These runs do not differ."));
}

// ---------------------------------------------------------------- routing

async function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  try {
    if (parts[0] === "e" && parts[2] === "run") await showRun(parts[1], parts[3]);
    else if (parts[0] === "e" && parts[2] === "compare") await showCompare(parts[1], parts[3]);
    else if (parts[0] === "e" && parts[1]) await showRuns(parts[1]);
    else await showExperiments();
  } catch (error) {
    fill(main, el("p", { class: "error" }, error.message));
  }
}

window.addEventListener("hashchange", route);
route();
