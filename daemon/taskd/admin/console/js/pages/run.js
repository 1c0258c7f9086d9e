// A run's story (#/runs/<id>): what it is, a waterfall of its attempts, steps, waits and LLM
// calls, each attempt's error, its payload, output and metadata, its logs (live), its parent
// and children, what its LLM calls cost, and the actions on it.

import { api, confirmDialog, fmtDuration, h, jsonView, toast } from "../lib.js";
import { progressBar, statusBadge, timeEl } from "../widgets.js";

const TERMINAL = new Set(["completed", "failed", "canceled", "expired"]);
const LEVELS = ["debug", "info", "warning", "error"];
const POLL_MS = 2000; // logs have no change events: read again while the run is unfinished

let unsubscribe = null;
let timers = [];
let disposed = false;

const ms = (iso) => new Date(iso).getTime();

function kindOfStep(name) {
  if (name.startsWith("wait:") || name.startsWith("token:")) return "wait";
  if (name.startsWith("children:")) return "child";
  return "step";
}

const CHILD_BARS = 20; // children read for the timeline (each its own GET)

// The timeline's bars: [{kind, label, start, end, failed, running}], times in ms.
function timeline(detail, now, children) {
  const run = detail.run;
  const items = [];
  const started = run.started_at ? ms(run.started_at) : null;
  items.push({ kind: "queue", label: "queued", start: ms(run.created_at), end: started ?? (TERMINAL.has(run.status) ? ms(run.finished_at || run.created_at) : now) });
  let lastEnd = started;
  const first = run.attempts[0];
  if (started !== null && first && ms(first.started_at) - started > 50) {
    // the attempt's earlier executions: it ran, suspended on a wait, and resumed later
    items.push({ kind: "wait", label: `attempt ${first.attempt} · ran, then waited`, start: started, end: ms(first.started_at) });
  }
  for (const attempt of run.attempts) {
    items.push({
      kind: "attempt",
      label: `attempt ${attempt.attempt} · ${attempt.outcome}`,
      start: ms(attempt.started_at),
      end: ms(attempt.finished_at),
      failed: attempt.outcome !== "completed",
    });
    lastEnd = ms(attempt.finished_at);
  }
  if (run.status === "executing") {
    const since = run.attempts.length ? Math.max(lastEnd, ms(run.run_at)) : started ?? now;
    items.push({ kind: "attempt", label: `attempt ${run.attempt} · running`, start: since, end: now, running: true });
  }
  for (const step of run.steps) {
    items.push({
      kind: kindOfStep(step.name),
      label: `${step.name}${step.status === "completed" ? "" : ` · ${step.status}`}`,
      start: ms(step.started_at),
      end: ms(step.finished_at),
      failed: step.status !== "completed",
    });
  }
  if (run.status === "waiting") {
    const from = Math.max(lastEnd ?? 0, ...run.steps.map((s) => ms(s.finished_at)), started ?? 0);
    items.push({ kind: "wait", label: `waiting (wakes ${new Date(run.run_at).toLocaleString()})`, start: from || now, end: now, running: true });
  }
  for (const child of children) {
    const end = child.finished_at ? ms(child.finished_at) : now;
    items.push({
      kind: "child",
      label: `child ${child.task_id} · ${child.status}`,
      start: ms(child.created_at),
      end,
      failed: child.status === "failed" || child.status === "expired",
      running: !child.finished_at,
    });
  }
  for (const call of detail.llm_calls) {
    const start = ms(call.started_at);
    items.push({
      kind: "llm",
      label: `LLM ${call.model} · ${call.kind}${call.outcome === "ok" ? "" : ` · ${call.outcome}`}`,
      start,
      end: start + (call.latency_ms ?? 0),
      failed: call.outcome !== "ok",
    });
  }
  return items;
}

function waterfall(detail, children = []) {
  const now = Date.now();
  const items = timeline(detail, now, children);
  const t0 = Math.min(...items.map((i) => i.start));
  const t1 = Math.max(...items.map((i) => i.end), t0 + 1);
  const span = t1 - t0;
  return h(
    "ol",
    { class: "waterfall", "aria-label": `Timeline, ${fmtDuration(span / 1000)} in all` },
    items.map((item) => {
      const bar = h("span", { class: "bar", "aria-hidden": "true" });
      bar.style.left = `${((item.start - t0) / span) * 100}%`;
      bar.style.width = `${Math.max(((item.end - item.start) / span) * 100, 0.4)}%`;
      const offset = fmtDuration((item.start - t0) / 1000);
      return h(
        "li",
        { class: `kind-${item.kind}${item.failed ? " failed" : ""}` },
        h("span", { class: "label", title: item.label }, item.label),
        h("span", { class: "lane", title: `starts at +${offset}` }, bar),
        h("span", { class: "dur" }, `${fmtDuration((item.end - item.start) / 1000)}${item.running ? " …" : ""}`),
      );
    }),
  );
}

