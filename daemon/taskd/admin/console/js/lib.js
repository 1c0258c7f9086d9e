// The console's shared helpers. Everything a page shows that came from the API is user data
// (payloads, outputs, log lines, error messages): it always becomes a text node, never HTML.

const SVG_NS = "http://www.w3.org/2000/svg";

// ---- the API ---------------------------------------------------------------------------

// JSON in, JSON out. Throws an Error carrying the server's `error` line (and .status,
// .detail). A 401 means the session ended: back to the login page.
export async function api(path, { method = "GET", body, signal } = {}) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, signal, credentials: "same-origin" };
  if (method !== "GET" && method !== "HEAD") {
    headers["Content-Type"] = "application/json";
    if (body !== undefined) init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let data = null;
  const text = await response.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (response.status === 401 && !path.startsWith("/api/session")) {
    location.assign("/login");
  }
  if (!response.ok) {
    const message = (data && data.error) || `${response.status} ${response.statusText}`;
    const error = new Error(message);
    error.status = response.status;
    error.detail = data && data.detail;
    throw error;
  }
  return data;
}

// ---- building elements -----------------------------------------------------------------

function append(parent, child) {
  if (child === null || child === undefined || child === false || child === true) return;
  if (Array.isArray(child)) {
    for (const each of child) append(parent, each);
  } else if (child instanceof Node) {
    parent.appendChild(child);
  } else {
    parent.appendChild(document.createTextNode(String(child))); // never HTML
  }
}

function build(element, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === "style" && typeof value === "object") {
      Object.assign(element.style, value); // CSSOM: allowed by the CSP, unlike style="..."
    } else if (name === "dataset" && typeof value === "object") {
      Object.assign(element.dataset, value);
    } else if (name === "value" && "value" in element) {
      element.value = value;
    } else if (name === "checked" || name === "selected" || name === "disabled") {
      element[name] = Boolean(value);
      if (name === "disabled") element.setAttribute("disabled", "");
    } else {
      element.setAttribute(name === "className" ? "class" : name, value === true ? "" : String(value));
    }
  }
  append(element, children);
  return element;
}

// h("a", {href: "#/runs", class: "x", onclick: fn}, "text", child, [more]): an element.
// Text children are text nodes, whatever they contain.
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

// The same for SVG elements (the charts).
function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

// ---- formatting ------------------------------------------------------------------------

const pad = (n) => String(n).padStart(2, "0");

// "2026-12-02 14:05:09" in the browser's time zone ("" for null).
export function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  );
}

// Seconds -> "850 ms", "4.2 s", "3 m 05 s", "2 h 07 m", "3 d 4 h".
export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "";
  const abs = Math.abs(seconds);
  const sign = seconds < 0 ? "-" : "";
  if (abs < 1) return `${sign}${Math.round(abs * 1000)} ms`;
  if (abs < 60) return `${sign}${abs < 10 ? abs.toFixed(1) : Math.round(abs)} s`;
  const total = Math.round(abs);
  if (total < 3600) return `${sign}${Math.floor(total / 60)} m ${pad(total % 60)} s`;
  if (total < 86400) {
    return `${sign}${Math.floor(total / 3600)} h ${pad(Math.floor((total % 3600) / 60))} m`;
  }
  return `${sign}${Math.floor(total / 86400)} d ${Math.floor((total % 86400) / 3600)} h`;
}

// An ISO time -> "12 s ago" / "in 3 m 00 s".
export function fmtAge(iso, now = Date.now()) {
  if (!iso) return "";
  const seconds = (now - new Date(iso).getTime()) / 1000;
  if (Number.isNaN(seconds)) return "";
  if (Math.abs(seconds) < 1) return "now";
  return seconds >= 0 ? `${fmtDuration(seconds)} ago` : `in ${fmtDuration(-seconds)}`;
}

// ---- JSON, collapsible and escaped ---------------------------------------------------------

function jsonNode(value, depth) {
  if (value === null) return h("span", { class: "j-null" }, "null");
  if (Array.isArray(value) || typeof value === "object") {
    const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
    const [open, close] = Array.isArray(value) ? ["[", "]"] : ["{", "}"];
    if (entries.length === 0) return h("span", { class: "j-punct" }, open + close);
    const items = entries.map(([key, child]) =>
      h(
        "li",
        null,
        Array.isArray(value) ? null : [h("span", { class: "j-key" }, JSON.stringify(String(key))), ": "],
        jsonNode(child, depth + 1),
      ),
    );
    const label = Array.isArray(value) ? `${entries.length} items` : `${entries.length} keys`;
    return h(
      "details",
      { class: "j-tree", open: depth < 2 ? true : null },
      h("summary", null, h("span", { class: "j-punct" }, open), h("span", { class: "muted" }, ` ${label} `)),
      h("ul", null, items),
      h("span", { class: "j-punct" }, close),
    );
  }
  if (typeof value === "string") return h("span", { class: "j-str" }, JSON.stringify(value));
  if (typeof value === "number") return h("span", { class: "j-num" }, String(value));
  if (typeof value === "boolean") return h("span", { class: "j-bool" }, String(value));
  return h("span", null, String(value));
}

