// Workers: every live daemon of the fleet: host, pid, version, started, heartbeat age
// (ticking), runs executing of its concurrency, the tasks it serves, its last report.

import { api, fmtAge, h, jsonView } from "../lib.js";
import { fmtInt, lifetime, replaceKeepingFocus, shortId, put } from "../pagekit.js";
import { timeEl } from "../widgets.js";

const REFRESH_MS = 5000;
const STALE_SECONDS = 30;
let life = null;

function heartbeat(iso) {
  return h("span", { class: "heartbeat", dataset: { at: iso } }, fmtAge(iso));
}

function tick(root) {
  for (const el of root.querySelectorAll(".heartbeat[data-at]")) {
    const age = (Date.now() - new Date(el.dataset.at).getTime()) / 1000;
    el.textContent = fmtAge(el.dataset.at);
    el.classList.toggle("stale", age > STALE_SECONDS);
    el.title = age > STALE_SECONDS ? `No heartbeat for over ${STALE_SECONDS} s` : "";
  }
}

function tasksCell(tasks) {
  if (tasks.length === 0) return h("span", { class: "muted" }, "none");
  const links = tasks.map((id) => h("li", null, h("a", { href: `#/tasks/${encodeURIComponent(id)}` }, id)));
  if (tasks.length <= 6) return h("ul", { class: "plain" }, links);
  return h("details", null, h("summary", null, `${tasks.length} tasks`), h("ul", { class: "plain" }, links));
}

function row(worker) {
  return h(
    "tr",
    { dataset: { worker: worker.id } },
    h("th", { scope: "row" }, h("div", null, worker.host), h("div", { class: "mono small muted", title: worker.id }, shortId(worker.id))),
    h("td", { class: "num" }, String(worker.pid)),
    h("td", null, worker.version),
    h("td", null, timeEl(worker.started_at), h("div", { class: "muted small" }, fmtAge(worker.started_at))),
    h("td", null, heartbeat(worker.heartbeat_at)),
    h("td", { class: "num" }, `${fmtInt(worker.executing)} / ${fmtInt(worker.concurrency)}`),
    h("td", null, worker.queues.length ? worker.queues.join(", ") : h("span", { class: "muted" }, "all")),
    h("td", null, tasksCell(worker.tasks)),
    h("td", null, worker.last_report
      ? h("details", null, h("summary", null, `${worker.last_report.trigger} at `, timeEl(worker.last_report.at)), jsonView(worker.last_report.counts))
      : h("span", { class: "muted" }, "—")),
  );
}

export async function render(root, params, app) {
  const mine = lifetime(root);
  life = mine;
  const body = h("div");
  const updated = h("p", { class: "muted small" });
  const draw = (workers) => {
    // a refresh rebuilds the table: the lists a reader opened stay open
    const open = new Set([...body.querySelectorAll("tr[data-worker] details[open]")].map(
      (el) => `${el.closest("tr").dataset.worker}/${el.closest("td").cellIndex}`));
    replaceKeepingFocus(
      body,
      workers.length === 0
        ? h("p", { class: "muted" }, "No live worker.")
        : h("div", { class: "table-wrap" }, h("table", { class: "data" },
            h("caption", { class: "visually-hidden" }, "Live workers"),
            h("thead", null, h("tr", null, ["Host", "PID", "Version", "Started", "Heartbeat", "Executing / concurrency", "Queues", "Serves", "Last report"].map((text, i) =>
              h("th", { scope: "col", class: i === 1 || i === 5 ? "num" : null }, text)))),
            h("tbody", null, workers.map(row)))),
    );
    for (const el of body.querySelectorAll("tr[data-worker] details")) {
      if (open.has(`${el.closest("tr").dataset.worker}/${el.closest("td").cellIndex}`)) el.open = true;
    }
    tick(root);
    updated.textContent = `${workers.length} live worker${workers.length === 1 ? "" : "s"}; updated ${new Date().toLocaleTimeString()}. A heartbeat older than ${STALE_SECONDS} s is marked.`;
  };
  put(root, h("h1", null, "Workers"), body, updated);
  draw((await api("/api/workers")).workers);
  mine.every(REFRESH_MS, async () => {
    try {
      draw((await api("/api/workers")).workers);
    } catch (error) {
      updated.textContent = `Refresh failed: ${error.message}`;
    }
  });
  mine.every(1000, () => tick(root));
}

export function dispose() {
  if (life) life.end();
  life = null;
}