function link(run) {
  return h("span", null, h("a", { href: `#/runs/${run.id}`, class: "mono" }, run.id), " ", run.task_id, " ", statusBadge(run.status));
}

function facts(detail) {
  const run = detail.run;
  const rows = [
    ["Task", h("a", { href: `#/runs?task=${encodeURIComponent(run.task_id)}` }, run.task_id)],
    ["Status", statusBadge(run.status)],
    ["Queue", run.queue],
    ["Attempts", run.max_attempts ? `${run.attempt} of ${run.max_attempts}` : String(run.attempt)],
    ["Priority", String(run.priority)],
    ["Created", timeEl(run.created_at)],
    ["Run at", timeEl(run.run_at)],
    ["Started", timeEl(run.started_at)],
    ["Finished", timeEl(run.finished_at)],
    ["Duration", run.started_at ? fmtDuration(((run.finished_at ? ms(run.finished_at) : Date.now()) - ms(run.started_at)) / 1000) : "—"],
  ];
  if (run.concurrency_key) rows.push(["Concurrency key", run.concurrency_key]);
  if (run.version) rows.push(["Version", h("span", { class: "mono" }, run.version)]);
  if (run.tags.length) rows.push(["Tags", run.tags.join(", ")]);
  if (run.schedule_id) rows.push(["Schedule", run.schedule_id]);
  if (run.event_id) rows.push(["Event", h("span", { class: "mono" }, run.event_id)]);
  if (run.replayed_from) rows.push(["Replay of", h("a", { href: `#/runs/${run.replayed_from}`, class: "mono" }, run.replayed_from)]);
  if (run.worker_id) rows.push(["Worker", h("span", { class: "mono" }, run.worker_id)]);
  if (run.cancel_requested_at) rows.push(["Cancel asked", timeEl(run.cancel_requested_at)]);
  if (run.expires_at) rows.push(["Expires", timeEl(run.expires_at)]);
  return h("dl", { class: "facts" }, rows.map(([name, value]) => [h("dt", null, name), h("dd", null, value)]));
}

function errors(run) {
  const failed = run.attempts.filter((a) => a.error);
  if (!failed.length && !run.error) return h("p", { class: "muted" }, "No attempt failed.");
  const blocks = failed.map((a) =>
    h("section", { class: "attempt-error", "aria-label": `Error of attempt ${a.attempt}` },
      h("h3", null, `Attempt ${a.attempt} · ${a.outcome} · `, h("span", { class: "mono" }, a.error.type || "Error")),
      h("p", { class: "error-message" }, a.error.message ?? ""),
      a.error.traceback ? h("pre", { class: "traceback" }, a.error.traceback) : null),
  );
  if (run.error && !failed.length) {
    blocks.push(h("section", null, h("h3", null, h("span", { class: "mono" }, run.error.type || "Error")),
      h("p", { class: "error-message" }, run.error.message ?? ""),
      run.error.traceback ? h("pre", { class: "traceback" }, run.error.traceback) : null));
  }
  return h("div", null, blocks);
}

// "0.0013700000" -> "0.00137" (the API's decimals are exact strings: no float rounding)
function dollars(text) {
  return String(text).replace(/(\.\d*?)0+$/, "$1").replace(/\.$/, "");
}