// A JSON value as a collapsible tree (objects and arrays fold); every string is text.
export function jsonView(value) {
  return h("div", { class: "json" }, value === undefined ? h("span", { class: "muted" }, "—") : jsonNode(value, 0));
}

// ---- live run changes -------------------------------------------------------------------

const STREAM_KINDS = [
  "created", "started", "attempt_failed", "handed_back", "waiting", "woken",
  "completed", "failed", "canceled", "expired", "metadata", "llm_text",
];
const listeners = new Set();
let source = null;

function dispatch(change) {
  for (const listener of [...listeners]) {
    const { fn, run, task } = listener;
    if (change.kind !== "reconnected") {
      if (run && change.run_id !== run) continue;
      if (task && change.task_id !== task) continue;
    }
    try {
      fn(change);
    } catch (error) {
      console.error(error);
    }
  }
}

function openStream() {
  source = new EventSource("/api/stream");
  source.addEventListener("open", () => {
    // Changes before this moment (the first connection, or a cut) were not seen here:
    // listeners re-read what they show.
    dispatch({ kind: "reconnected" });
  });
  for (const kind of STREAM_KINDS) {
    source.addEventListener(kind, (event) => {
      let change;
      try {
        change = JSON.parse(event.data);
      } catch {
        return;
      }
      dispatch(change);
    });
  }
}

// fn(change) for every run change ({kind, run_id, task_id, status, attempt, at, data}),
// optionally of one run or one task; fn({kind: "reconnected"}) each time the stream
// (re)connects: what changed before that was not seen here, re-read what is shown.
// One EventSource for the whole page, closed when nobody listens. Returns the unsubscribe.
export function onRunChange(fn, { run, task } = {}) {
  const listener = { fn, run, task };
  listeners.add(listener);
  if (!source) openStream();
  return () => {
    listeners.delete(listener);
    if (listeners.size === 0 && source) {
      source.close();
      source = null;
    }
  };
}

// ---- feedback ---------------------------------------------------------------------------

