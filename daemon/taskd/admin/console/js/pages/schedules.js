// Schedules: cron, time zone, the next fire in local time and UTC, the last fire and the last
// runs; pause / resume and fire now.

import { api, fmtAge, h } from "../lib.js";
import { actionButton, canAct, fmtInZone, fmtUtc, lifetime, readOnlyNote, replaceKeepingFocus, runLink, statusLine, put } from "../pagekit.js";
import { statusBadge, timeEl } from "../widgets.js";

const LAST_RUNS = 5;
const LAST_RUNS_FOR = 100; // schedules whose last runs are read (the others link to their runs)
const REFRESH_MS = 15000;
let life = null;

function nextFire(schedule) {
  if (!schedule.active) return h("span", { class: "muted" }, "paused");
  if (!schedule.next_fire_at) return h("span", { class: "muted" }, "—");
  const zone = fmtInZone(schedule.next_fire_at, schedule.timezone);
  return h(
    "div",
    { class: "next-fire" },
    h("div", null, timeEl(schedule.next_fire_at), " local ", h("span", { class: "muted age", dataset: { at: schedule.next_fire_at } }, `(${fmtAge(schedule.next_fire_at)})`)),
    h("div", { class: "mono small" }, fmtUtc(schedule.next_fire_at)),
    zone && schedule.timezone !== "UTC" ? h("div", { class: "mono small" }, zone) : null,
  );
}

function lastRunsCell(schedule) {
  const cell = h("td", { class: "last-runs", dataset: { schedule: schedule.id } }, h("span", { class: "muted" }, "…"));
  return cell;
}

async function fillLastRuns(cell, schedule) {
  const query = new URLSearchParams({ schedule: schedule.id, limit: String(LAST_RUNS) });
  try {
    const { runs } = await api(`/api/runs?${query}`);
    cell.replaceChildren();
    put(
      cell,
      runs.length === 0
        ? h("span", { class: "muted" }, "none")
        : h("ul", { class: "plain run-chips" }, runs.map((run) => h("li", null, runLink(run.id), " ", statusBadge(run.status), " ", h("span", { class: "muted small" }, fmtAge(run.created_at))))),
      runs.length ? h("a", { class: "small", href: `#/runs?schedule=${encodeURIComponent(schedule.id)}` }, "all runs") : null,
    );
  } catch (error) {
    cell.replaceChildren(h("span", { class: "error" }, `Could not read: ${error.message}`));
  }
}

export async function render(root, params, app) {
  const mine = lifetime(root);
  life = mine;
  const status = statusLine();
  const body = h("div");
  const updated = h("p", { class: "muted small" });

  const draw = (schedules, truncated) => {
    const rows = schedules.map((schedule) => {
      const actions = canAct(app)
        ? h("td", null, h("div", { class: "row-actions" },
            actionButton(schedule.active ? "Pause" : "Resume", {
              "data-key": `toggle:${schedule.id}`,
              "aria-label": `${schedule.active ? "Pause" : "Resume"} schedule ${schedule.id}`,
            }, async () => {
              await app.api(`/api/schedules/${encodeURIComponent(schedule.id)}`, { method: "PATCH", body: { active: !schedule.active } });
              status.textContent = `Schedule ${schedule.id} ${schedule.active ? "paused" : "resumed"}.`;
              await refresh();
            }, status),
            actionButton("Fire now", { "data-key": `fire:${schedule.id}`, "aria-label": `Fire schedule ${schedule.id} now` }, async () => {
              const fired = await app.api(`/api/schedules/${encodeURIComponent(schedule.id)}/trigger`, { method: "POST" });
              status.replaceChildren(`Schedule ${schedule.id} fired: run `, runLink(fired.id, fired.id));
              await refresh();
            }, status)))
        : null;
      return h(
        "tr",
        { dataset: { scheduleId: schedule.id } },
        h("th", { scope: "row" }, h("div", { class: "mono" }, schedule.id), h("div", { class: "small" }, "task ", h("a", { href: `#/tasks/${encodeURIComponent(schedule.task_id)}` }, schedule.task_id)),
          schedule.declared ? h("div", { class: "muted small" }, "declared in code") : null),
        h("td", null, h("code", null, schedule.cron), h("div", { class: "muted small" }, `catch-up ${schedule.catch_up}`)),
        h("td", null, schedule.timezone),
        h("td", null, schedule.active ? h("span", { class: "badge status-completed" }, "active") : h("span", { class: "badge status-waiting" }, "paused")),
        h("td", null, nextFire(schedule)),
        h("td", null, schedule.last_fired_at ? timeEl(schedule.last_fired_at) : h("span", { class: "muted" }, "never"),
          schedule.last_run_id ? h("div", { class: "small" }, "run ", runLink(schedule.last_run_id)) : null),
        lastRunsCell(schedule),
        actions,
      );
    });
    const headers = ["Schedule", "Cron", "Time zone", "State", "Next fire (local, UTC)", "Last fired", "Last runs"];
    if (canAct(app)) headers.push("Actions");
    const node = schedules.length === 0
      ? h("p", { class: "muted" }, "No schedule yet.")
      : h("div", { class: "table-wrap" }, h("table", { class: "data" },
          h("caption", { class: "visually-hidden" }, "Cron schedules"),
          h("thead", null, h("tr", null, headers.map((text) => h("th", { scope: "col" }, text)))),
          h("tbody", null, rows)));
    replaceKeepingFocus(body, node, truncated ? h("p", { class: "muted" }, "Only the first 1,000 schedules are listed.") : null);
    // the last runs, a few schedules at a time
    const cells = [...body.querySelectorAll("td.last-runs")];
    const queue = schedules.slice(0, LAST_RUNS_FOR).map((schedule, i) => [cells[i], schedule]);
    cells.slice(LAST_RUNS_FOR).forEach((cell, i) => {
      const id = schedules[LAST_RUNS_FOR + i].id;
      cell.replaceChildren(h("a", { class: "small", href: `#/runs?schedule=${encodeURIComponent(id)}` }, "runs"));
    });
    const worker = async () => {
      while (queue.length) {
        const [cell, schedule] = queue.shift();
        await fillLastRuns(cell, schedule);
      }
    };
    return Promise.all([worker(), worker(), worker(), worker()]);
  };

  const refresh = async () => {
    try {
      const { schedules, truncated } = await api("/api/schedules");
      await draw(schedules, truncated);
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}. Times are in this browser's time zone and in UTC.`;
    } catch (error) {
      updated.textContent = `Refresh failed: ${error.message}`;
    }
  };

  put(root, h("h1", null, "Schedules"), readOnlyNote(app, "pause, resume and fire now"), status, body, updated);
  const { schedules, truncated } = await api("/api/schedules");
  await draw(schedules, truncated);
  updated.textContent = `Updated ${new Date().toLocaleTimeString()}. Times are in this browser's time zone and in UTC.`;
  mine.every(REFRESH_MS, refresh);
  mine.every(1000, () => {
    for (const el of root.querySelectorAll(".age[data-at]")) el.textContent = `(${fmtAge(el.dataset.at)})`;
  });
}

export function dispose() {
  if (life) life.end();
  life = null;
}
