// Small pieces the pages share, built on lib.js (the contract's helpers live there).

import { fmtTime, h } from "./lib.js";

// A <time> element: local time shown, UTC in its tooltip and datetime attribute.
export function timeEl(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  return h("time", { datetime: iso, title: `${iso} (UTC)` }, fmtTime(iso));
}


// A status word as a badge (color AND text: never color alone).
export function statusBadge(status) {
  return h("span", { class: `badge status-${status}` }, status);
}

// A <progress> for metadata.progress when it is a number in 0..1 (else null).
export function progressBar(metadata, label = "progress") {
  const value = metadata && typeof metadata.progress === "number" ? metadata.progress : null;
  if (value === null || value < 0 || value > 1) return null;
  return h("progress", { max: "1", value: String(value), "aria-label": label, title: `${Math.round(value * 100)}%` }, `${Math.round(value * 100)}%`);
}
