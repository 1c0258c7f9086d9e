// Charts from the database (every daemon's runs): runs started / completed / failed per
// bucket, the wait from due to start, queue depth; the last hour or the last day
// (#/charts?window=1h|24h&task=&queue=). Each chart carries its numbers as a table too.

import { api, chart, fmtDuration, h } from "../lib.js";
import { fmtInt, lifetime, put } from "../pagekit.js";

const WINDOWS = { "1h": "Last hour", "24h": "Last day" };
const QUEUES_DRAWN = 6;
let life = null;

function card(id, title, summary) {
  const box = h("div", { class: "chart-box" });
  const node = h("section", { class: "card chart-card", "aria-labelledby": id }, h("h2", { id }, title), summary, box);
  return { node, box };
}

function legend(names) {
  return h("ul", { class: "legend" }, names.map((name, i) => h("li", null, h("span", { class: `swatch chart-s${i % 6}`, "aria-hidden": "true" }), name)));
}

function draw(target, stats) {
  const per = stats.bucket_seconds === 60 ? "minute" : `${stats.bucket_seconds / 60} minutes`;
  const xFormat = (x) => {
    const d = new Date(x);
    return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
  };
  const buckets = stats.buckets;
  const sum = (key) => buckets.reduce((total, b) => total + (b[key] || 0), 0);
  const runs = card("chart-runs", `Runs per ${per}`,
    h("p", { class: "chart-summary" }, `${fmtInt(sum("started"))} started, ${fmtInt(sum("completed"))} completed, ${fmtInt(sum("failed"))} failed.`));
  const runSeries = [
    { name: "started", kind: "line", points: buckets.map((b) => ({ x: b.at, y: b.started })) },
    { name: "completed", kind: "line", points: buckets.map((b) => ({ x: b.at, y: b.completed })) },
    { name: "failed", kind: "line", points: buckets.map((b) => ({ x: b.at, y: b.failed })) },
  ];
  chart(runs.box, runSeries, { title: `Runs started, completed and failed per ${per}`, xFormat });
  runs.box.append(legend(["started", "completed", "failed"]));

  const waits = buckets.map((b) => b.wait_p95).filter((w) => w !== null && w !== undefined);
  const wait = card("chart-wait", "Wait from due to start",
    h("p", { class: "chart-summary" }, waits.length ? `Worst p95: ${fmtDuration(Math.max(...waits))}.` : "No run started."));
  chart(wait.box, [
    { name: "p50 seconds", kind: "line", points: buckets.map((b) => ({ x: b.at, y: b.wait_p50 })) },
    { name: "p95 seconds", kind: "line", points: buckets.map((b) => ({ x: b.at, y: b.wait_p95 })) },
  ], { title: `Wait in seconds from due to start, p50 and p95, per ${per}`, xFormat });
  wait.box.append(legend(["p50", "p95"]));

  // queue depth: the queues with the highest peaks, due runs per bucket
  const peaks = new Map();
  for (const d of stats.depth) peaks.set(d.queue, Math.max(peaks.get(d.queue) || 0, d.due + d.delayed + d.executing));
  const queues = [...peaks.entries()].sort((a, b) => b[1] - a[1]).slice(0, QUEUES_DRAWN).map(([q]) => q);
  const depthPoints = (queue, key) => stats.depth.filter((d) => d.queue === queue).map((d) => ({ x: d.at, y: d[key] }));
  const depth = card("chart-depth", "Queue depth (due runs)",
    h("p", { class: "chart-summary" }, queues.length
      ? `Peak due: ${queues.map((q) => `${q} ${fmtInt(Math.max(...stats.depth.filter((d) => d.queue === q).map((d) => d.due)))}`).join(", ")}.`
      : "No queue sample in this window (a daemon samples every minute)."));
  chart(depth.box, queues.map((q) => ({ name: q, kind: "line", points: depthPoints(q, "due") })), { title: `Due runs per queue, peak per ${per}`, xFormat });
  depth.box.append(legend(queues));
  const executing = card("chart-executing", "Runs executing per queue", null);
  chart(executing.box, queues.map((q) => ({ name: q, kind: "line", points: depthPoints(q, "executing") })), { title: `Runs executing per queue, peak per ${per}`, xFormat });
  executing.box.append(legend(queues));
  const oldest = card("chart-oldest", "Oldest due run's age", null);
  chart(oldest.box, queues.map((q) => ({ name: q, kind: "line", points: depthPoints(q, "oldest_due_age") })), { title: `Seconds the oldest due run had waited, per queue, peak per ${per}`, xFormat });
  oldest.box.append(legend(queues));

  target.replaceChildren();
  put(
    target,
    h("div", { class: "chart-grid" }, runs.node, wait.node, depth.node, executing.node, oldest.node),
    stats.depth_truncated ? h("p", { class: "muted" }, "Only the 50 queues with the highest peaks have samples here.") : null,
  );
}

export async function render(root, params, app) {
  const mine = lifetime(root);
  life = mine;
  const windowName = params.window in WINDOWS ? params.window : "1h";
  const task = h("input", { id: "chart-task", type: "search", value: params.task || "", placeholder: "all tasks" });
  const queue = h("input", { id: "chart-queue", type: "search", value: params.queue || "", placeholder: "all queues" });
  const target = h("div", null, h("p", { class: "muted" }, "Loading…"));
  const updated = h("p", { class: "muted small" });
  const hash = (win) => {
    const query = new URLSearchParams({ window: win });
    if (task.value.trim()) query.set("task", task.value.trim());
    if (queue.value.trim()) query.set("queue", queue.value.trim());
    return `#/charts?${query}`;
  };
  const form = h("form", { class: "filters" },
    h("div", { class: "field" }, h("span", { id: "window-label", class: "label" }, "Window"),
      h("div", { class: "segmented", role: "group", "aria-labelledby": "window-label" },
        Object.entries(WINDOWS).map(([value, text]) => h("button", {
          type: "button", class: "btn", "aria-pressed": value === windowName ? "true" : "false",
          onclick: () => app.navigate(hash(value)),
        }, text)))),
    h("div", { class: "field" }, h("label", { for: "chart-task" }, "Task"), task),
    h("div", { class: "field" }, h("label", { for: "chart-queue" }, "Queue"), queue),
    h("button", { type: "submit", class: "btn" }, "Show"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    app.navigate(hash(windowName));
  });
  put(root, h("h1", null, "Charts"), form, target, updated);

  const query = new URLSearchParams({ window: windowName });
  if (params.task) query.set("task", params.task);
  if (params.queue) query.set("queue", params.queue);
  const load = async () => {
    const stats = await api(`/api/stats?${query}`);
    draw(target, stats);
    updated.textContent = `${WINDOWS[windowName]}, from the database (every daemon); updated ${new Date().toLocaleTimeString()}.`;
  };
  try {
    await load();
  } catch (error) {
    target.replaceChildren(h("p", { class: "error", role: "alert" }, `Could not read the stats: ${error.message}`));
    return;
  }
  mine.every(windowName === "1h" ? 30000 : 300000, () => load().catch((error) => {
    updated.textContent = `Refresh failed: ${error.message}`;
  }));
}

export function dispose() {
  if (life) life.end();
  life = null;
}