function costs(detail) {
  const cost = detail.llm_cost;
  if (!cost || !cost.calls) return h("p", { class: "muted" }, "No LLM calls.");
  const rows = detail.llm_calls.map((c) =>
    h("tr", null,
      h("td", null, timeEl(c.started_at)), h("td", null, c.model), h("td", null, c.kind), h("td", null, c.outcome),
      h("td", { class: "num" }, String(c.input_tokens)), h("td", { class: "num" }, String(c.output_tokens)),
      h("td", { class: "num" }, c.cost_usd === null ? "—" : `$${dollars(c.cost_usd)}`),
      h("td", { class: "num" }, c.latency_ms === null ? "" : fmtDuration(c.latency_ms / 1000)), h("td", null, c.step || "")));
  return h("div", null,
    h("p", null, `${cost.calls} call${cost.calls === 1 ? "" : "s"} · ${cost.input_tokens.toLocaleString()} input and ${cost.output_tokens.toLocaleString()} output tokens · $${dollars(cost.cost_usd)}` +
      (cost.unpriced_calls ? ` (${cost.unpriced_calls} calls without a price)` : "")),
    h("div", { class: "table-wrap" }, h("table", { class: "data", "aria-label": "LLM calls" },
      h("thead", null, h("tr", null, ["At", "Model", "Kind", "Outcome", "Input", "Output", "Cost", "Latency", "Step"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", null, rows))),
    detail.llm_calls_truncated ? h("p", { class: "muted" }, "More calls than listed.") : null);
}

export async function render(root, params, app) {
  disposed = false;
  const id = params.id;
  const canAct = app.role === "admin";
  let detail;
  try {
    detail = await api(`/api/runs/${encodeURIComponent(id)}`);
  } catch (error) {
    root.append(h("h1", null, "Run"), h("p", { class: "error", role: "alert" }, error.message), h("p", null, h("a", { href: "#/runs" }, "All runs")));
    return;
  }

  const heading = h("h1");
  const progress = h("div", { class: "progress-wide" });
  const actions = h("div", { class: "toolbar", role: "group", "aria-label": "Actions on this run" });
  const factsBox = h("div");
  const timelineBox = h("div");
  const errorsBox = h("div");
  const family = h("div");
  const payloadBox = h("div");
  const outputBox = h("div");
  const metadataBox = h("div");
  const costBox = h("div");
  const logBody = h("tbody");
  const logEmpty = h("p", { class: "muted" });
  const levelSelect = h("select", { id: "log-level" },
    LEVELS.map((level) => h("option", { value: level, selected: level === "debug" }, level === "debug" ? "all" : `${level} and above`)));
  const tokensBox = h("div");
  const shownJson = { payload: undefined, output: undefined, metadata: undefined };
  const logIds = new Set();

  const editor = h("textarea", { id: "replay-payload", spellcheck: "false", "aria-describedby": "replay-problem" });
  const editorProblem = h("p", { id: "replay-problem", class: "error", role: "alert" });
  const replayEdited = canAct
    ? h("details", { class: "card" },
        h("summary", null, "Replay with an edited payload"),
        h("label", { for: "replay-payload" }, "Payload (JSON)"), editor, editorProblem,
        h("button", { type: "button", class: "btn btn-primary", onclick: replayWithEdit }, "Replay with this payload"))
    : null;
  editor.value = JSON.stringify(detail.run.payload, null, 2);

  root.append(
    ...[
    heading,
    progress,
    actions,
    canAct ? null : h("p", { class: "muted" }, "Read-only session: the actions are hidden."),
    h("div", { class: "cards" },
      h("section", { class: "card", "aria-labelledby": "h-facts" }, h("h2", { id: "h-facts" }, "Run"), factsBox),
      h("section", { class: "card", "aria-labelledby": "h-family" }, h("h2", { id: "h-family" }, "Parent and children"), family)),
    h("section", { "aria-labelledby": "h-timeline" }, h("h2", { id: "h-timeline" }, "Timeline"), timelineBox),
    h("section", { "aria-labelledby": "h-errors" }, h("h2", { id: "h-errors" }, "Errors"), errorsBox),
    tokensBox,
    h("div", { class: "cards" },
      h("section", { class: "card", "aria-labelledby": "h-payload" }, h("h2", { id: "h-payload" }, "Payload"), payloadBox),
      h("section", { class: "card", "aria-labelledby": "h-output" }, h("h2", { id: "h-output" }, "Output"), outputBox),
      h("section", { class: "card", "aria-labelledby": "h-metadata" }, h("h2", { id: "h-metadata" }, "Metadata"), metadataBox)),
    replayEdited,
    h("section", { "aria-labelledby": "h-logs" },
      h("h2", { id: "h-logs" }, "Logs"),
      h("div", { class: "toolbar" }, h("label", { for: "log-level" }, "Level"), levelSelect),
      h("div", { class: "logs", tabindex: "0", role: "region", "aria-label": "Log lines" },
        h("table", { "aria-label": "Log lines, oldest first" }, logBody)),
      logEmpty),
    h("section", { "aria-labelledby": "h-costs" }, h("h2", { id: "h-costs" }, "LLM calls, tokens and cost"), costBox),
    ].filter(Boolean),
  );

  function setJson(box, name, value) {
    const text = JSON.stringify(value ?? null);
    if (shownJson[name] === text) return; // unchanged: keep what the reader unfolded
    shownJson[name] = text;
    box.replaceChildren(value === null || value === undefined ? h("p", { class: "muted" }, "none") : jsonView(value));
  }

  function setProgress(metadata) {
    const bar = progressBar(metadata, "Progress");
    progress.replaceChildren(...(bar ? [h("label", null, "Progress "), bar, ` ${Math.round(metadata.progress * 100)}%`] : []));
  }

  function filterLogs() {
    const least = LEVELS.indexOf(levelSelect.value);
    let visible = 0;
    for (const tr of logBody.children) {
      const show = LEVELS.indexOf(tr.dataset.level) >= least;
      tr.hidden = !show;
      if (show) visible += 1;
    }
    logEmpty.textContent = visible ? "" : logBody.children.length ? "No line at this level." : "No log lines.";
  }

  function addLogs(lines, truncated) {
    for (const line of lines) {
      if (logIds.has(line.id)) continue;
      logIds.add(line.id);
      const level = String(line.level).toLowerCase();
      logBody.append(
        h("tr", { "data-level": level },
          h("td", null, timeEl(line.at)),
          h("td", { class: `level-${level.toUpperCase()}` }, level),
          h("td", null, `#${line.attempt}`),
          h("td", { class: "msg" }, line.message, line.fields ? h("span", { class: "muted" }, ` ${JSON.stringify(line.fields)}`) : null)),
      );
    }
    filterLogs();
    if (truncated) logEmpty.textContent = "More lines than shown (the first 1,000).";
  }

  let actionsFor = null;
  function actionButtons(run) {
    const key = TERMINAL.has(run.status) ? "finished" : "unfinished";
    if (actionsFor === key) return; // the same buttons: keep the keyboard focus where it is
    actionsFor = key;
    const buttons = [];
    if (canAct && !TERMINAL.has(run.status)) {
      buttons.push(h("button", { type: "button", class: "btn btn-danger", onclick: cancel }, "Cancel run"));
    }
    if (canAct) buttons.push(h("button", { type: "button", class: "btn", onclick: replay }, "Replay"));
    actions.replaceChildren(...buttons);
  }

  function tokenForms(run) {
    const tokens = run.steps.filter((s) => s.name.startsWith("token:") && s.result && s.result.id);
    if (!canAct || run.status !== "waiting" || !tokens.length) {
      tokensBox.replaceChildren();
      return;
    }
    if (tokensBox.childElementCount) return; // already there: keep what is typed
    tokensBox.replaceChildren(
      h("section", { class: "card", "aria-labelledby": "h-tokens" },
        h("h2", { id: "h-tokens" }, "Complete a wait token"),
        tokens.map((step, index) => {
          const area = h("textarea", { id: `token-output-${index}`, spellcheck: "false" });
          area.value = "{}";
          const problem = h("p", { class: "error", role: "alert" });
          const complete = async () => {
            let output;
            try {
              output = JSON.parse(area.value);
            } catch (error) {
              problem.textContent = `Not JSON: ${error.message}`;
              return;
            }
            problem.textContent = "";
            try {
              const answer = await api(`/api/tokens/${step.result.id}/complete`, { method: "POST", body: { output } });
              toast(answer.completed ? `Token ${step.name} completed.` : `Token ${step.name} was already completed or timed out.`, answer.completed ? "ok" : "info");
              refresh();
            } catch (error) {
              problem.textContent = error.message;
            }
          };
          return h("div", { class: "field" },
            h("label", { for: area.id }, `Output for ${step.name} (`, h("span", { class: "mono" }, step.result.id), ")"),
            area, problem,
            h("button", { type: "button", class: "btn btn-primary", onclick: complete }, `Complete ${step.name}`));
        })));
  }

  // The first children, read one by one for their times (a RunLink has none).
  const childRuns = new Map();
  async function readChildren(data) {
    const wanted = data.children.slice(0, CHILD_BARS).filter((c) => {
      const known = childRuns.get(c.id);
      return !known || !TERMINAL.has(known.status);
    });
    if (!wanted.length) return false;
    const read = await Promise.all(
      wanted.map((c) => api(`/api/runs/${c.id}?log_limit=0`).then((d) => d.run).catch(() => null)),
    );
    for (const child of read) if (child) childRuns.set(child.id, child);
    return true;
  }
  function drawTimeline(data) {
    const children = data.children.slice(0, CHILD_BARS).map((c) => childRuns.get(c.id)).filter(Boolean);
    timelineBox.replaceChildren(waterfall(data, children));
    if (data.steps_truncated) {
      timelineBox.append(h("p", { class: "muted" }, `The first ${data.run.steps.length} steps are drawn.`));
    }
    if (data.children.length > CHILD_BARS) {
      timelineBox.append(h("p", { class: "muted" }, `The first ${CHILD_BARS} of ${data.children.length} children are drawn.`));
    }
  }

  let shownText = null;
  function show(data) {
    detail = data;
    const run = data.run;
    const text = JSON.stringify(data);
    if (text === shownText) {
      // nothing new: only the bars of what is still running grow
      if (!TERMINAL.has(run.status)) drawTimeline(data);
      return;
    }
    shownText = text;
    heading.replaceChildren(`Run of ${run.task_id} `, statusBadge(run.status), h("br"), h("span", { class: "mono muted run-id" }, run.id));
    document.title = `${run.task_id} ${run.status} · taskd console`;
    setProgress(run.metadata);
    actionButtons(run);
    factsBox.replaceChildren(facts(data));
    drawTimeline(data);
    readChildren(data).then((changed) => {
      if (changed && !disposed && detail === data) drawTimeline(data);
    });
    errorsBox.replaceChildren(errors(run));
    family.replaceChildren(
      ...[
        h("p", null, "Parent: ", data.parent ? link(data.parent) : h("span", { class: "muted" }, "none")),
        data.children.length
          ? h("ul", { "aria-label": "Children" }, data.children.map((child) => h("li", null, link(child))))
          : h("p", { class: "muted" }, "No children."),
        data.children_truncated ? h("p", { class: "muted" }, "More children than listed.") : null,
      ].filter(Boolean),
    );
    setJson(payloadBox, "payload", run.payload);
    setJson(outputBox, "output", run.output);
    setJson(metadataBox, "metadata", run.metadata);
    addLogs(data.logs, data.logs_truncated);
    costBox.replaceChildren(costs(data));
    tokenForms(run);
  }

  let refreshing = null;
  async function refresh() {
    if (refreshing) return refreshing;
    refreshing = (async () => {
      try {
        const data = await api(`/api/runs/${encodeURIComponent(id)}`);
        if (!disposed) show(data);
      } catch (error) {
        if (!disposed) toast(`Refresh failed: ${error.message}`, "error");
      } finally {
        refreshing = null;
      }
    })();
    return refreshing;
  }

  async function cancel() {
    if (!(await confirmDialog(`Cancel this run of ${detail.run.task_id}?`, { confirm: "Cancel run", cancel: "Keep it" }))) return;
    try {
      const answer = await api(`/api/runs/${id}/cancel`, { method: "POST" });
      toast(answer.status === "canceled" ? "Run canceled." : "Cancel asked: the run stops soon.", "ok");
      refresh();
    } catch (error) {
      toast(`Cancel: ${error.message}`, "error");
    }
  }

  async function replay() {
    if (!(await confirmDialog(`Replay this run: a new run of ${detail.run.task_id} with the same payload?`, { confirm: "Replay", danger: false }))) return;
    try {
      const answer = await api(`/api/runs/${id}/replay`, { method: "POST" });
      toast("Replayed.", "ok");
      location.hash = `#/runs/${answer.id}`;
    } catch (error) {
      toast(`Replay: ${error.message}`, "error");
    }
  }

  async function replayWithEdit() {
    let payload;
    try {
      payload = JSON.parse(editor.value);
    } catch (error) {
      editorProblem.textContent = `Not JSON: ${error.message}`;
      editor.focus();
      return;
    }
    editorProblem.textContent = "";
    try {
      const answer = await api(`/api/runs/${id}/replay`, { method: "POST", body: { payload } });
      toast("Replayed with the edited payload.", "ok");
      location.hash = `#/runs/${answer.id}`;
    } catch (error) {
      editorProblem.textContent = error.message;
    }
  }

  levelSelect.addEventListener("change", filterLogs);
  show(detail);
  if (!root.isConnected) return; // the route changed meanwhile: nothing live to start

  // Live: a change of this run (status, metadata) shows at once; the progress bar follows
  // metadata changes without a read; logs are read again while the run is unfinished.
  let due = false; // set by the (first) connection too: what changed before it is read again
  unsubscribe = app.stream((change) => {
    if (change.kind === "metadata" && change.data) setProgress(change.data);
    due = true;
  }, { run: id });
  timers.push(setInterval(() => {
    if (due) {
      due = false;
      refresh();
    }
  }, 300));
  // at most one read per POLL_MS unless a change came: the interval above only reads when due
  timers.push(setInterval(() => { if (!TERMINAL.has(detail.run.status)) due = true; }, POLL_MS));
}

export function dispose() {
  disposed = true;
  if (unsubscribe) unsubscribe();
  unsubscribe = null;
  for (const timer of timers) clearInterval(timer);
  timers = [];
}
