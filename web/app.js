// fedsilo dashboard: experiments and runs, a run's curves (global and one line
// per silo, x = round), its silos, job and events, and several runs' curves on
// one chart. Reads the JSON API of the server that serves this page; a run in
// progress is re-read every two seconds.
"use strict";

const fedsilo = { charts: {}, timer: null };
window.fedsilo = fedsilo;

const view = document.getElementById("view");
const status = document.getElementById("status");
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                 "#7f7f7f", "#bcbd22", "#17becf"];
const FIRST_KINDS = ["test_accuracy", "test_loss", "train_loss", "train_accuracy", "test_auc",
                     "epsilon"];
const LIVE = new Set(["queued", "running"]);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

async function api(path) {
  const response = await fetch(path, { cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function when(unix) { return unix > 0 ? new Date(unix * 1000).toLocaleString() : "-"; }
function fixed(v, digits = 4) { return v === undefined || v === null ? "-" : Number(v).toFixed(digits); }
function stateCell(state) { return el("td", { class: "state-" + state }, state); }
function runLink(run) { return el("a", { href: "#/run/" + encodeURIComponent(run.run_id) }, run.run_id); }

function table(headers, rows, attrs = {}) {
  const t = el("table", attrs);
  t.append(el("tr", {}, ...headers.map(h => el("th", {}, h))));
  for (const r of rows) t.append(r);
  return t;
}

// One uPlot line chart; `series` is [{label, values}], aligned with `xs`.
function lineChart(key, title, xs, series, width = 440) {
  const box = el("div", { class: "chart", "data-metric": key, "data-rounds": xs.length },
                 el("h3", {}, title));
  let colour = 0;  // the same silo gets the same colour on every chart
  const opts = {
    width, height: 260,
    scales: { x: { time: false } },
    axes: [{ label: "round", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000] }, {}],
    series: [{ label: "round" }].concat(series.map(s => ({
      label: s.label, stroke: s.label === "global" ? "#111" : PALETTE[colour++ % PALETTE.length],
      width: s.label === "global" ? 2.5 : 1.2, spanGaps: true,
      value: (u, v) => v === null || v === undefined ? "-" : v.toFixed(4),
    }))),
  };
  const chart = new uPlot(opts, [xs].concat(series.map(s => s.values)), box);
  fedsilo.charts[key] = chart;
  return box;
}

function stopPolling() {
  if (fedsilo.timer) clearTimeout(fedsilo.timer);
  fedsilo.timer = null;
}

// --- experiments and runs -----------------------------------------------------
async function showRuns() {
  const runs = await api("/api/runs");
  const byExperiment = new Map();
  for (const r of runs) {
    if (!byExperiment.has(r.experiment)) byExperiment.set(r.experiment, []);
    byExperiment.get(r.experiment).push(r);
  }
  view.replaceChildren(el("h1", {}, "Experiments"));
  if (runs.length === 0) view.append(el("p", { class: "muted" }, "No runs yet."));
  const picked = new Set();
  const compare = el("button", {
    disabled: "", onclick: () => { location.hash = "#/compare/" + [...picked].map(encodeURIComponent).join(","); },
  }, "Compare selected");
  for (const [experiment, list] of byExperiment) {
    view.append(el("h2", {}, experiment, el("span", { class: "muted" }, `  ${list.length} run(s)`)));
    view.append(table(["", "run", "job", "state", "rounds", "global test accuracy", "started", "owner"],
      list.slice().reverse().map(r => el("tr", { "data-run": r.run_id },
        el("td", {}, el("input", { type: "checkbox", onchange: e => {
          e.target.checked ? picked.add(r.run_id) : picked.delete(r.run_id);
          picked.size >= 2 ? compare.removeAttribute("disabled") : compare.setAttribute("disabled", "");
        } })),
        el("td", {}, runLink(r)), el("td", {}, r.name), stateCell(r.state),
        el("td", { class: "num" }, `${r.rounds_completed}/${r.rounds_total}`),
        el("td", { class: "num" }, fixed(r.final_metrics["global/test_accuracy"])),
        el("td", {}, when(r.started)), el("td", {}, r.owner))),
      { class: "runs" }));
  }
  if (runs.length >= 2) view.append(el("p", {}, compare));
  if (runs.some(r => LIVE.has(r.state))) fedsilo.timer = setTimeout(route, 2000);
}

// --- one run --------------------------------------------------------------------
function metricKinds(series) {
  const kinds = new Set();
  for (const name of Object.keys(series)) {
    const kind = name.slice(name.indexOf("/") + 1);
    if (kind !== "num_examples" && kind !== "silos_succeeded") kinds.add(kind);
  }
  return [...kinds].sort((a, b) => {
    const ia = FIRST_KINDS.indexOf(a), ib = FIRST_KINDS.indexOf(b);
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
  });
}

async function showRun(id) {
  const [run, metrics] = await Promise.all([
    api("/api/runs/" + encodeURIComponent(id)),
    api("/api/runs/" + encodeURIComponent(id) + "/metrics"),
  ]);
  fedsilo.charts = {};
  const charts = el("div", { class: "charts" });
  for (const kind of metricKinds(metrics.series)) {
    const series = [];
    for (const [name, values] of Object.entries(metrics.series)) {
      if (name.slice(name.indexOf("/") + 1) !== kind) continue;
      series.push({ label: name.slice(0, name.indexOf("/")), values });
    }
    series.sort((a, b) => (a.label === "global" ? -1 : b.label === "global" ? 1 :
                           a.label.localeCompare(b.label, undefined, { numeric: true })));
    charts.append(lineChart(kind, kind, metrics.rounds, series));
  }
  const silos = table(["silo", "state", "rounds taken part", "examples", "ε spent", "last seen"],
    run.silos.map(s => el("tr", {}, el("td", {}, s.silo), el("td", {}, s.state),
      el("td", { class: "num" }, s.rounds), el("td", { class: "num" }, s.examples || "-"),
      el("td", { class: "num" }, s.epsilon === null ? "-" : fixed(s.epsilon, 3)),
      el("td", {}, when(s.last_seen)))), { class: "silos" });
  const events = table(["time", "level", "message"],
    run.events.slice(-200).reverse().map(e => el("tr", { class: "level-" + e.level },
      el("td", {}, when(e.time)), el("td", {}, e.level), el("td", {}, e.message))),
    { class: "events" });
  view.replaceChildren(
    el("h1", {}, run.run_id, " ", el("span", { class: "state-" + run.state }, run.state)),
    el("p", { class: "muted" },
       `${run.name} · experiment ${run.experiment} · ${run.owner} · round ${run.rounds_completed} of ` +
       `${run.rounds_total} · started ${when(run.started)}` +
       (run.finished > 0 ? ` · finished ${when(run.finished)}` : "")),
    run.error ? el("p", { class: "error" }, run.error) : "",
    charts,
    el("h2", {}, "Silos"), silos,
    el("h2", {}, "Job"), el("pre", {}, run.job_yaml),
    el("h2", {}, "Events (newest first)"), events);
  if (LIVE.has(run.state)) fedsilo.timer = setTimeout(route, 2000);
}

// --- several runs on one chart ----------------------------------------------------
async function showCompare(ids, metric) {
  const all = await Promise.all(ids.map(id => Promise.all([
    api("/api/runs/" + encodeURIComponent(id)),
    api("/api/runs/" + encodeURIComponent(id) + "/metrics")])));
  const names = new Set();
  for (const [, m] of all) Object.keys(m.series).forEach(n => names.add(n));
  metric = metric || (names.has("global/test_accuracy") ? "global/test_accuracy" : [...names][0]);
  const rounds = [...new Set(all.flatMap(([, m]) => m.rounds))].sort((a, b) => a - b);
  const series = all.map(([run, m]) => {
    const at = new Map(m.rounds.map((r, i) => [r, (m.series[metric] || [])[i]]));
    return { label: run.run_id, values: rounds.map(r => at.has(r) ? at.get(r) : null) };
  });
  fedsilo.charts = {};
  const select = el("select", { onchange: e => {
    location.hash = "#/compare/" + ids.map(encodeURIComponent).join(",") + "/" + encodeURIComponent(e.target.value);
  } }, ...[...names].sort().map(n => {
    const o = el("option", { value: n }, n);
    if (n === metric) o.selected = true;
    return o;
  }));
  view.replaceChildren(el("h1", {}, "Compare ", String(ids.length), " runs"),
    el("p", {}, "metric ", select),
    lineChart("compare", metric, rounds, series, 900),
    table(["run", "state", "rounds", metric + " (last)"], all.map(([run, m]) => {
      const values = (m.series[metric] || []).filter(v => v !== null);
      return el("tr", {}, el("td", {}, runLink(run)), stateCell(run.state),
        el("td", { class: "num" }, `${run.rounds_completed}/${run.rounds_total}`),
        el("td", { class: "num" }, fixed(values[values.length - 1])));
    })));
  if (all.some(([run]) => LIVE.has(run.state))) fedsilo.timer = setTimeout(route, 2000);
}

async function route() {
  stopPolling();
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  try {
    if (parts[0] === "run" && parts[1]) await showRun(parts[1]);
    else if (parts[0] === "compare" && parts[1]) await showCompare(parts[1].split(","), parts[2]);
    else await showRuns();
    status.textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.ready = "1";
  } catch (err) {
    view.replaceChildren(el("p", { class: "error" }, String(err.message || err)));
    status.textContent = "";
  }
}

window.addEventListener("hashchange", route);
api("/api/info").then(info => { document.getElementById("source").textContent = info.source; })
  .catch(() => {});
route();
