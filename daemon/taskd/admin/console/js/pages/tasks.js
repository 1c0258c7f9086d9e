// Tasks: every registered task with its settings and payload schema (#/tasks), and one task
// with a form to trigger a run of it (#/tasks/<id>): the payload is checked against the
// task's JSON Schema in the browser before anything is sent.

import { api, fmtDuration, h, jsonView } from "../lib.js";
import { compile, describe, parseJson, pathText, skeleton } from "../jsonschema.js";
import { canAct, readOnlyNote, runLink, table, put } from "../pagekit.js";
import { timeEl } from "../widgets.js";

const DURATION = /^(\d+(\.\d+)?|(\d+(\.\d+)?(ms|s|m|h|d|w))+)$/;

function retryText(task) {
  const parts = [`${task.max_attempts} attempt${task.max_attempts === 1 ? "" : "s"}`];
  const retry = task.retry || {};
  for (const [key, value] of Object.entries(retry)) {
    if (key === "max_attempts") continue;
    parts.push(`${key.replace(/_/g, " ")} ${typeof value === "number" && /delay/.test(key) ? fmtDuration(value) : JSON.stringify(value)}`);
  }
  return parts.join(", ");
}

function scheduleText(schedule) {
  if (!schedule) return h("span", { class: "muted" }, "—");
  return h("span", null, h("code", null, schedule.cron), ` (${schedule.timezone}, catch-up ${schedule.catch_up})`);
}

function eventsCell(events) {
  if (!events || events.length === 0) return h("span", { class: "muted" }, "—");
  return h("ul", { class: "plain" }, events.map((name) => h("li", null, h("a", { href: `#/events?name=${encodeURIComponent(name)}` }, name))));
}

// The schema as a table of fields (name, type, required, constraints, description).
function schemaView(task, { open = false } = {}) {
  const schema = task.payload_schema;
  if (schema === undefined || schema === null) {
    return h("p", { class: "muted" }, "Any JSON (no payload model).");
  }
  const rows = describe(schema);
  const fields = rows.length === 1 && rows[0].path === ""
    ? h("p", null, "The payload is ", h("code", null, rows[0].type), rows[0].notes.length ? ` (${rows[0].notes.join(", ")})` : "")
    : table(
        `Payload fields of ${task.id}`,
        ["Field", "Type", "Required", "Constraints", "Description"],
        rows.map((row) => [
          h("code", null, row.path),
          row.type,
          row.required ? "required" : "optional",
          row.notes.join("; "),
          row.description,
        ]),
      );
  return h(
    "div",
    { class: "schema" },
    schema.description ? h("p", { class: "schema-doc" }, schema.description) : null,
    rows.length === 0 ? h("p", { class: "muted" }, "An object with no declared fields.") : fields,
    h("details", { class: "raw-schema", open: open ? true : null }, h("summary", null, "JSON Schema"), jsonView(schema)),
  );
}

function facts(task) {
  const item = (term, value) => [h("dt", null, term), h("dd", null, value)];
  return h(
    "dl",
    { class: "facts" },
    item("Queue", h("a", { href: `#/queues` }, task.queue)),
    item("Retry", retryText(task)),
    item("Max duration", task.max_duration === null || task.max_duration === undefined ? "—" : fmtDuration(task.max_duration)),
    item("Schedule", scheduleText(task.schedule)),
    item("Events", eventsCell(task.events)),
    item("Served here", task.served_here ? "yes" : "no (registered by another daemon)"),
    item("Registered", timeEl(task.updated_at)),
    item("Runs", h("a", { href: `#/runs?task=${encodeURIComponent(task.id)}` }, "runs of this task")),
  );
}

