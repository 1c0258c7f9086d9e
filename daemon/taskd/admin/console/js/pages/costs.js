// Costs of the LLM calls: spend and tokens per day by task, tenant (concurrency key), tag or
// model; the top spenders; every budget and how close it is (#/costs?days=30&by=task).

import { api, chart, h } from "../lib.js";
import { fmtInt, fmtUsd, table, put } from "../pagekit.js";
import { timeEl } from "../widgets.js";

const DIMENSIONS = { task: "task", key: "tenant (concurrency key)", tag: "tag", model: "model" };
const COLUMN = { task: "Task", key: "Tenant", tag: "Tag", model: "Model" };
const DAYS = ["7", "30", "90", "400"];
const TOP = 10;
const SERIES = 5; // groups drawn in the chart (the API sums the others in one more)

function runsLink(by, name) {
  if (name === null || name === undefined) return null;
  const filter = { task: "task", key: "key", tag: "tag" }[by];
  if (!filter) return null;
  return h("a", { class: "small", href: `#/runs?${filter}=${encodeURIComponent(name)}` }, "runs");
}

function groupName(name) {
  return name === null || name === undefined || name === "" ? h("span", { class: "muted" }, "(none)") : name;
}

function section(id, title, ...children) {
  return h("section", { class: "card", "aria-labelledby": id }, h("h2", { id }, title), ...children);
}

async function fill(target, load) {
  try {
    target.replaceChildren(...[].concat(await load()));
  } catch (error) {
    target.replaceChildren(h("p", { class: "error", role: "alert" }, `Could not read: ${error.message}`));
  }
}

// A daily row's group: null is the other groups summed (past the top ones), "" no key/tag.
function dailyLabel(group) {
  return group === null || group === undefined ? "other groups" : group === "" ? "(none)" : group;
}

async function daily(days, by) {
  const answer = await api(`/api/costs/daily?${new URLSearchParams({ days, by, top: String(SERIES) })}`);
  const rows = answer.days || [];
  if (rows.length === 0) return [h("p", { class: "muted" }, `No LLM call in the last ${days} days.`)];
  const totals = new Map();
  for (const row of rows) totals.set(row.group, (totals.get(row.group) || 0) + Number(row.cost_usd));
  // the top groups by cost, the other groups (null) last
  const groups = [...totals.entries()]
    .sort((a, b) => (a[0] === null) - (b[0] === null) || b[1] - a[1])
    .map(([group]) => group);
  // every UTC day of the range (the API leaves out days without calls: they are zero)
  const today = Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), new Date().getUTCDate());
  const dayList = Array.from({ length: Number(days) }, (_, i) => new Date(today - (Number(days) - 1 - i) * 86400000).toISOString().slice(0, 10));
  const byKey = new Map(rows.map((row) => [`${row.day}\u0000${row.group}`, row]));
  const series = groups.map((group) => ({
    name: dailyLabel(group),
    kind: "line",
    points: dayList.map((day) => ({ x: `${day}T00:00:00Z`, y: Number((byKey.get(`${day}\u0000${group}`) || {}).cost_usd || 0) })),
  }));
  const chartBox = h("div", { class: "chart-box" });
  chart(chartBox, series, { title: `Spend in US dollars per day by ${DIMENSIONS[by]}, last ${days} days`, xFormat: (x) => new Date(x).toISOString().slice(5, 10) });
  const legend = h("ul", { class: "legend" }, series.map((one, i) => h("li", null, h("span", { class: `swatch chart-s${i % 6}`, "aria-hidden": "true" }), one.name)));
  const detail = h("details", null, h("summary", null, "Every day and group"),
    table(`Spend and tokens per day by ${DIMENSIONS[by]}`, ["Day", COLUMN[by], "Spend", "Input tokens", "Output tokens", "Calls"],
      [...rows].sort((a, b) => (a.day < b.day ? 1 : a.day > b.day ? -1 : Number(b.cost_usd) - Number(a.cost_usd))).map((row) => [
        row.day, h("span", null, dailyLabel(row.group), " ", row.group ? runsLink(by, row.group) : null), fmtUsd(row.cost_usd), fmtInt(row.input_tokens), fmtInt(row.output_tokens), fmtInt(row.calls),
      ]), { numeric: [2, 3, 4, 5] }));
  return [h("p", null, `Total: ${fmtUsd(answer.total_usd)} over ${days} days.`), chartBox, legend, detail];
}

