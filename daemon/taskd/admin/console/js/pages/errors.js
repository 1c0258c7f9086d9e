// Errors grouped (#/errors?since=24h&task=...): failed attempts by fingerprint (exception
// type, normalised message, top frame of task code), with their counts over time.

import { api, chart, fmtAge, h } from "../lib.js";
import { timeEl } from "../widgets.js";

const RANGES = [["1h", "last hour"], ["24h", "last 24 hours"], ["7d", "last 7 days"], ["30d", "last 30 days"]];

let unsubscribe = null;

export async function render(root, params, app) {
  const since = params.since || "24h";
  const task = params.task || "";
  const range = h("select", { id: "e-since", name: "since" },
    RANGES.map(([value, label]) => h("option", { value, selected: value === since }, label)));
  const taskInput = h("input", { id: "e-task", name: "task", value: task, autocomplete: "off" });
  const form = h("form", { class: "filters", "aria-label": "Filter error groups" },
    h("div", { class: "field" }, h("label", { for: "e-since" }, "Since"), range),
    h("div", { class: "field" }, h("label", { for: "e-task" }, "Task"), taskInput),
    h("div", { class: "toolbar" }, h("button", { type: "submit", class: "btn btn-primary" }, "Apply")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = new URLSearchParams({ since: range.value });
    if (taskInput.value.trim()) query.set("task", taskInput.value.trim());
    location.hash = `#/errors?${query}`;
  });
  const list = h("div", { "aria-live": "polite" });
  root.append(h("h1", null, "Errors"), form, list);

  const query = new URLSearchParams({ since });
  if (task) query.set("task", task);

  async function load() {
    let answer;
    try {
      answer = await api(`/api/errors?${query}`);
    } catch (error) {
      list.replaceChildren(h("p", { class: "error", role: "alert" }, error.message));
      return;
    }
    if (!answer.groups.length) {
      list.replaceChildren(h("p", { class: "muted" }, "No failed attempt in this range."));
      return;
    }
    list.replaceChildren(
      h("div", { class: "table-wrap" },
        h("table", { class: "data errors", "aria-label": "Error groups, most recently seen first" },
          h("thead", null, h("tr", null,
            h("th", { scope: "col" }, "Error"), h("th", { scope: "col", class: "num" }, "Failures"),
            h("th", { scope: "col", class: "num" }, "Runs"), h("th", { scope: "col" }, "Over time"),
            h("th", { scope: "col" }, "First seen"), h("th", { scope: "col" }, "Last seen"),
            h("th", { scope: "col" }, "Tasks"))),
          h("tbody", null, answer.groups.map((group) => {
            const spark = h("div", { class: "sparkline" });
            chart(spark, [{ name: "failures", kind: "bar", points: group.series.map((b) => ({ x: b.at, y: b.count })) }],
              { width: 240, height: 40, compact: true, title: `Failures of ${group.type} over time, ${RANGES.find(([v]) => v === since)?.[1] || since}` });
            return h("tr", { "data-fingerprint": group.fingerprint },
              h("td", null,
                h("div", null, h("strong", { class: "mono" }, group.type), " ", h("span", null, group.message)),
                group.frame ? h("div", { class: "mono muted" }, group.frame) : null,
                h("a", { href: `#/runs?error_group=${encodeURIComponent(group.fingerprint)}` }, `Runs of this error (${group.fingerprint})`)),
              h("td", { class: "num" }, group.count.toLocaleString()),
              h("td", { class: "num" }, group.runs.toLocaleString()),
              h("td", null, spark, h("div", { class: "muted spark-range" }, `peak ${Math.max(0, ...group.series.map((b) => b.count))} per bucket`)),
              h("td", null, timeEl(group.first_seen)),
              h("td", null, timeEl(group.last_seen), h("div", { class: "muted" }, fmtAge(group.last_seen))),
              h("td", null, group.tasks.map((name, i) => [i ? ", " : "", h("a", { href: `#/runs?task=${encodeURIComponent(name)}&status=failed` }, name)])));
          })))),
    );
  }

  await load();
  if (!root.isConnected) return; // the route changed meanwhile: nothing live to start
  // A run failing anywhere in the fleet: read the groups again (at most every 2 s).
  let due = false;
  const timer = setInterval(() => {
    if (due) {
      due = false;
      load();
    }
  }, 2000);
  const off = app.stream((change) => {
    if (change.kind === "failed" || change.kind === "attempt_failed" || change.kind === "reconnected") due = true;
  });
  unsubscribe = () => {
    off();
    clearInterval(timer);
  };
}

export function dispose() {
  if (unsubscribe) unsubscribe();
  unsubscribe = null;
}
