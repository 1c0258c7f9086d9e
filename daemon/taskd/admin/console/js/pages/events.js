// Events: the recent events, newest first, with the runs each created (#/events?name=...).

import { api, fmtAge, h, jsonView } from "../lib.js";
import { fmtInt, runLink, shortId, put } from "../pagekit.js";
import { statusBadge, timeEl } from "../widgets.js";

const PAGE_SIZE = 50;
const PREVIEW = 60;

// The payload on one line, cut at PREVIEW characters (the tree opens below it).
function preview(payload) {
  const text = JSON.stringify(payload) ?? "null";
  return text.length > PREVIEW ? `${text.slice(0, PREVIEW)}…` : text;
}

function row(event) {
  const links = event.run_links || [];
  return h(
    "tr",
    { dataset: { event: event.id } },
    h("td", null, timeEl(event.created_at), h("div", { class: "muted small" }, fmtAge(event.created_at))),
    h("th", { scope: "row" }, h("a", { href: `#/events?name=${encodeURIComponent(event.name)}` }, event.name), h("div", { class: "mono small muted", title: event.id }, shortId(event.id))),
    h("td", null, h("details", null, h("summary", { class: "mono small" }, preview(event.payload)), jsonView(event.payload))),
    h("td", { class: "num" }, fmtInt(event.runs)),
    h("td", null,
      links.length === 0
        ? h("span", { class: "muted" }, "none")
        : h("ul", { class: "plain run-chips" }, links.map((run) => h("li", null, runLink(run.id), " ", run.task_id, " ", statusBadge(run.status)))),
      event.runs > links.length ? h("a", { class: "small", href: `#/runs?event=${encodeURIComponent(event.name)}` }, `${fmtInt(event.runs - links.length)} more (runs of events named ${event.name})`) : null),
  );
}

export async function render(root, params, app) {
  const name = h("input", { id: "event-name", type: "search", value: params.name || "", placeholder: "an event name" });
  const tbody = h("tbody");
  const more = h("button", { type: "button", class: "btn", hidden: true }, "Older events");
  const note = h("p", { class: "muted", "aria-live": "polite" });
  let cursor = null;

  const load = async (next) => {
    const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (params.name) query.set("name", params.name);
    if (next) query.set("cursor", next);
    const page = await api(`/api/events?${query}`);
    if (!next) tbody.replaceChildren();
    tbody.append(...page.events.map(row));
    cursor = page.next_cursor;
    more.hidden = !cursor;
    note.textContent = tbody.children.length ? "" : params.name ? `No event named ${params.name}.` : "No event yet.";
  };

  const form = h("form", { class: "filters", role: "search" },
    h("div", { class: "field" }, h("label", { for: "event-name" }, "Event name"), name),
    h("button", { type: "submit", class: "btn" }, "Show"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = name.value.trim();
    app.navigate(value ? `#/events?name=${encodeURIComponent(value)}` : "#/events");
  });
  more.addEventListener("click", async () => {
    try {
      await load(cursor);
    } catch (error) {
      note.textContent = `Could not read older events: ${error.message}`;
    }
  });

  put(root, 
    h("h1", null, "Events"),
    form,
    h("div", { class: "table-wrap" }, h("table", { class: "data" },
      h("caption", { class: "visually-hidden" }, "Events, newest first, with the runs each created"),
      h("thead", null, h("tr", null, ["Sent", "Name", "Payload", "Runs", "Runs created"].map((text, i) => h("th", { scope: "col", class: i === 3 ? "num" : null }, text)))),
      tbody)),
    more,
    note,
  );
  await load(null);
}