async function renderList(root) {
  const { tasks, truncated } = await api("/api/tasks");
  const filter = h("input", { id: "task-filter", type: "search", placeholder: "part of a task id" });
  const list = h("div", { class: "task-list" });
  const cards = tasks.map((task) => {
    const card = h(
      "section",
      { class: "card task-card", "aria-labelledby": `task-${task.id}`, dataset: { task: task.id } },
      h("h2", { id: `task-${task.id}` }, h("a", { href: `#/tasks/${encodeURIComponent(task.id)}` }, task.id)),
      facts(task),
      h("h3", null, "Payload"),
      schemaView(task),
      h("p", null, h("a", { class: "btn", href: `#/tasks/${encodeURIComponent(task.id)}` }, `Open ${task.id}`)),
    );
    return { task, card };
  });
  const apply = () => {
    const text = filter.value.trim().toLowerCase();
    list.replaceChildren(...cards.filter(({ task }) => task.id.toLowerCase().includes(text)).map(({ card }) => card));
  };
  filter.addEventListener("input", apply);
  apply();
  put(root, 
    h("h1", null, "Tasks"),
    h("div", { class: "filters" }, h("div", { class: "field" }, h("label", { for: "task-filter" }, "Filter tasks"), filter)),
    tasks.length === 0 ? h("p", { class: "muted" }, "No task is registered.") : list,
    truncated ? h("p", { class: "muted" }, "Only the first 1,000 tasks are listed.") : null,
  );
}

// One labelled input with its own problem line (aria-describedby) for the trigger options.
function optionField(id, labelText, hint, attrs = {}) {
  const problem = h("p", { id: `${id}-problem`, class: "error field-problem" });
  const help = h("p", { id: `${id}-hint`, class: "muted hint" }, hint);
  const input = h("input", { id, name: id, type: "text", "aria-describedby": `${id}-hint ${id}-problem`, ...attrs });
  return { input, problem, node: h("div", { class: "field" }, h("label", { for: id }, labelText), input, help, problem) };
}

function setProblem(field, text) {
  field.problem.textContent = text || "";
  if (text) field.input.setAttribute("aria-invalid", "true");
  else field.input.removeAttribute("aria-invalid");
}

