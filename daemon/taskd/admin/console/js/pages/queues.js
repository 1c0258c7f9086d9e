// Queues over all daemons: depth (due, delayed), the oldest due run's age, runs executing,
// limits, pause; pause / resume, set limits and reset them; the LLM models backed off.

import { api, fmtAge, fmtDuration, h } from "../lib.js";
import { actionButton, canAct, fmtInt, lifetime, readOnlyNote, replaceKeepingFocus, statusLine, table, put } from "../pagekit.js";
import { timeEl } from "../widgets.js";

const REFRESH_MS = 5000;
let life = null;

function limitsText(queue) {
  const parts = [];
  parts.push(queue.concurrency === null || queue.concurrency === undefined ? "concurrency: no limit" : `concurrency ${queue.concurrency}`);
  if (queue.concurrency_limit_per_key !== null && queue.concurrency_limit_per_key !== undefined) parts.push(`${queue.concurrency_limit_per_key} per key`);
  if (queue.rate_limit !== null && queue.rate_limit !== undefined) parts.push(`${queue.rate_limit} starts / ${fmtDuration(queue.rate_period)}`);
  if (queue.llm_rate) parts.push(`LLM ${queue.llm_rate}`);
  if (queue.llm_budget) parts.push(`budget ${queue.llm_budget}`);
  return parts.join(", ");
}

function numberField(id, labelText, value, attrs = {}) {
  const input = h("input", {
    id, type: "number", min: attrs.min ?? "1", step: attrs.step ?? "1", inputmode: "numeric",
    value: value === null || value === undefined ? "" : String(value), placeholder: "no limit",
  });
  return { input, node: h("div", { class: "field" }, h("label", { for: id }, labelText), input) };
}

// The limits editor of one queue: PATCH /api/queues/{name} (empty = no limit), reset.
function limitsForm(queue, app, status, done) {
  const base = `limits-${queue.queue.replace(/[^A-Za-z0-9_-]/g, "_")}`;
  const concurrency = numberField(`${base}-concurrency`, "Concurrency", queue.concurrency);
  const perKey = numberField(`${base}-per-key`, "Per concurrency key", queue.concurrency_limit_per_key);
  const rate = numberField(`${base}-rate`, "Starts per period", queue.rate_limit);
  const period = numberField(`${base}-period`, "Period (seconds)", queue.rate_period, { min: "0.001", step: "any" });
  const problem = h("p", { class: "error", role: "alert" });
  const read = (field, integer) => {
    const text = field.input.value.trim();
    if (text === "") return null;
    const n = Number(text);
    if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) {
      throw new Error(`${field.node.querySelector("label").textContent}: ${integer ? "a whole number ≥ 1" : "a number > 0"}, or empty for no limit`);
    }
    return n;
  };
  const form = h(
    "form",
    { class: "limits-form", "aria-label": `Limits of queue ${queue.queue}` },
    concurrency.node, perKey.node, rate.node, period.node,
    h("div", { class: "toolbar" },
      h("button", { type: "submit", class: "btn btn-primary" }, "Save limits"),
      queue.overridden
        ? actionButton("Reset to declared", {}, async () => {
            await app.api(`/api/queues/${encodeURIComponent(queue.queue)}/reset`, { method: "POST" });
            status.textContent = `Queue ${queue.queue}: limits back to the declared ones.`;
            done();
          }, status)
        : null,
      h("button", { type: "button", class: "btn", onclick: () => done() }, "Close")),
    problem,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    problem.textContent = "";
    let body;
    try {
      body = {
        concurrency: read(concurrency, true),
        concurrency_per_key: read(perKey, true),
        rate_limit: read(rate, true),
        rate_period: read(period, false),
      };
      if ((body.rate_limit === null) !== (body.rate_period === null)) throw new Error("A rate limit needs both starts and a period.");
    } catch (error) {
      problem.textContent = error.message;
      return;
    }
    try {
      await app.api(`/api/queues/${encodeURIComponent(queue.queue)}`, { method: "PATCH", body });
      status.textContent = `Queue ${queue.queue}: limits saved.`;
      done();
    } catch (error) {
      problem.textContent = `Not saved: ${error.message}`;
    }
  });
  return form;
}

