// The console's shell: the session, the navigation, and a hash router that loads one page
// module at a time (js/pages/<module>.js, exporting render(root, params, app) and optionally
// dispose()). root is a fresh element inside <main> for each render; once the route changed
// it is detached (root.isConnected is false): a page awaiting the API checks it before it
// subscribes to live changes or starts timers, since dispose() was called before that.

import { api, h, onRunChange } from "./lib.js";

// #/<name> loads pages/<list>.js; #/<name>/<id> loads pages/<detail>.js with params.id.
// A page is listed here and in index.html's nav only once its module exists.
const PAGES = {
  runs: { list: "runs", detail: "run", title: "Runs" },
  errors: { list: "errors", title: "Errors" },
  tasks: { list: "tasks", detail: "tasks", title: "Tasks" },
  queues: { list: "queues", title: "Queues" },
  schedules: { list: "schedules", title: "Schedules" },
  workers: { list: "workers", title: "Workers" },
  events: { list: "events", title: "Events" },
  costs: { list: "costs", title: "Costs" },
  charts: { list: "charts", title: "Charts" },
};
const DEFAULT_ROUTE = "#/runs";

const main = document.getElementById("main");
const app = { api, role: null, stream: onRunChange, navigate };
let current = null; // {module, token}
let renderCount = 0;

// Go to a hash route; {replace: true} changes the address without a new history entry and
// without re-rendering (a page keeping its filters in the address).
function navigate(hash, { replace = false } = {}) {
  if (replace) {
    history.replaceState(null, "", hash);
  } else {
    location.hash = hash;
  }
}

function parseRoute(hash) {
  const text = hash.replace(/^#\/?/, "");
  const [path, query = ""] = text.split("?", 2);
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const params = Object.fromEntries(new URLSearchParams(query));
  return { name: parts[0] || "", id: parts[1], params };
}

function markNav(name) {
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.page === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

async function route({ focus = true } = {}) {
  if (!location.hash.startsWith("#/")) {
    history.replaceState(null, "", DEFAULT_ROUTE);
  }
  const { name, id, params } = parseRoute(location.hash);
  const page = PAGES[name];
  const token = ++renderCount;
  if (current && current.module.dispose) {
    try {
      current.module.dispose();
    } catch (error) {
      console.error(error);
    }
  }
  current = null;
  markNav(name);
  main.replaceChildren();
  if (!page) {
    document.title = "Not found · taskd console";
    main.append(h("h1", null, "No such page"), h("p", null, "Pick a page from the navigation above."));
    return;
  }
  const moduleName = id !== undefined && page.detail ? page.detail : page.list;
  document.title = `${page.title} · taskd console`;
  // Each render fills a view of its own inside <main>: a render still awaiting the API when
  // the route changes fills a detached view (pages check root.isConnected before they
  // subscribe to anything live).
  const view = h("div", { class: "view" });
  main.replaceChildren(view);
  try {
    const module = await import(`./pages/${moduleName}.js`);
    if (token !== renderCount) return; // another route was asked for meanwhile
    current = { module };
    await module.render(view, { ...params, id }, app);
  } catch (error) {
    if (token !== renderCount) return;
    console.error(error);
    view.replaceChildren(
      h("h1", null, page.title),
      h("p", { class: "error", role: "alert" }, `This page failed to load: ${error.message}`),
    );
  }
  if (focus && token === renderCount) main.focus({ preventScroll: false });
}

async function start() {
  let session;
  try {
    session = await api("/api/session");
  } catch (error) {
    main.replaceChildren(h("p", { class: "error", role: "alert" }, `The admin API does not answer: ${error.message}`));
    return;
  }
  if (session.auth_required && session.role === null) {
    location.replace("/login");
    return;
  }
  app.role = session.role;
  document.body.classList.add(`role-${session.role}`);
  const roleLabel = document.getElementById("role");
  roleLabel.textContent = session.role === "read" ? "read-only" : "admin";
  roleLabel.title =
    session.role === "read"
      ? "Logged in with the read-only token: you can look but not act"
      : "Full access";
  const logout = document.getElementById("logout");
  if (session.auth_required) {
    logout.hidden = false;
    logout.addEventListener("click", async () => {
      try {
        await api("/api/session", { method: "DELETE" });
      } finally {
        location.replace("/login");
      }
    });
  }
  document.getElementById("skip-link").addEventListener("click", (event) => {
    event.preventDefault(); // keep the route in the address
    main.focus();
  });
  window.addEventListener("hashchange", () => route());
  await route({ focus: false });
}

// [admin] read_url: where the console's reads come from and how far the replica is behind, in
// the footer (GET /api/replica, every REPLICA_EVERY_MS); hidden, and not asked again, when the
// daemon has no replica.
const REPLICA_EVERY_MS = 10_000;

function replicaText(status) {
  if (!status.reachable) return "Replica unreachable: reading from the primary";
  if (!status.in_recovery) return "Reading from the replica, which is no longer a standby (promoted?)";
  const seconds = status.lag_seconds === null ? "unknown" : `${status.lag_seconds.toFixed(2)} s`;
  const bytes = status.lag_bytes === null ? "" : `, ${status.lag_bytes.toLocaleString("en")} bytes of WAL`;
  return `Reading from the replica: lag ${seconds}${bytes}`;
}

async function showReplica() {
  const footer = document.getElementById("replica-status");
  let status;
  try {
    status = await api("/api/replica");
  } catch (error) {
    if (!footer.hidden) footer.textContent = `Replica status unavailable: ${error.message}`;
    return true;
  }
  if (!status.configured) return false;
  footer.hidden = false;
  footer.textContent = replicaText(status);
  footer.title = status.error || "";
  footer.classList.toggle("warn", !status.reachable || !status.in_recovery);
  return true;
}

async function watchReplica() {
  if (app.role === null) return; // no session (the login page is loading) or no API
  if (await showReplica()) setInterval(showReplica, REPLICA_EVERY_MS);
}

start().then(watchReplica);
