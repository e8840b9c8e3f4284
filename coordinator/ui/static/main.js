// The dashboard: log in with an API token, then the templates × nodes matrix, the sync tasks
// and the clones, kept current by the event stream (and read again after every action).

import { all, ApiError, clearToken, get, post, setToken, token } from "./api.js";
import { CloneDialog, SyncDialog, UploadDialog } from "./dialogs.js";
import { EventStream } from "./events.js";
import { applyEvent } from "./live.js";
import { renderMatrix } from "./matrix.js";
import { renderClones, renderTasks } from "./tasks.js";

const $ = (id) => document.getElementById(id);
const RECENT = 50; // sync tasks and clones shown
const REFRESH_EVERY_MS = 30000; // a full read now and then, whatever the events said
const POLL_OFFLINE_MS = 3000; // while the event stream is down and work is running

const store = {
  clusters: [],
  nodes: [],
  storages: [],
  templates: new Map(), // id -> detail with instances
  tasks: new Map(), // task_id -> sync task
  clones: new Map(), // clone_id -> clone
  clusterFilter: "",
};

// ---------------------------------------------------------------- messages

function showError(message) {
  $("alert").className = "alert";
  $("alert-text").textContent = message;
  $("alert").hidden = false;
}

function showNote(message) {
  if (!message) return;
  $("alert").className = "alert note";
  $("alert-text").textContent = message;
  $("alert").hidden = false;
}

$("alert-close").addEventListener("click", () => {
  $("alert").hidden = true;
});

// ---------------------------------------------------------------- reading

async function readAll() {
  const filter = store.clusterFilter ? { cluster_id: store.clusterFilter } : {};
  const [clusters, nodes, storages, templates, tasks, clones] = await Promise.all([
    all("/clusters"),
    all("/nodes", filter),
    all("/storages", filter),
    all("/templates", filter),
    get(`/templates/sync-tasks?page_size=${RECENT}`),
    get(`/clones?page_size=${RECENT}`),
  ]);
  // A template deleted between the list and its detail is simply gone.
  const detail = (id) =>
    get(`/templates/${id}/detail?include_instances=true`).catch((err) => {
      if (err.status === 404) return null;
      throw err;
    });
  const details = (await Promise.all(templates.map((t) => detail(t.id)))).filter((d) => d !== null);
  store.clusters = clusters;
  store.nodes = nodes.sort((a, b) => a.cluster_id - b.cluster_id || a.node_name.localeCompare(b.node_name));
  store.storages = storages;
  store.templates = new Map(details.map((d) => [d.id, d]));
  store.tasks = new Map(tasks.list.map((t) => [t.task_id, t]));
  store.clones = new Map(clones.list.map((c) => [c.clone_id, c]));
}

function render() {
  const templates = [...store.templates.values()].sort((a, b) => a.template_name.localeCompare(b.template_name));
  renderMatrix($("matrix"), templates, store.nodes, store.tasks, {
    sync: (id) => syncDialog.open(store.templates.get(id)),
    clone: (id) => cloneDialog.open(store.templates.get(id)),
  });
  $("matrix-count").textContent = `${templates.length} template(s), ${store.nodes.length} node(s)`;
  $("matrix-empty").hidden = templates.length > 0;
  renderTasks($("tasks"), store.tasks, { retry, cancel });
  const names = new Map(templates.map((t) => [t.id, t.template_name]));
  renderClones($("clones"), store.clones, names);
  const select = $("cluster-filter");
  const options = [["", "all clusters"], ...store.clusters.map((c) => [String(c.id), c.cluster_name])];
  if (select.options.length !== options.length) {
    select.replaceChildren(...options.map(([value, label]) => new Option(label, value)));
    select.value = store.clusterFilter;
  }
}

let refreshing = null;
let again = false;

// Reads everything again; calls made while one runs are folded into one more.
async function refresh() {
  if (refreshing) {
    again = true;
    return refreshing;
  }
  refreshing = (async () => {
    do {
      again = false;
      try {
        await readAll();
        render();
      } catch (err) {
        if (err instanceof ApiError && err.status === 401) {
          logout(err.message);
          return;
        }
        showError(err.message);
      }
    } while (again);
  })();
  try {
    await refreshing;
  } finally {
    refreshing = null;
  }
}

let refreshTimer = null;
function refreshSoon() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refresh, 250);
}

// ---------------------------------------------------------------- live

let live = false;
const stream = new EventStream(
  (event) => {
    const outcome = applyEvent(store, event);
    if (outcome === "render") render();
    else if (outcome === "refresh") {
      render();
      refreshSoon();
    }
  },
  (state, reason) => {
    live = state === "live";
    const badge = $("live");
    badge.textContent = state;
    badge.className = `live ${live ? "on" : "off"} board-only`;
    badge.title = reason ? `live progress: ${reason}` : "live progress (WebSocket)";
    if (live) refreshSoon(); // whatever changed while the stream was down
  },
);

const hasActiveWork = () =>
  [...store.tasks.values()].some((t) => ["pending", "syncing", "importing"].includes(t.status)) ||
  [...store.templates.values()].some((t) => t.upload_info && !["imported", "failed"].includes(t.upload_info.status));

setInterval(() => {
  if (token() && !live && hasActiveWork()) refresh();
}, POLL_OFFLINE_MS);
setInterval(() => {
  if (token()) refresh();
}, REFRESH_EVERY_MS);

// ---------------------------------------------------------------- actions

async function act(promise, note = "") {
  try {
    await promise;
    showNote(note);
  } catch (err) {
    showError(err.message);
  }
  await refresh();
}

const retry = (id) => act(post(`/templates/sync-tasks/${id}/retry`), `sync task ${id} retried`);
const cancel = (id) => act(post(`/templates/sync-tasks/${id}/cancel`), `sync task ${id} canceled`);

const uploadDialog = new UploadDialog(store, () => refresh());
const afterAction = (note) => {
  showNote(note);
  refresh();
};
const syncDialog = new SyncDialog(store, afterAction);
const cloneDialog = new CloneDialog(store, afterAction);

// ---------------------------------------------------------------- login

function showBoard(on) {
  $("login").hidden = on;
  $("board").hidden = !on;
  for (const element of document.querySelectorAll(".board-only")) element.hidden = !on;
}

function logout(message = "") {
  clearToken();
  stream.stop();
  showBoard(false);
  $("login-error").textContent = message;
  $("login-token").focus();
}

async function enter() {
  try {
    await get("/clusters?page_size=1");
  } catch (err) {
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
      logout(err.message);
      return;
    }
    showError(err.message);
  }
  $("alert").hidden = true;
  showBoard(true);
  await refresh();
  stream.start();
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  setToken($("login-token").value.trim());
  $("login-token").value = "";
  enter();
});
$("logout").addEventListener("click", () => logout());
$("refresh").addEventListener("click", () => refresh());
$("upload-open").addEventListener("click", () => uploadDialog.open());
$("cluster-filter").addEventListener("change", (event) => {
  store.clusterFilter = event.target.value;
  refresh();
});

if (token()) enter();
else logout();