// A short message in the corner, read out by screen readers; kind: info, ok, error.
export function toast(message, kind = "info") {
  let region = document.getElementById("toasts");
  if (!region) {
    region = h("div", { id: "toasts", class: "toasts", "aria-live": "polite" });
    document.body.appendChild(region);
  }
  const item = h("div", { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status" }, String(message));
  region.appendChild(item);
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 4000);
  return item;
}

// A modal <dialog> asking to confirm `text`; resolves true (confirmed) or false.
export function confirmDialog(text, { confirm = "Confirm", cancel = "Cancel", danger = true } = {}) {
  return new Promise((resolve) => {
    const message = h("p", { id: "confirm-text" }, String(text));
    const no = h("button", { type: "button", class: "btn", value: "cancel" }, cancel);
    const yes = h("button", { type: "button", class: danger ? "btn btn-danger" : "btn btn-primary", value: "ok" }, confirm);
    const dialog = h(
      "dialog",
      { class: "confirm", "aria-labelledby": "confirm-text" },
      message,
      h("div", { class: "actions" }, no, yes),
    );
    let answered = false;
    const finish = (answer) => {
      if (answered) return;
      answered = true;
      if (dialog.open) dialog.close();
      dialog.remove();
      resolve(answer);
    };
    no.addEventListener("click", () => finish(false));
    yes.addEventListener("click", () => finish(true));
    dialog.addEventListener("close", () => finish(false)); // Escape
    document.body.appendChild(dialog);
    dialog.showModal();
    no.focus();
  });
}

// ---- charts ---------------------------------------------------------------------------

// A small SVG chart in `parent` (emptied first). series: [{name, points: [{x, y}], kind:
// "line"|"bar"}], x a Date, ISO string or number (a time). opts: {width, height, title,
// xFormat(x) -> string, compact: true for a sparkline without axis labels}. The numbers are
// also in a visually hidden table for screen readers.
export function chart(parent, series, opts = {}) {
  const width = opts.width || 640;
  const height = opts.height || 160;
  const compact = Boolean(opts.compact);
  const margin = compact ? { top: 2, right: 2, bottom: 2, left: 2 } : { top: 10, right: 10, bottom: 22, left: 40 };
  const toNum = (x) => (x instanceof Date ? x.getTime() : typeof x === "string" ? new Date(x).getTime() : x);
  const all = series.flatMap((one) => one.points.map((p) => ({ x: toNum(p.x), y: p.y ?? 0 })));
  parent.replaceChildren();
  const title = opts.title || series.map((one) => one.name).join(", ");
  const svg = s("svg", {
    viewBox: `0 0 ${width} ${height}`,
    class: "chart",
    role: "img",
    "aria-label": title,
    preserveAspectRatio: "none",
  });
  svg.appendChild(s("title", null, title));
  parent.appendChild(svg);
  if (all.length === 0) {
    svg.appendChild(s("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "chart-empty" }, "no data"));
    return svg;
  }
  const xs = all.map((p) => p.x);
  let x0 = Math.min(...xs);
  let x1 = Math.max(...xs);
  const barCount = Math.max(1, ...series.filter((one) => one.kind === "bar").map((one) => one.points.length));
  const hasBars = series.some((one) => one.kind === "bar");
  if (hasBars && barCount > 1) x1 += (x1 - x0) / (barCount - 1);
  if (x1 === x0) x1 = x0 + 1;
  const yMax = Math.max(1, ...all.map((p) => p.y));
  const innerW = width - margin.left - margin.right;
  const innerH = height - margin.top - margin.bottom;
  const px = (x) => margin.left + ((x - x0) / (x1 - x0)) * innerW;
  const py = (y) => margin.top + innerH - (y / yMax) * innerH;
  // axes and two labels on each
  svg.appendChild(s("line", { x1: margin.left, y1: margin.top + innerH, x2: width - margin.right, y2: margin.top + innerH, class: "chart-axis" }));
  svg.appendChild(s("line", { x1: margin.left, y1: margin.top, x2: margin.left, y2: margin.top + innerH, class: "chart-axis" }));
  // times: the hour and minute, with the day when the chart spans more than a day
  const long = Math.max(...xs) - Math.min(...xs) > 20 * 3600 * 1000;
  const xFormat = opts.xFormat || ((x) => fmtTime(new Date(x).toISOString()).slice(long ? 5 : 11, 16));
  if (!compact) {
    const fmt = Number.isInteger(yMax) ? String(yMax) : yMax.toPrecision(3);
    svg.appendChild(s("text", { x: margin.left - 4, y: margin.top + 8, "text-anchor": "end", class: "chart-label" }, fmt));
    svg.appendChild(s("text", { x: margin.left - 4, y: margin.top + innerH, "text-anchor": "end", class: "chart-label" }, "0"));
    svg.appendChild(s("text", { x: margin.left, y: height - 6, class: "chart-label" }, xFormat(x0)));
    svg.appendChild(s("text", { x: width - margin.right, y: height - 6, "text-anchor": "end", class: "chart-label" }, xFormat(Math.max(...xs))));
  }
  series.forEach((one, index) => {
    const cls = `chart-series chart-s${index % 6}`;
    const points = one.points.map((p) => ({ x: toNum(p.x), y: p.y ?? 0 }));
    if (one.kind === "bar") {
      const barW = Math.max(1, innerW / barCount - 1);
      for (const p of points) {
        svg.appendChild(
          s("rect", { x: px(p.x), y: py(p.y), width: barW, height: margin.top + innerH - py(p.y), class: cls },
            s("title", null, `${one.name}: ${p.y} at ${xFormat(p.x)}`)),
        );
      }
    } else {
      const d = points.map((p) => `${px(p.x).toFixed(1)},${py(p.y).toFixed(1)}`).join(" ");
      svg.appendChild(s("polyline", { points: d, class: cls, fill: "none" }));
    }
  });
  // the same numbers as a table, for screen readers
  const rows = series.flatMap((one) => one.points.map((p) => h("tr", null, h("td", null, one.name), h("td", null, xFormat(toNum(p.x))), h("td", null, String(p.y ?? "")))));
  parent.appendChild(
    h("table", { class: "visually-hidden" }, h("caption", null, title),
      h("thead", null, h("tr", null, h("th", null, "series"), h("th", null, "at"), h("th", null, "value"))),
      h("tbody", null, rows)),
  );
  return svg;
}
