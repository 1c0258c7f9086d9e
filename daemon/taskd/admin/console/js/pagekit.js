// Small pieces the fleet pages share (tasks, queues, schedules, workers, events, costs,
// charts), built on lib.js. Every value from the API becomes text.

import { h } from "./lib.js";

// The read-only role sees every page but acts on none: actions are not drawn for it.
export function canAct(app) {
  return app.role !== "read";
}

export function readOnlyNote(app, what = "actions") {
  if (canAct(app)) return null;
  return h("p", { class: "notice" }, `Read-only session: ${what} are not available.`);
}

// "0194c2e1…a3f0" for a UUID.
export function shortId(id) {
  const text = String(id);
  return text.length > 16 ? `${text.slice(0, 8)}…${text.slice(-4)}` : text;
}

export function runLink(id, text) {
  return h("a", { href: `#/runs/${id}`, class: "mono" }, text || shortId(id));
}

const pad = (n) => String(n).padStart(2, "0");

// "2026-12-02 13:05:09 UTC".
export function fmtUtc(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return (
    `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ` +
    `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} UTC`
  );
}

// The time in an IANA zone ("2026-12-02 14:05 Europe/Paris"); "" when the zone is unknown.
export function fmtInZone(iso, zone) {
  if (!iso || !zone) return "";
  try {
    const parts = Object.fromEntries(
      new Intl.DateTimeFormat("en-CA", {
        timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit",
        hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
      })
        .formatToParts(new Date(iso))
        .map((p) => [p.type, p.value]),
    );
    return `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute}:${parts.second} ${zone}`;
  } catch {
    return "";
  }
}

// Dollars from the API's decimal strings: "$0.0123", "$12.40".
export function fmtUsd(value) {
  const n = Number(value);
  if (value === null || value === undefined || Number.isNaN(n)) return "—";
  if (n !== 0 && Math.abs(n) < 0.1) return `$${n.toFixed(4)}`;
  return `$${n.toFixed(2)}`;
}

export function fmtInt(value) {
  return value === null || value === undefined ? "—" : Number(value).toLocaleString("en-US");
}

// A table with a caption (for screen readers) and column headers; rows: arrays of cells.
export function table(caption, headers, rows, { numeric = [], captionVisible = false } = {}) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "data" },
      h("caption", { class: captionVisible ? "caption" : "visually-hidden" }, caption),
      h("thead", null, h("tr", null, headers.map((text, i) => h("th", { scope: "col", class: numeric.includes(i) ? "num" : null }, text)))),
      h("tbody", null, rows.map((cells) => (cells instanceof Node ? cells : h("tr", null, cells.map((cell, i) => h("td", { class: numeric.includes(i) ? "num" : null }, cell)))))),
    ),
  );
}

// Element.append would turn null into the text "null": only nodes and strings go in.
function present(children) {
  return children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false);
}

// Append what is there of `children` to `parent`.
export function put(parent, ...children) {
  parent.append(...present(children));
  return parent;
}

// Put `children` in `container`, keeping the keyboard focus on the element with the same
// data-key (a refresh must not throw the operator's focus away).
export function replaceKeepingFocus(container, ...children) {
  const active = document.activeElement;
  const key = active && container.contains(active) ? active.dataset.key : undefined;
  container.replaceChildren(...present(children));
  if (key !== undefined) {
    const again = container.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (again) again.focus();
  }
}

// A status line: role=status, for what an action did (the new run's link...).
export function statusLine() {
  return h("p", { class: "status-line", role: "status", "aria-live": "polite" });
}

// The timers of one render of a page, stopped by dispose(). `root` is the element the render
// fills: once it left the document (the route changed while the render awaited the API), no
// timer starts and a running one stops.
export function lifetime(root) {
  const stops = [];
  let ended = false; // dispose() came first: a render still awaiting starts nothing
  const gone = () => ended || (Boolean(root) && !root.isConnected);
  return {
    every(ms, fn) {
      if (gone()) return;
      const id = setInterval(() => {
        if (gone()) clearInterval(id);
        else fn();
      }, ms);
      stops.push(() => clearInterval(id));
    },
    add(stop) {
      stops.push(stop);
    },
    end() {
      ended = true;
      while (stops.length) {
        try {
          stops.pop()();
        } catch (error) {
          console.error(error);
        }
      }
    },
  };
}

// A button that runs an async action once at a time (disabled meanwhile); errors become a
// message in `status` (role=status) and stay there.
export function actionButton(text, attrs, action, status) {
  const button = h("button", { type: "button", class: "btn", ...attrs }, text);
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await action();
    } catch (error) {
      if (status) {
        status.replaceChildren(h("span", { class: "error" }, `${text} failed: ${error.message}`));
      }
    } finally {
      if (button.isConnected) button.disabled = false;
    }
  });
  return button;
}