async function topSpenders(days, by) {
  const answer = await api(`/api/costs?${new URLSearchParams({ by, since: `${days}d`, limit: String(TOP) })}`);
  if (answer.rows.length === 0) return [h("p", { class: "muted" }, "No spend.")];
  const total = Number(answer.total.cost_usd) || 0;
  return [
    table(`Top ${TOP} by ${DIMENSIONS[by]}, last ${days} days`, [COLUMN[by], "Spend", "Share", "Tokens in", "Tokens out", "Calls", h("span", { class: "visually-hidden" }, "Links")],
      answer.rows.map((row) => [
        groupName(row.name), fmtUsd(row.cost_usd), total ? `${Math.round((Number(row.cost_usd) / total) * 100)}%` : "—",
        fmtInt(row.input_tokens), fmtInt(row.output_tokens), fmtInt(row.calls), runsLink(by, row.name),
      ]), { numeric: [1, 2, 3, 4, 5] }),
    h("p", { class: "muted small" }, `All calls: ${fmtUsd(answer.total.cost_usd)}, ${fmtInt(answer.total.calls)} calls` +
      (answer.total.unpriced_calls ? `, ${fmtInt(answer.total.unpriced_calls)} of a model without a price` : "") + "."),
  ];
}

async function budgets() {
  const { budgets: list } = await api("/api/budgets");
  if (list.length === 0) return [h("p", { class: "muted" }, "No budget is set (queue llm budgets, task budget_usd).")];
  const rows = list.map((budget, i) => {
    const limit = Number(budget.limit_usd);
    const spent = Number(budget.spent_usd);
    const share = limit > 0 ? spent / limit : 0;
    const label = `${budget.scope} ${budget.name}${budget.key ? ` key ${budget.key}` : ""}`;
    const link = budget.scope === "queue"
      ? `#/runs?queue=${encodeURIComponent(budget.name)}${budget.key ? `&key=${encodeURIComponent(budget.key)}` : ""}`
      : `#/runs?task=${encodeURIComponent(budget.name)}&status=executing`;
    return [
      h("span", null, budget.scope),
      h("span", null, budget.name, budget.key ? h("div", { class: "small" }, "key ", h("code", null, budget.key)) : null),
      h("span", null, `${fmtUsd(budget.limit_usd)}${budget.per ? ` per ${budget.per}` : " per run"}`),
      h("div", { class: "budget" },
        h("meter", { id: `budget-${i}`, min: "0", max: String(limit || 1), low: String(limit * 0.75), high: String(limit * 0.9), optimum: "0", value: String(spent), "aria-label": `Spent of the budget of ${label}` }),
        h("span", { class: share >= 1 ? "error" : null }, ` ${fmtUsd(budget.spent_usd)} (${Math.round(share * 100)}%)`)),
      budget.window_start ? timeEl(budget.window_start) : h("span", { class: "muted" }, "—"),
      budget.on_exceed,
      h("a", { class: "small", href: link }, "runs"),
    ];
  });
  return [table("Budgets and their spend", ["Scope", "Name", "Limit", "Spent", "Window since", "On exceed", h("span", { class: "visually-hidden" }, "Links")], rows)];
}

export async function render(root, params, app) {
  const days = DAYS.includes(params.days) ? params.days : "30";
  const by = params.by in DIMENSIONS ? params.by : "task";
  const daysSelect = h("select", { id: "cost-days" }, DAYS.map((d) => h("option", { value: d, selected: d === days }, `last ${d} days`)));
  const bySelect = h("select", { id: "cost-by" }, Object.entries(DIMENSIONS).map(([value, text]) => h("option", { value, selected: value === by }, text)));
  const go = () => app.navigate(`#/costs?days=${daysSelect.value}&by=${bySelect.value}`);
  daysSelect.addEventListener("change", go);
  bySelect.addEventListener("change", go);
  const dailyBox = h("div", null, h("p", { class: "muted" }, "Loading…"));
  const keysBox = h("div", null, h("p", { class: "muted" }, "Loading…"));
  const tasksBox = h("div", null, h("p", { class: "muted" }, "Loading…"));
  const budgetsBox = h("div", null, h("p", { class: "muted" }, "Loading…"));
  put(root, 
    h("h1", null, "Costs"),
    h("div", { class: "filters" },
      h("div", { class: "field" }, h("label", { for: "cost-days" }, "Period"), daysSelect),
      h("div", { class: "field" }, h("label", { for: "cost-by" }, "Per day by"), bySelect)),
    h("div", { class: "stack" },
      section("costs-daily", `Spend per day by ${DIMENSIONS[by]}`, dailyBox),
      h("div", { class: "cards" },
        section("costs-keys", "Top tenants (concurrency keys)", keysBox),
        section("costs-tasks", "Top tasks", tasksBox)),
      section("costs-budgets", "Budgets", budgetsBox)),
  );
  await Promise.all([
    fill(dailyBox, () => daily(days, by)),
    fill(keysBox, () => topSpenders(days, "key")),
    fill(tasksBox, () => topSpenders(days, "task")),
    fill(budgetsBox, budgets),
  ]);
}