export async function render(root, params, app) {
  const mine = lifetime(root);
  life = mine;
  const status = statusLine();
  const body = h("div", { class: "queues" });
  const backoffs = h("div");
  const updated = h("p", { class: "muted small" });
  let editing = null; // the queue whose limits form is open
  let last = null;

  const draw = () => {
    const { queues, truncated } = last;
    const rows = [];
    for (const queue of queues) {
      const actions = canAct(app)
        ? h("div", { class: "row-actions" },
            queue.paused
              ? actionButton("Resume", { "data-key": `toggle:${queue.queue}`, "aria-label": `Resume queue ${queue.queue}` }, async () => {
                  await app.api(`/api/queues/${encodeURIComponent(queue.queue)}/resume`, { method: "POST" });
                  status.textContent = `Queue ${queue.queue} resumed.`;
                  await refresh();
                }, status)
              : actionButton("Pause", { "data-key": `toggle:${queue.queue}`, "aria-label": `Pause queue ${queue.queue}` }, async () => {
                  await app.api(`/api/queues/${encodeURIComponent(queue.queue)}/pause`, { method: "POST" });
                  status.textContent = `Queue ${queue.queue} paused: no run of it starts.`;
                  await refresh();
                }, status),
            h("button", {
              type: "button", class: "btn", "data-key": `limits:${queue.queue}`, "aria-expanded": editing === queue.queue ? "true" : "false",
              "aria-label": `Set limits of queue ${queue.queue}`,
              onclick: () => {
                editing = editing === queue.queue ? null : queue.queue;
                draw();
                const first = body.querySelector(".limits-form input");
                if (first) first.focus();
              },
            }, "Limits…"))
        : null;
      rows.push(h("tr", { dataset: { queue: queue.queue } },
        h("th", { scope: "row" }, h("a", { href: `#/runs?queue=${encodeURIComponent(queue.queue)}` }, queue.queue)),
        h("td", null, queue.paused ? h("span", { class: "badge status-waiting" }, "paused") : h("span", { class: "badge status-completed" }, "running")),
        h("td", { class: "num" }, fmtInt(queue.due)),
        h("td", { class: "num" }, fmtInt(queue.delayed)),
        h("td", null, queue.oldest_due ? h("span", { class: "age", dataset: { since: queue.oldest_due } }, fmtAge(queue.oldest_due).replace(/ ago$/, "")) : h("span", { class: "muted" }, "—")),
        h("td", { class: "num" }, fmtInt(queue.executing)),
        h("td", null, limitsText(queue), queue.overridden ? h("span", { class: "badge status-waiting", title: "Set by an operator, kept until reset" }, " set by operator") : null),
        actions ? h("td", null, actions) : null));
      if (editing === queue.queue && canAct(app)) {
        rows.push(h("tr", { class: "editor-row" }, h("td", { colspan: "8" }, limitsForm(queue, app, status, () => { editing = null; refresh(); }))));
      }
    }
    const headers = ["Queue", "State", "Due", "Delayed", "Oldest due waits", "Executing", "Limits"];
    if (canAct(app)) headers.push("Actions");
    const tableNode = table("Queues, by name", headers, rows, { numeric: [2, 3, 5] });
    replaceKeepingFocus(body, queues.length ? tableNode : h("p", { class: "muted" }, "No queue has runs or settings yet."),
      truncated ? h("p", { class: "muted" }, "Only the first 1,000 queues are listed.") : null);
    const list = last.llm_backoffs || [];
    backoffs.replaceChildren(list.length === 0
      ? h("p", { class: "muted" }, "No model is backed off.")
      : table("LLM models backed off", ["Model", "No call before", "Overloads in a row", "Reason", "Set"],
          list.map((b) => [h("code", null, b.model), h("span", null, timeEl(b.until), " ", h("span", { class: "muted" }, `(${fmtAge(b.until)})`)), fmtInt(b.overloads), b.reason, timeEl(b.updated_at)]),
          { numeric: [2] }));
    updated.textContent = `Updated ${new Date().toLocaleTimeString()}; refreshed every ${REFRESH_MS / 1000} s.`;
  };

  const refresh = async () => {
    try {
      last = await api("/api/queues");
      if (editing === null) draw(); // an open limits form is not redrawn under the operator
    } catch (error) {
      updated.textContent = `Refresh failed: ${error.message}`;
    }
  };

  put(root, 
    h("h1", null, "Queues"),
    readOnlyNote(app, "pause, resume and limits"),
    status,
    body,
    updated,
    h("h2", null, "LLM backoffs"),
    backoffs,
  );
  last = await api("/api/queues");
  draw();
  mine.every(REFRESH_MS, refresh);
  // the ages tick between refreshes
  mine.every(1000, () => {
    for (const el of root.querySelectorAll(".age[data-since]")) el.textContent = fmtAge(el.dataset.since).replace(/ ago$/, "");
  });
}

export function dispose() {
  if (life) life.end();
  life = null;
}
