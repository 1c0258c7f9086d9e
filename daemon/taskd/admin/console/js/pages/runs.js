// Runs: the live list. The filters live in the address (#/runs?status=failed&task=...), so a
// filtered view can be bookmarked or shared; applying them re-renders the page.

import { api, confirmDialog, fmtAge, fmtDuration, h, onRunChange, toast } from "../lib.js";
import { progressBar, statusBadge, timeEl } from "../widgets.js";

const STATUSES = ["queued", "executing", "waiting", "completed", "failed", "canceled", "expired"];
const UNFINISHED = new Set(["queued", "executing", "waiting"]);
const PAGE_SIZE = 50;
// The filters of GET /api/runs (and /counts, /bulk), as the address carries them.
const FILTERS = ["status", "task", "queue", "tag", "key", "version", "schedule", "event", "error_group", "created_after", "created_before"];
const SEARCH = ["search", "search_in"];

let unsubscribe = null;
let timers = [];

function pick(params, names) {
  const query = new URLSearchParams();
  for (const name of names) {
    if (params[name]) query.set(name, params[name]);
  }
  return query;
}

// The filters as the JSON body of POST /api/runs/bulk wants them (status a list).
function filterBody(params) {
  const filter = {};
  for (const name of [...FILTERS, ...SEARCH]) {
    if (!params[name]) continue;
    filter[name] = name === "status" || name === "search_in" ? params[name].split(",") : params[name];
  }
  return filter;
}

function shortId(id) {
  return `${id.slice(0, 8)}…${id.slice(-4)}`;
}

function runDuration(run) {
  if (!run.started_at) return "";
  const end = run.finished_at ? new Date(run.finished_at) : new Date();
  return fmtDuration((end - new Date(run.started_at)) / 1000);
}

// datetime-local (the browser's zone) <-> ISO UTC in the address
function toLocalInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const local = new Date(d.getTime() - d.getTimezoneOffset() * 60000);
  return local.toISOString().slice(0, 16);
}
function fromLocalInput(value) {
  return value ? new Date(value).toISOString() : "";
}

function field(label, control, wide = false) {
  return h("div", { class: wide ? "field field-wide" : "field" }, h("label", { for: control.id }, label), control);
}

function filterForm(params, tasks, queues) {
  const input = (name, attrs = {}) => h("input", { id: `f-${name}`, name, value: params[name] || "", autocomplete: "off", ...attrs });
  const status = h(
    "select",
    { id: "f-status", name: "status" },
    h("option", { value: "" }, "any"),
    STATUSES.map((one) => h("option", { value: one, selected: params.status === one }, one)),
  );
  const searchIn = h(
    "select",
    { id: "f-search_in", name: "search_in" },
    h("option", { value: "" }, "payload, output, metadata"),
    ["payload", "output", "metadata"].map((one) => h("option", { value: one, selected: params.search_in === one }, one)),
  );
  const after = h("input", { id: "f-created_after", name: "created_after", type: "datetime-local", value: toLocalInput(params.created_after) });
  const before = h("input", { id: "f-created_before", name: "created_before", type: "datetime-local", value: toLocalInput(params.created_before) });
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter runs" },
    field("Search (run id or JSON)", input("search", { type: "search", placeholder: '{"customer": "acme"}' }), true),
    field("Search in", searchIn),
    field("Status", status),
    field("Task", input("task", { list: "task-names" })),
    field("Queue", input("queue", { list: "queue-names" })),
    h(
      "details",
      { class: "more-filters", open: ["tag", "key", "version", "schedule", "event", "created_after", "created_before"].some((n) => params[n]) },
      h("summary", null, "More filters"),
      h("div", { class: "filters" },
        field("Tag", input("tag")),
        field("Concurrency key", input("key")),
        field("Version", input("version")),
        field("Schedule", input("schedule")),
        field("Event", input("event")),
        field("Created after", after),
        field("Created before", before)),
    ),
    h("input", { type: "hidden", name: "error_group", value: params.error_group || "" }),
    h("div", { class: "toolbar" },
      h("button", { type: "submit", class: "btn btn-primary" }, "Apply"),
      h("a", { href: "#/runs", class: "btn" }, "Clear")),
    h("datalist", { id: "task-names" }, tasks.map((name) => h("option", { value: name }))),
    h("datalist", { id: "queue-names" }, queues.map((name) => h("option", { value: name }))),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const query = new URLSearchParams();
    for (const [name, value] of data.entries()) {
      const text = String(value).trim();
      if (!text) continue;
      query.set(name, name.startsWith("created_") ? fromLocalInput(text) : text);
    }
    const hash = `#/runs${query.size ? `?${query}` : ""}`;
    if (location.hash === hash) window.dispatchEvent(new HashChangeEvent("hashchange"));
    else location.hash = hash;
  });
  return form;
}

