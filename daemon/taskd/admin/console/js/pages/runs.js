// Runs: the live list, filtered by what the address says (#/runs?status=failed&task=...).

import { api, fmtAge, h, onRunChange } from "../lib.js";
import { progressBar, statusBadge, timeEl } from "../widgets.js";

const STATUSES = ["queued", "executing", "waiting", "completed", "failed", "canceled", "expired"];
const PAGE_SIZE = 50;

let unsubscribe = null;
let refreshTimer = null;

function runsQuery(params, cursor) {
  const query = new URLSearchParams();
  for (const name of ["status", "task", "queue", "tag", "schedule", "event", "created_after", "created_before"]) {
    if (params[name]) query.set(name, params[name]);
  }
  if (cursor) query.set("cursor", cursor);
  query.set("limit", String(PAGE_SIZE));
  return query;
}

function row(run) {
  return h(
    "tr",
    { "data-run": run.id },
    h("td", null, h("a", { href: `#/runs/${run.id}`, class: "mono" }, run.id.slice(0, 8) + "…" + run.id.slice(-4))),
    h("td", null, run.task_id),
    h("td", null, statusBadge(run.status), " ", progressBar(run.metadata, `progress of run ${run.id}`)),
    h("td", { class: "hide-small" }, run.queue),
    h("td", { class: "num" }, String(run.attempt)),
    h("td", null, timeEl(run.created_at), h("span", { class: "muted" }, ` (${fmtAge(run.created_at)})`)),
  );
}

export async function render(root, params, app) {
  const title = h("h1", null, "Runs");
  const tbody = h("tbody");
  const live = h("p", { class: "muted", "aria-live": "polite" });
  const more = h("button", { type: "button", class: "btn", hidden: true }, "Older runs");
  let nextCursor = null;
  const shown = new Map();

  root.append(
    title,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "data", "aria-label": "Runs, newest first" },
        h(
          "thead",
          null,
          h("tr", null, h("th", { scope: "col" }, "Run"), h("th", { scope: "col" }, "Task"), h("th", { scope: "col" }, "Status"),
            h("th", { scope: "col", class: "hide-small" }, "Queue"), h("th", { scope: "col", class: "num" }, "Attempts"),
            h("th", { scope: "col" }, "Created")),
        ),
        tbody,
      ),
    ),
    more,
    live,
  );

  async function load(cursor) {
    const page = await api(`/api/runs?${runsQuery(params, cursor)}`);
    if (!cursor) {
      tbody.replaceChildren();
      shown.clear();
    }
    for (const run of page.runs) {
      const tr = row(run);
      shown.set(run.id, tr);
      tbody.append(tr);
    }
    nextCursor = page.next_cursor;
    more.hidden = !nextCursor;
    live.textContent = shown.size ? "" : "No runs match.";
  }

  more.addEventListener("click", () => load(nextCursor));
  await load(null);

  // Live: re-read the first page shortly after changes (a burst of changes, one read).
  unsubscribe = onRunChange(() => {
    if (refreshTimer) return;
    refreshTimer = setTimeout(async () => {
      refreshTimer = null;
      try {
        await load(null);
      } catch (error) {
        live.textContent = `Refresh failed: ${error.message}`;
      }
    }, 250);
  });
}

export function dispose() {
  if (unsubscribe) unsubscribe();
  unsubscribe = null;
  if (refreshTimer) clearTimeout(refreshTimer);
  refreshTimer = null;
}