function triggerForm(task, app) {
  const checker = compile(task.payload_schema);
  const start = task.payload_schema ? skeleton(task.payload_schema) : null;
  const payload = h("textarea", {
    id: "payload",
    name: "payload",
    spellcheck: "false",
    rows: "10",
    "aria-describedby": "payload-hint payload-problems",
  });
  payload.value = JSON.stringify(start ?? (task.payload_schema ? {} : null), null, 2);
  const payloadProblems = h("ul", { id: "payload-problems", class: "problems error", "aria-live": "polite" });
  const delay = optionField("delay", "Delay", "Seconds or a duration: 30s, 5m, 1h30m. Empty: now.", { inputmode: "text" });
  const tags = optionField("tags", "Tags", "Comma-separated.");
  const key = optionField("concurrency-key", "Concurrency key", "Runs with one key share the queue's per-key limit.", { maxlength: "200" });
  const idem = optionField("idempotency-key", "Idempotency key", "A second trigger with this key (within 24 h) creates nothing.");
  const submit = h("button", { type: "submit", class: "btn btn-primary" }, "Trigger run");
  const result = h("div", { class: "trigger-result", role: "status", "aria-live": "polite" });
  let tried = false;

  // -> {ok: true, body} or {ok: false}; shows every problem next to its field.
  const check = () => {
    let ok = true;
    payloadProblems.replaceChildren();
    payload.removeAttribute("aria-invalid");
    const parsed = parseJson(payload.value.trim() === "" ? "null" : payload.value);
    if (!parsed.ok) {
      payloadProblems.append(h("li", null, parsed.message));
      ok = false;
    } else {
      for (const problem of checker.check(parsed.value)) {
        payloadProblems.append(h("li", null, h("code", null, problem.where || "(the payload)"), `: ${problem.message}`));
        ok = false;
      }
    }
    if (!ok) payload.setAttribute("aria-invalid", "true");
    const delayText = delay.input.value.trim().toLowerCase().replace(/ /g, "");
    setProblem(delay, delayText && !DURATION.test(delayText) ? "Not a duration: use seconds or e.g. 500ms, 10s, 5m, 1h30m, 2d." : "");
    if (delay.problem.textContent) ok = false;
    const tagList = tags.input.value.split(",").map((t) => t.trim()).filter(Boolean);
    setProblem(key, "");
    setProblem(idem, "");
    setProblem(tags, "");
    if (!ok) return { ok };
    const body = { payload: parsed.value };
    if (delayText) body.delay = /^\d+(\.\d+)?$/.test(delayText) ? Number(delayText) : delayText;
    if (tagList.length) body.tags = tagList;
    if (key.input.value.trim()) body.concurrency_key = key.input.value.trim();
    if (idem.input.value.trim()) body.idempotency_key = idem.input.value.trim();
    return { ok, body };
  };

  // The server's 422: each problem next to its field (payload ones under the payload).
  const showServerProblems = (error) => {
    const detail = Array.isArray(error.detail) ? error.detail : [];
    const payloadError = /^payload/.test(error.message);
    const fields = { delay, tags, concurrency_key: key, idempotency_key: idem };
    let placed = false;
    for (const item of detail) {
      const loc = Array.isArray(item.loc) ? item.loc.map(String) : [];
      const msg = String(item.msg || "").replace(/^Value error, /, "");
      if (!payloadError && fields[loc[0]]) {
        setProblem(fields[loc[0]], msg);
        placed = true;
      } else {
        const parts = payloadError ? loc : loc[0] === "payload" ? loc.slice(1) : loc;
        payloadProblems.append(h("li", null, h("code", null, pathText(parts) || "(the payload)"), `: ${msg}`));
        payload.setAttribute("aria-invalid", "true");
        placed = true;
      }
    }
    if (!placed) payloadProblems.append(h("li", null, `The daemon refused the trigger: ${error.message}`));
  };

  const form = h(
    "form",
    { class: "trigger-form", novalidate: true, "aria-labelledby": "trigger-title" },
    h("h2", { id: "trigger-title" }, "Trigger a run"),
    h(
      "div",
      { class: "field" },
      h("label", { for: "payload" }, "Payload (JSON)"),
      payload,
      h("p", { id: "payload-hint", class: "muted hint" },
        task.payload_schema ? "Checked against the task's JSON Schema before it is sent." : "Any JSON: this task declares no payload model."),
      payloadProblems,
    ),
    h("div", { class: "trigger-options" }, delay.node, tags.node, key.node, idem.node),
    h("div", { class: "toolbar" }, submit),
    result,
  );
  const recheck = () => {
    if (tried) check();
  };
  for (const input of [payload, delay.input, tags.input, key.input, idem.input]) input.addEventListener("input", recheck);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    tried = true;
    result.replaceChildren();
    const { ok, body } = check();
    if (!ok) {
      result.replaceChildren(h("span", { class: "error" }, "Not sent: fix the problems shown above."));
      (payload.getAttribute("aria-invalid") ? payload : form.querySelector("[aria-invalid]") || payload).focus();
      return;
    }
    submit.disabled = true;
    try {
      const answer = await app.api(`/api/tasks/${encodeURIComponent(task.id)}/trigger`, { method: "POST", body });
      result.replaceChildren("Run created: ", runLink(answer.id, answer.id));
    } catch (error) {
      if (error.status === 422) showServerProblems(error);
      result.replaceChildren(h("span", { class: "error" }, `Not triggered: ${error.message}`));
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

async function renderTask(root, id, app) {
  const { tasks } = await api("/api/tasks");
  const task = tasks.find((t) => t.id === id);
  put(root, h("p", { class: "crumbs" }, h("a", { href: "#/tasks" }, "Tasks"), " / ", id));
  if (!task) {
    put(root, h("h1", null, id), h("p", { class: "error", role: "alert" }, `No task with id ${id} is registered.`));
    return;
  }
  put(root, 
    h("h1", null, task.id),
    h("div", { class: "cards" },
      h("section", { class: "card", "aria-labelledby": "settings-title" }, h("h2", { id: "settings-title" }, "Settings"), facts(task)),
      h("section", { class: "card", "aria-labelledby": "schema-title" }, h("h2", { id: "schema-title" }, "Payload schema"), schemaView(task, { open: false }))),
    canAct(app) ? h("section", { class: "card trigger-card" }, triggerForm(task, app)) : readOnlyNote(app, "triggering runs"),
  );
}

export async function render(root, params, app) {
  if (params.id !== undefined) await renderTask(root, params.id, app);
  else await renderList(root);
}