function withParam(params, name, value) {
  const query = pick(params, [...FILTERS, ...SEARCH]);
  if (value) query.set(name, value);
  else query.delete(name);
  return `#/runs${query.size ? `?${query}` : ""}`;
}

export async function render(root, params, app) {
  const canAct = app.role === "admin";
  const tbody = h("tbody");
  const status = h("p", { class: "muted", role: "status" });
  const more = h("button", { type: "button", class: "btn", hidden: true }, "Older runs");
  const counts = h("ul", { class: "counts", "aria-label": "Runs per status" });
  const shown = new Map(); // run id -> row
  let nextCursor = null;
  let scannedTotal = 0;
  let newest = null;

  const [tasks, queues] = await Promise.all([
    api("/api/tasks").then((r) => r.tasks.map((t) => t.id)).catch(() => []),
    api("/api/queues").then((r) => r.queues.map((q) => q.queue)).catch(() => []),
  ]);

  const bulk = canAct
    ? h("div", { class: "toolbar", role: "group", "aria-label": "Bulk actions on every matching run" },
        h("button", { type: "button", class: "btn", onclick: () => bulkAction("cancel") }, "Cancel all matching…"),
        h("button", { type: "button", class: "btn", onclick: () => bulkAction("replay") }, "Replay all matching…"))
    : null;

  root.append(
    ...[
    h("h1", null, "Runs"),
    filterForm(params, tasks, queues),
    params.error_group
      ? h("p", { class: "notice" }, "Runs of error group ", h("code", null, params.error_group), " · ",
          h("a", { href: withParam(params, "error_group", "") }, "show all runs"))
      : null,
    counts,
    bulk,
    h("div", { class: "table-wrap" },
      h("table", { class: "data", "aria-label": "Runs, newest first" },
        h("thead", null, h("tr", null,
          h("th", { scope: "col" }, "Run"), h("th", { scope: "col" }, "Task"), h("th", { scope: "col" }, "Status"),
          h("th", { scope: "col", class: "hide-small" }, "Queue"), h("th", { scope: "col", class: "hide-small" }, "Key"),
          h("th", { scope: "col", class: "hide-small" }, "Version"),
          h("th", { scope: "col", class: "num" }, "Attempts"), h("th", { scope: "col" }, "Created"),
          h("th", { scope: "col", class: "num hide-small" }, "Duration"))),
        tbody)),
    more,
    status,
    ].filter(Boolean),
  );

  function cells(run) {
    return [
      h("td", null, h("a", { href: `#/runs/${run.id}`, class: "mono", title: run.id }, shortId(run.id))),
      h("td", null, run.task_id),
      h("td", null, statusBadge(run.status), " ", progressBar(run.metadata, `progress of run ${shortId(run.id)}`)),
      h("td", { class: "hide-small" }, run.queue),
      h("td", { class: "hide-small" }, run.concurrency_key || ""),
      h("td", { class: "hide-small mono" }, run.version || ""),
      h("td", { class: "num" }, run.max_attempts ? `${run.attempt}/${run.max_attempts}` : String(run.attempt)),
      h("td", null, timeEl(run.created_at), h("span", { class: "muted" }, ` ${fmtAge(run.created_at)}`)),
      h("td", { class: "num hide-small" }, runDuration(run)),
    ];
  }

  function rowOf(run) {
    const tr = h("tr", { "data-run": run.id, "data-status": run.status }, cells(run));
    tr.run = run;
    return tr;
  }

  function update(run) {
    const tr = shown.get(run.id);
    if (!tr) return;
    tr.run = run;
    tr.dataset.status = run.status;
    tr.replaceChildren(...cells(run));
  }

  function listQuery(cursor) {
    const query = pick(params, [...FILTERS, ...SEARCH]);
    if (cursor) query.set("cursor", cursor);
    query.set("limit", String(PAGE_SIZE));
    return query;
  }

  function describe(page) {
    if (params.search && page.search_complete === false) {
      more.textContent = `Searched ${scannedTotal.toLocaleString()} rows, continue`;
    } else {
      more.textContent = "Older runs";
    }
    more.hidden = !nextCursor;
    status.textContent = shown.size ? "" : params.search && nextCursor ? "No match yet in the rows searched." : "No runs match.";
  }

  // A page of the list: the first one (fresh) replaces what is shown, a later one is added.
  function showPage(page, fresh) {
    if (fresh) {
      tbody.replaceChildren();
      shown.clear();
      scannedTotal = 0;
      newest = page.runs.length ? page.runs[0].id : null;
    }
    for (const run of page.runs) {
      if (shown.has(run.id)) continue;
      const tr = rowOf(run);
      shown.set(run.id, tr);
      tbody.append(tr);
    }
    if (!newest && page.runs.length) newest = page.runs[0].id; // a search's first matches
    scannedTotal += page.scanned || 0;
    nextCursor = page.next_cursor;
    describe(page);
  }

  async function loadPage(cursor) {
    showPage(await api(`/api/runs?${listQuery(cursor)}`), !cursor);
  }

  // New runs: the first page read again, its runs newer than the newest shown put on top.
  async function loadNewer() {
    const page = await api(`/api/runs?${listQuery(null)}`);
    // More new runs came than one page holds (a full page, each run of it newer than the
    // newest shown, and more below): the page replaces the list, its cursor with it; put on
    // top, the new runs below the page would be missing from the list. (A page not full holds
    // every new match of the rows it read: those go on top, and a search continued further
    // down keeps its place.)
    const full = page.runs.length >= PAGE_SIZE && page.next_cursor;
    if (full && page.runs.every((run) => !newest || run.id > newest)) {
      showPage(page, true);
      return;
    }
    const fresh = [];
    for (const run of page.runs) {
      if (newest && run.id <= newest) {
        update(run);
        continue;
      }
      if (!shown.has(run.id)) fresh.push(run);
    }
    for (const run of fresh.reverse()) {
      const tr = rowOf(run);
      shown.set(run.id, tr);
      tbody.prepend(tr);
      newest = run.id;
    }
    if (shown.size) status.textContent = "";
  }

  async function loadCounts() {
    let answer;
    try {
      answer = await api(`/api/runs/counts?${pick(params, FILTERS.filter((n) => n !== "status"))}`);
    } catch (error) {
      counts.replaceChildren(h("li", { class: "muted" }, `Counts unavailable: ${error.message}`));
      return;
    }
    const estimated = new Set(answer.estimated || []);
    const current = (params.status || "").split(",").filter(Boolean);
    counts.replaceChildren(
      ...STATUSES.map((one) => {
        const n = answer.counts[one] ?? 0;
        const text = `${estimated.has(one) ? "~" : ""}${n.toLocaleString()}`;
        const pressed = current.length === 1 && current[0] === one;
        return h("li", null,
          h("a", { class: "btn", href: withParam(params, "status", pressed ? "" : one), "aria-current": pressed ? "true" : null,
                   title: estimated.has(one) ? "an estimate" : null },
            statusBadge(one), h("span", { class: "count" }, text)));
      }),
    );
  }

  async function bulkAction(action) {
    const verb = action === "cancel" ? "Cancel" : "Replay";
    const query = pick(params, [...FILTERS, ...SEARCH]);
    query.set("action", action);
    let preview;
    try {
      preview = await api(`/api/runs/bulk?${query}`);
    } catch (error) {
      toast(`${verb}: ${error.message}`, "error");
      return;
    }
    if (!preview.matching) {
      toast(`No run to ${action} matches these filters.`, "info");
      return;
    }
    // capped: counting stopped at the cap; estimated (console-runs): extrapolated from a scan
    const qualifier = preview.capped ? "at least " : preview.estimated ? "about " : "";
    const how = `${qualifier}${preview.matching.toLocaleString()}`;
    const which = action === "cancel" ? "unfinished run" : "run";
    const ok = await confirmDialog(
      `${verb} ${how} ${which}${preview.matching === 1 ? "" : "s"} matching the current filters?` +
        (action === "replay" ? " Each gets a new run with the same payload." : ""),
      { confirm: `${verb} ${how}`, cancel: "Go back" },
    );
    if (!ok) return;
    let expected = preview.matching;
    try {
      let done = null;
      while (done === null) {
        try {
          done = await api("/api/runs/bulk", { method: "POST", body: { action, filter: filterBody(params), expected } });
        } catch (error) {
          // More runs match than the confirmation said (an estimate from the newest runs, or
          // runs created since): the daemon counted them exactly; ask again with that number.
          const exact = error.status === 409 && error.detail ? error.detail.matching : undefined;
          if (typeof exact !== "number" || exact <= expected) throw error;
          const again = await confirmDialog(
            error.detail.capped
              ? `Over ${exact.toLocaleString()} ${which}s match the current filters, not ${how}. ${verb} the newest ${exact.toLocaleString()}?`
              : `${exact.toLocaleString()} ${which}s match the current filters, not ${how}. ${verb} all ${exact.toLocaleString()}?`,
            { confirm: `${verb} ${exact.toLocaleString()}`, cancel: "Go back" },
          );
          if (!again) return;
          expected = exact;
        }
      }
      const past = action === "cancel" ? "Canceled" : "Replayed";
      toast(`${past} ${done.done.toLocaleString()} of ${done.matched.toLocaleString()} runs` + (done.skipped ? ` (${done.skipped} skipped: finished meanwhile)` : ""), "ok");
      await Promise.all([loadNewer(), loadCounts()]);
    } catch (error) {
      toast(`${verb}: ${error.message}`, "error");
    }
  }

  more.addEventListener("click", async () => {
    more.disabled = true;
    try {
      await loadPage(nextCursor);
    } catch (error) {
      toast(error.message, "error");
    } finally {
      more.disabled = false;
    }
  });

  if (!root.isConnected) return; // the route changed meanwhile: nothing live to start
  // Live, subscribed before the first read so that no change falls in between. A change to a
  // shown run updates its row at once; a new run (or a (re)connect) reads the first page
  // again, at most every half second; the counts follow every 2 s.
  let newerDue = false;
  let countsDue = false;
  unsubscribe = app.stream((change) => {
    const tr = change.run_id && shown.get(change.run_id);
    if (tr) {
      const run = { ...tr.run, status: change.status ?? tr.run.status };
      if (change.attempt !== null && change.attempt !== undefined) run.attempt = change.attempt;
      if (change.kind === "metadata" && change.data) run.metadata = change.data;
      if (!UNFINISHED.has(run.status) && !run.finished_at) run.finished_at = new Date(change.at * 1000).toISOString();
      if (change.kind === "started" && !run.started_at) run.started_at = new Date(change.at * 1000).toISOString();
      update(run);
    }
    // A run this page has not seen (created by any producer, on any daemon): newer ones on top.
    if (change.kind === "reconnected" || (!tr && change.run_id && (!newest || change.run_id > newest))) newerDue = true;
    if (change.kind !== "metadata" && change.kind !== "llm_text") countsDue = true;
  });
  let loaded = false;
  timers.push(setInterval(() => {
    if (!newerDue || !loaded) return;
    newerDue = false;
    loadNewer().catch((error) => { status.textContent = `Live update failed: ${error.message}`; });
  }, 500));
  timers.push(setInterval(() => {
    if (!countsDue) return;
    countsDue = false;
    loadCounts();
  }, 2000));

  try {
    await loadPage(null);
  } catch (error) {
    status.textContent = "";
    root.append(h("p", { class: "error", role: "alert" }, error.message));
    return;
  }
  loaded = true;
  loadCounts();
}

export function dispose() {
  if (unsubscribe) unsubscribe();
  unsubscribe = null;
  for (const timer of timers) clearInterval(timer);
  timers = [];
}
