// CommandCenter Hub dashboard: the hub's own API from this origin, nothing else.
// Pages (hash routes): #/ projects, #/projects/<id> one project, #/tasks history, #/tasks/<id>
// one task, #/monitor workers, queues, throughput and alerts.

const ACTIVE = ["PENDING", "STARTED", "BUILDING", "RUNNING", "STOPPING", "RESTARTING", "FETCHING"];
const main = document.getElementById("main");

// ---- DOM --------------------------------------------------------------------------------------

/** An element with attributes (`on*` are listeners) and children (strings become text). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** A task id, short: its first and last 8 digits. Ids begin with their creation time (so they
 * sort in the store), which tasks of the same minute share; the random end tells them apart,
 * and searching for it finds the task. */
function shortId(id) {
  return `${id.slice(0, 8)}…${id.slice(-8)}`;
}

function toast(text) {
  const note = h("p", {}, text);
  document.getElementById("toast").append(note);
  setTimeout(() => note.remove(), 6000);
}

function when(iso) {
  if (!iso) return "never";
  return new Date(iso).toLocaleString();
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "";
  return seconds < 60 ? `${seconds.toFixed(1)} s` : `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}

// ---- API --------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code;
    this.field = body?.error?.field;
  }
}

const token = {
  get: () => sessionStorage.getItem("hub-token"),
  set: (value) => sessionStorage.setItem("hub-token", value),
  clear: () => sessionStorage.removeItem("hub-token"),
};

let asking = null;
/** Asks for the token once; concurrent callers share the one prompt. */
function askToken(message) {
  if (!asking) {
    asking = new Promise((resolve) => {
      const dialog = document.getElementById("token-dialog");
      const input = document.getElementById("token-input");
      document.getElementById("token-error").textContent = message || "";
      input.value = "";
      dialog.addEventListener("close", () => {
        token.set(input.value.trim());
        asking = null;
        resolve();
      }, { once: true });
      dialog.showModal();
    });
  }
  return asking;
}

async function api(path, options = {}) {
  for (;;) {
    const headers = { Accept: "application/json", ...(options.headers || {}) };
    if (token.get()) headers.Authorization = `Bearer ${token.get()}`;
    if (options.json !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method: options.method || "GET",
      headers,
      body: options.json !== undefined ? JSON.stringify(options.json) : undefined,
      signal: options.signal,
    });
    if (response.status === 401) {
      const body = await response.json().catch(() => ({}));
      await askToken(token.get() ? body?.error?.message : "");
      continue;
    }
    if (options.raw) {
      if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => ({})));
      return response;
    }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new ApiError(response.status, body);
    return body;
  }
}

// ---- Live task state ----------------------------------------------------------------------------

/** The latest status of every task seen, and who wants to hear of changes. */
const live = {
  tasks: new Map(),
  listeners: new Set(),
  stream: null,
  poller: null,
  update(status) {
    const known = this.tasks.get(status.task_id);
    // Events arrive in order; a poll may bring an older view: never go back.
    if (known && known.ready && !status.ready) return;
    this.tasks.set(status.task_id, status);
    for (const listener of this.listeners) listener(status);
  },
  /** The unfinished task of a project, if any (the newest). */
  activeFor(projectId) {
    let found = null;
    for (const task of this.tasks.values()) {
      if (task.project_id === projectId && !task.ready) {
        if (!found || task.queued_at > found.queued_at) found = task;
      }
    }
    return found;
  },
  lastFor(projectId) {
    let found = null;
    for (const task of this.tasks.values()) {
      if (task.project_id === projectId && (!found || task.queued_at > found.queued_at)) found = task;
    }
    return found;
  },
  async refresh() {
    const running = await api(`/api/tasks?state=${ACTIVE.join(",")}&limit=1000`);
    const stillActive = new Set(running.map((t) => t.task_id));
    for (const task of running) this.update(task);
    // Tasks we thought active that are not any more: ask for their end.
    for (const task of [...this.tasks.values()]) {
      if (!task.ready && !stillActive.has(task.task_id)) {
        try { this.update(await api(`/api/tasks/${task.task_id}/status`)); } catch { /* expired */ }
      }
    }
  },
  connect() {
    if (this.stream) return;
    const query = token.get() ? `?access_token=${encodeURIComponent(token.get())}` : "";
    // EventSource reconnects by itself, sending Last-Event-ID: nothing is missed.
    const stream = new EventSource(`/api/events${query}`);
    this.stream = stream;
    stream.addEventListener("task", (event) => {
      this.stopPolling();
      this.update(JSON.parse(event.data));
    });
    stream.addEventListener("open", () => this.stopPolling());
    stream.addEventListener("error", () => {
      if (stream.readyState === EventSource.CLOSED) {
        this.stream = null;
        setTimeout(() => this.connect(), 2000);
      }
      this.startPolling();
    });
  },
  startPolling() {
    if (this.poller) return;
    this.poller = setInterval(() => { this.refresh().catch(() => {}); rerender(); }, 2000);
  },
  stopPolling() {
    if (this.poller) clearInterval(this.poller);
    this.poller = null;
  },
};

// ---- Router -------------------------------------------------------------------------------------

let page = null; // { cleanup, refresh }

function rerender() {
  page?.refresh?.();
}

async function route() {
  page?.cleanup?.();
  page = null;
  const path = location.hash.replace(/^#/, "") || "/";
  let match;
  try {
    if ((match = path.match(/^\/projects\/([^/]+)$/))) page = await projectPage(decodeURIComponent(match[1]));
    else if ((match = path.match(/^\/tasks\/([^/]+)$/))) page = await taskPage(decodeURIComponent(match[1]));
    else if (path === "/tasks") page = await tasksPage();
    else if (path === "/monitor") page = await monitorPage();
    else page = await dashboard();
  } catch (err) {
    main.replaceChildren(h("h1", {}, "Something went wrong"), h("p", { class: "error-row" }, err.message));
  }
}

// ---- Dashboard ----------------------------------------------------------------------------------

function statusLook(project, task) {
  if (task && !task.ready) return { color: "amber", label: task.state === "PENDING" ? "Queued" : "Working" };
  switch (project.status) {
    case "running": return project.health === "unhealthy"
      ? { color: "amber", label: "Unhealthy" } : { color: "green", label: "Running" };
    case "starting": return { color: "amber", label: "Starting" };
    case "stopping": return { color: "amber", label: "Stopping" };
    case "error": return { color: "red", label: "Error" };
    default: return { color: "grey", label: "Stopped" };
  }
}

function progressRow(task, onCancel) {
  const failed = task.state === "FAILURE" || task.state === "REVOKED";
  const fill = h("span");
  fill.style.width = `${task.progress}%`;
  const bar = h("div", {
    class: failed ? "bar failed" : "bar",
    role: "progressbar",
    "aria-valuemin": 0,
    "aria-valuemax": 100,
    "aria-valuenow": task.progress,
    "aria-label": `${task.kind || "task"} progress`,
  }, fill);
  return h("div", { class: "progress-row", "data-task": task.task_id },
    bar,
    task.ready ? h("span", { class: `state-${task.state}` }, task.state)
      : h("button", { type: "button", class: "cancel", onclick: onCancel }, "Cancel"),
    h("span", { class: "step" }, `${task.progress}% — ${task.status}`),
    failed && task.error ? h("span", { class: "error-row" }, task.error) : null);
}

async function act(projectId, action) {
  try {
    const accepted = await api(`/api/orchestration/${projectId}/${action}`, { method: "POST" });
    live.update({
      task_id: accepted.task_id, state: "PENDING", ready: false, progress: 0,
      status: "Task is queued, waiting to start...", project_id: projectId,
      queued_at: new Date().toISOString(), kind: `${action}_project`,
    });
  } catch (err) {
    toast(`${action}: ${err.message}`);
  }
}

async function revoke(taskId) {
  try {
    // The revoke answers with the task's status after it.
    live.update(await api(`/api/tasks/${taskId}/revoke?terminate=true`, { method: "POST" }));
  } catch (err) {
    toast(`cancel: ${err.message}`);
  }
}

function projectCard(project) {
  const active = live.activeFor(project.id);
  const last = live.lastFor(project.id);
  const look = statusLook(project, active);
  const busy = Boolean(active);
  const running = project.status === "running";
  const portLink = (label, port) => h("span", {}, `${label}: `,
    h("a", { href: `http://localhost:${port}`, target: "_blank", rel: "noopener" }, port));
  // The running task's bar; once it ends, its last state (100 % or the failure) stays until the
  // page is reloaded.
  const shown = active || last;
  return h("article", { class: "card", "data-project": project.id, "aria-label": project.name },
    h("div", { class: "status" },
      h("span", { class: `dot ${look.color}`, "data-status": look.color, title: look.label }),
      h("span", { class: "status-label" }, look.label)),
    h("div", {},
      h("a", { class: "name", href: `#/projects/${project.id}` }, project.name),
      h("div", { class: "path mono" }, project.path),
      h("div", { class: "meta" }, `health: ${project.health} · last started: ${when(project.last_started)}`),
      h("div", { class: "ports" }, portLink("Frontend", project.frontend_port), portLink("Backend", project.backend_port))),
    h("div", { class: "buttons" },
      running ? h("a", { class: "button primary", href: `http://localhost:${project.frontend_port}`, target: "_blank", rel: "noopener" }, "Open") : null,
      running ? null : h("button", { type: "button", class: "start", disabled: busy, onclick: () => act(project.id, "start") }, "Start"),
      running ? h("button", { type: "button", class: "stop", disabled: busy, onclick: () => act(project.id, "stop") }, "Stop") : null,
      h("button", { type: "button", disabled: busy, onclick: () => act(project.id, "restart") }, "Restart"),
      h("button", { type: "button", class: "danger", disabled: busy, onclick: () => confirmDelete(project) }, "Delete")),
    shown ? progressRow(shown, () => revoke(shown.task_id)) : null,
    project.status === "error" && project.last_error && !busy
      ? h("div", { class: "error-row" }, project.last_error) : null);
}

async function dashboard() {
  const stats = h("section", { class: "stats", "aria-label": "Summary" });
  const cards = h("div", { class: "cards" });
  main.replaceChildren(
    stats,
    h("section", { class: "panel" },
      h("h2", {}, "Add New Project"),
      h("button", { type: "button", class: "primary", id: "add-project", onclick: openAddDialog }, "+ Add New Project")),
    h("h2", {}, "Your Projects"),
    cards);
  let projects = [];
  const draw = () => {
    cards.replaceChildren(...(projects.length
      ? projects.map(projectCard)
      : [h("p", { class: "muted" }, "No projects yet: add one.")]));
  };
  const load = async () => {
    const [counts, list] = await Promise.all([api("/api/projects/stats"), api("/api/projects")]);
    stats.replaceChildren(
      ...[["Total Projects", counts.total_projects, "total"], ["Running", counts.running, "running"],
        ["Stopped", counts.stopped, "stopped"], ["Errors", counts.errors, "errors"]]
        .map(([label, value, cls]) => h("div", { class: `stat ${cls}` },
          h("div", { class: "label" }, label), h("div", { class: "value", "data-stat": cls }, value))));
    projects = list;
    draw();
  };
  await live.refresh();
  await load();
  // A task's end changes its project: reload; any change redraws the cards.
  const listener = (task) => {
    if (task.ready) load().catch(() => {});
    else draw();
  };
  live.listeners.add(listener);
  return { cleanup: () => live.listeners.delete(listener), refresh: () => load().catch(() => {}) };
}

// ---- Add dialog ---------------------------------------------------------------------------------

const addDialog = document.getElementById("add-dialog");
const addForm = document.getElementById("add-form");
let browsed = null;
let nameTouched = false;

function fieldErrors(form, err) {
  for (const slot of form.querySelectorAll(".field-error[data-field]")) slot.textContent = "";
  if (!err) return;
  // The slug derives from the name: a clash of slugs is the name's to fix.
  const field = err.field === "slug" ? "name" : err.field || "";
  const slotFor = (name) => form.querySelector(`.field-error[data-field="${CSS.escape(name)}"]`);
  const slot = slotFor(field) || slotFor(field.split(".")[0]) || slotFor("");
  slot.textContent = err.message;
}

async function browse(path) {
  const error = document.getElementById("browse-error");
  error.textContent = "";
  try {
    const listing = await api(path ? `/api/filesystem/browse?path=${encodeURIComponent(path)}` : "/api/filesystem/browse");
    browsed = listing;
    document.getElementById("browse-current").textContent = listing.currentPath;
    document.getElementById("browse-up").disabled = !listing.parent;
    const list = document.getElementById("browse-list");
    list.replaceChildren(...listing.directories.map((dir) => h("li", {},
      h("button", { type: "button", class: "enter", onclick: () => browse(dir.path) }, `${dir.name}/`),
      h("button", { type: "button", class: "select", "aria-label": `Select ${dir.name}`, onclick: () => choose(dir) }, "Select"))));
    if (!listing.directories.length) list.replaceChildren(h("li", { class: "muted" }, "No folders here"));
  } catch (err) {
    error.textContent = err.message;
  }
}

function choose(dir) {
  addForm.elements.path.value = dir.path;
  if (!nameTouched) addForm.elements.name.value = dir.name;
}

function openAddDialog() {
  addForm.reset();
  nameTouched = false;
  fieldErrors(addForm, null);
  addDialog.showModal();
  browse(null);
}

document.getElementById("browse-up").addEventListener("click", () => {
  if (browsed?.parent) browse(browsed.parent);
});
document.getElementById("add-cancel").addEventListener("click", () => addDialog.close());
addForm.elements.name.addEventListener("input", () => { nameTouched = true; });
addForm.elements.path.addEventListener("change", () => {
  if (!nameTouched) addForm.elements.name.value = addForm.elements.path.value.split("/").filter(Boolean).pop() || "";
});
addForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = addForm.elements;
  const body = { name: form.name.value.trim(), path: form.path.value.trim() };
  const ports = {};
  for (const role of ["frontend", "backend", "postgres", "redis"]) {
    const value = form[role].value.trim();
    if (value) ports[role] = Number(value);
  }
  if (Object.keys(ports).length) body.ports = ports;
  try {
    fieldErrors(addForm, null);
    const project = await api("/api/projects", { method: "POST", json: body });
    addDialog.close();
    toast(`Added ${project.name}`);
    rerender();
  } catch (err) {
    fieldErrors(addForm, err);
  }
});

// ---- Delete -------------------------------------------------------------------------------------

function confirmDelete(project) {
  const dialog = document.getElementById("delete-dialog");
  document.getElementById("delete-text").textContent =
    `${project.name} (${project.path}): its containers and network are removed.`;
  document.getElementById("delete-data").checked = false;
  dialog.addEventListener("close", async () => {
    if (dialog.returnValue !== "delete") return;
    const data = document.getElementById("delete-data").checked;
    try {
      await api(`/api/projects/${project.id}?delete_data=${data}`, { method: "DELETE" });
      toast(`Deleted ${project.name}`);
      if (location.hash.startsWith("#/projects/")) location.hash = "#/";
      else rerender();
    } catch (err) {
      toast(`delete: ${err.message}`);
    }
  }, { once: true });
  dialog.showModal();
}

// ---- Project page -------------------------------------------------------------------------------

async function projectPage(id) {
  const project = await api(`/api/projects/${encodeURIComponent(id)}`);
  const services = h("tbody");
  const history = h("tbody");
  const progress = h("div");
  const logs = h("pre", { class: "logs", id: "logs", "aria-live": "off", tabindex: 0 });
  const count = h("span", { class: "muted", id: "log-count" }, "0 lines");
  const pick = h("select", { id: "log-service", "aria-label": "Service" });
  const pause = h("button", { type: "button", id: "log-pause" }, "Pause");
  let paused = false;
  let lines = 0;
  let follow = null;

  const header = h("div", {},
    h("h1", {}, project.name),
    h("p", { class: "mono muted" }, project.path),
    h("div", { class: "toolbar", id: "project-actions" },
      h("button", { type: "button", class: "start", "data-action": "start", onclick: () => act(project.id, "start") }, "Start"),
      h("button", { type: "button", class: "stop", "data-action": "stop", onclick: () => act(project.id, "stop") }, "Stop"),
      h("button", { type: "button", "data-action": "restart", onclick: () => act(project.id, "restart") }, "Restart"),
      h("button", { type: "button", class: "danger", "data-action": "delete", onclick: () => confirmDelete(project) }, "Delete")),
    progress);
  // Actions wait while an operation runs; Start and Stop follow the stack's state.
  const enable = (status) => {
    const busy = Boolean(live.activeFor(project.id));
    for (const button of header.querySelectorAll("[data-action]")) {
      const action = button.dataset.action;
      button.disabled = busy || (action === "start" && status === "running") ||
        (action === "stop" && status === "stopped");
    }
  };
  main.replaceChildren(
    header,
    h("h2", {}, "Services"),
    h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ...["Service", "State", "Health", "Image", "Ports", ""].map((t) => h("th", {}, t)))),
      services)),
    h("h2", {}, "Logs"),
    h("div", { class: "toolbar" }, pick,
      h("button", { type: "button", id: "log-follow", onclick: () => startLogs() }, "Follow"),
      pause,
      h("button", { type: "button", id: "log-clear", onclick: () => { logs.textContent = ""; lines = 0; count.textContent = "0 lines"; } }, "Clear"),
      count),
    logs,
    h("h2", {}, "Operations"),
    h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ...["Kind", "State", "Started", "Duration", "Error"].map((t) => h("th", {}, t)))),
      history)));
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
    pause.setAttribute("aria-pressed", String(paused));
  });

  async function startLogs() {
    follow?.abort();
    follow = new AbortController();
    const service = pick.value;
    if (!service) return;
    logs.textContent = "";
    lines = 0;
    try {
      const response = await api(`/api/orchestration/${project.id}/logs/${encodeURIComponent(service)}?follow=true&lines=100`,
        { raw: true, signal: follow.signal, headers: { Accept: "application/x-ndjson" } });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let partial = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        partial += value;
        const parts = partial.split("\n");
        partial = parts.pop();
        if (paused) continue;
        for (const part of parts) {
          if (!part) continue;
          const line = JSON.parse(part);
          // stderr lines are marked (and labelled for screen readers).
          logs.append(h("div", { class: `log-line ${line.stream}`, title: line.stream },
            line.stream === "stderr" ? h("span", { class: "tag" }, "stderr ") : null, line.text));
          lines += 1;
        }
        count.textContent = `${lines} lines`;
        logs.scrollTop = logs.scrollHeight;
      }
    } catch (err) {
      if (err.name !== "AbortError") logs.append(h("div", { class: "error-row" }, err.message));
    }
  }

  // Every published port as `container port → host port`, the host port a link.
  function servicePorts(svc) {
    const mappings = svc.ports && svc.ports.length
      ? svc.ports
      : svc.host_port ? [{ container_port: svc.target_port, protocol: "tcp", host_port: svc.host_port }] : [];
    return mappings.map((port) => h("div", {},
      `${port.container_port ?? ""}${port.protocol === "udp" ? "/udp" : ""} → `,
      port.host_port
        ? h("a", { href: `http://localhost:${port.host_port}`, target: "_blank", rel: "noopener" }, String(port.host_port))
        : "not leased yet"));
  }

  async function load() {
    const [stack, tasks, fresh] = await Promise.all([
      api(`/api/orchestration/${project.id}/status`).catch(() => ({ services: [] })),
      api(`/api/tasks?project_id=${project.id}&limit=50`),
      api(`/api/projects/${project.id}`),
    ]);
    services.replaceChildren(...stack.services.map((svc) => h("tr", {},
      h("td", {}, svc.name), h("td", {}, svc.state), h("td", {}, svc.health || ""),
      h("td", { class: "mono" }, svc.image || ""),
      h("td", { class: "ports" }, servicePorts(svc)),
      h("td", {}, h("button", { type: "button", onclick: () => restartService(svc.name) }, "Restart")))));
    if (!stack.services.length) services.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No containers")));
    const chosen = pick.value;
    pick.replaceChildren(...stack.services.map((svc) => h("option", { value: svc.name }, svc.name)));
    if (chosen) pick.value = chosen;
    history.replaceChildren(...tasks.map((task) => h("tr", {},
      h("td", {}, h("a", { href: `#/tasks/${task.task_id}` }, task.kind)),
      h("td", { class: `state-${task.state}` }, task.state),
      h("td", {}, when(task.started_at)), h("td", {}, duration(task.runtime)),
      h("td", { class: "error-row" }, task.error || ""))));
    for (const task of tasks) live.update(task);
    const active = live.activeFor(project.id) || tasks.find((t) => !t.ready);
    progress.replaceChildren(active ? progressRow(active, () => revoke(active.task_id)) : "");
    header.querySelector("h1").textContent = `${fresh.name} — ${fresh.status}`;
    status = fresh.status;
    enable(status);
  }
  let status = project.status;

  async function restartService(name) {
    try {
      await api(`/api/orchestration/${project.id}/restart/${encodeURIComponent(name)}`, { method: "POST" });
      toast(`Restarting ${name}`);
    } catch (err) {
      toast(`restart ${name}: ${err.message}`);
    }
  }

  await load();
  const listener = (task) => {
    if (task.project_id !== project.id) return;
    progress.replaceChildren(progressRow(task, () => revoke(task.task_id)));
    enable(status);
    if (task.ready) load().catch(() => {});
  };
  live.listeners.add(listener);
  return {
    cleanup: () => { live.listeners.delete(listener); follow?.abort(); },
    refresh: () => load().catch(() => {}),
  };
}

// ---- Tasks --------------------------------------------------------------------------------------

const PAGE_SIZE = 50;

async function tasksPage() {
  const rows = h("tbody");
  const state = h("select", { id: "filter-state", "aria-label": "State" },
    h("option", { value: "" }, "any state"), ...[...ACTIVE, "SUCCESS", "FAILURE", "REVOKED"].map((s) => h("option", { value: s }, s)));
  const kind = h("select", { id: "filter-kind", "aria-label": "Kind" },
    h("option", { value: "" }, "any kind"),
    ...["start_project", "stop_project", "restart_project", "restart_service"].map((k) => h("option", { value: k }, k)));
  const project = h("input", { id: "filter-project", "aria-label": "Project id or name", placeholder: "project", size: 12 });
  const search = h("input", { id: "filter-search", type: "search", "aria-label": "Search", placeholder: "search id, step, error…", size: 24 });
  const sort = h("select", { id: "sort", "aria-label": "Sort by" },
    h("option", { value: "received" }, "newest first"), h("option", { value: "started" }, "last started"),
    h("option", { value: "runtime" }, "longest runtime"));
  const summary = h("span", { class: "muted", id: "tasks-total" });
  const previous = h("button", { type: "button", id: "page-previous" }, "Previous");
  const next = h("button", { type: "button", id: "page-next" }, "Next");
  let offset = 0;
  main.replaceChildren(h("h1", {}, "Tasks"),
    h("div", { class: "toolbar" }, state, kind, project, search, sort),
    h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ...["Task", "Kind", "Project", "State", "Progress", "Queued", "Duration", "Worker"].map((t) => h("th", {}, t)))),
      rows)),
    h("div", { class: "toolbar" }, previous, summary, next));
  async function load() {
    const query = new URLSearchParams({ limit: String(PAGE_SIZE), offset: String(offset), sort: sort.value });
    if (state.value) query.set("state", state.value);
    if (kind.value) query.set("kind", kind.value);
    if (project.value.trim()) query.set("project", project.value.trim());
    if (search.value.trim()) query.set("q", search.value.trim());
    const page = await api(`/api/monitor/tasks?${query}`);
    rows.replaceChildren(...page.tasks.map((task) => h("tr", {},
      h("td", { class: "mono" }, h("a", { href: `#/tasks/${task.task_id}` }, shortId(task.task_id))),
      h("td", {}, task.kind), h("td", {}, task.project_id ? h("a", { href: `#/projects/${task.project_id}` }, task.project_id) : ""),
      h("td", { class: `state-${task.state}` }, task.state), h("td", {}, `${task.progress}%`),
      h("td", {}, when(task.queued_at)), h("td", {}, duration(task.runtime)), h("td", { class: "mono" }, task.worker || ""))));
    if (!page.tasks.length) rows.replaceChildren(h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No tasks")));
    const last = Math.min(page.offset + page.tasks.length, page.total);
    summary.textContent = page.total ? `${page.offset + 1}–${last} of ${page.total}` : "";
    previous.disabled = page.offset === 0;
    next.disabled = last >= page.total;
  }
  const reload = () => { offset = 0; load().catch((e) => toast(e.message)); };
  for (const input of [state, kind, project, sort]) input.addEventListener("change", reload);
  let typing = null;
  search.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(reload, 250); });
  previous.addEventListener("click", () => { offset = Math.max(0, offset - PAGE_SIZE); load().catch((e) => toast(e.message)); });
  next.addEventListener("click", () => { offset += PAGE_SIZE; load().catch((e) => toast(e.message)); });
  await load();
  return { refresh: () => load().catch(() => {}), cleanup: () => clearTimeout(typing) };
}

/** What a timeline entry says: queued, started, finished, or the step it reached. */
function timelineItem(entry) {
  const what = entry.state === "PENDING" ? (entry.attempt > 1 ? `queued again (attempt ${entry.attempt})` : "queued")
    : entry.state === "STARTED" ? `started on ${entry.worker || "a worker"}`
      : ["SUCCESS", "FAILURE", "REVOKED"].includes(entry.state) ? "finished"
        : `${entry.progress}% — ${entry.status || ""}`;
  return h("li", {}, h("time", { datetime: entry.at }, when(entry.at)), " — ",
    h("span", { class: `state-${entry.state}` }, entry.state), ` ${what}`);
}

async function taskPage(id) {
  const detail = await api(`/api/monitor/tasks/${encodeURIComponent(id)}`);
  const timeline = h("ol", { class: "timeline", id: "timeline" }, ...detail.timeline.map(timelineItem));
  const progress = h("div", {}, progressRow(detail, () => revoke(detail.task_id)));
  const outcome = h("div", {});
  const drawOutcome = (status) => outcome.replaceChildren(
    status.result !== undefined && status.result !== null ? h("pre", { class: "mono", id: "task-result" }, JSON.stringify(status.result, null, 2)) : "",
    status.error ? h("p", { class: "error-row", id: "task-error" }, `${status.error_code || "error"}: ${status.error}`) : "");
  main.replaceChildren(h("h1", {}, `${detail.kind} ${shortId(detail.task_id)}`),
    h("p", {}, detail.project_id ? h("a", { href: `#/projects/${detail.project_id}` }, `project ${detail.project_id}`) : "",
      ` · queue ${detail.queue} · attempt ${detail.attempt ?? 1} · ${detail.worker || "no worker yet"}`,
      detail.queue_wait !== null ? ` · waited ${duration(detail.queue_wait)}` : ""),
    progress, outcome, h("h2", {}, "Timeline"), timeline);
  drawOutcome(detail);
  const listener = (status) => {
    if (status.task_id !== detail.task_id) return;
    progress.replaceChildren(progressRow(status, () => revoke(status.task_id)));
    timeline.append(timelineItem({ ...status, at: new Date().toISOString() }));
    drawOutcome(status);
  };
  live.listeners.add(listener);
  return { cleanup: () => live.listeners.delete(listener) };
}

// ---- Monitor ------------------------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

/** An SVG element with attributes. */
function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  el.append(...children);
  return el;
}

/** Finished tasks per minute over the last hour: stacked bars (succeeded, failed, revoked). */
function throughputChart(minutes) {
  const width = 720, height = 180, left = 36, bottom = 22, top = 8;
  const total = (m) => m.succeeded + m.failed + m.revoked;
  const peak = Math.max(1, ...minutes.map(total));
  const step = (width - left) / Math.max(1, minutes.length);
  const y = (n) => (height - bottom) - (n / peak) * (height - bottom - top);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", id: "throughput-chart",
    "aria-label": `Tasks finished per minute over the last hour: ${minutes.reduce((a, m) => a + total(m), 0)} in all, ${minutes.reduce((a, m) => a + m.failed, 0)} failed` });
  for (const tick of [0, Math.round(peak / 2), peak]) {
    chart.append(svg("line", { x1: left, x2: width, y1: y(tick), y2: y(tick), class: "grid" }),
      svg("text", { x: left - 6, y: y(tick) + 4, "text-anchor": "end", class: "axis" }, String(tick)));
  }
  minutes.forEach((m, i) => {
    let base = 0;
    for (const [kind, n] of [["ok", m.succeeded], ["failed", m.failed], ["revoked", m.revoked]]) {
      if (!n) continue;
      const bar = svg("rect", { x: left + i * step + 1, width: Math.max(1, step - 2), y: y(base + n), height: y(base) - y(base + n), class: `bar-${kind}` },
        svg("title", {}, `${new Date(m.minute).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}: ${n} ${kind === "ok" ? "succeeded" : kind}`));
      chart.append(bar);
      base += n;
    }
    if (i % 10 === 0 && i < minutes.length - 5) {
      chart.append(svg("text", { x: left + i * step, y: height - 6, class: "axis" },
        new Date(m.minute).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })));
    }
  });
  return chart;
}

function percent(rate) {
  return `${(rate * 100).toFixed(rate > 0 && rate < 0.1 ? 1 : 0)} %`;
}

function seconds(value) {
  return value === null || value === undefined ? "–" : value < 1 ? `${Math.round(value * 1000)} ms` : `${value.toFixed(1)} s`;
}

async function monitorPage() {
  const banner = h("div", { id: "alerts", role: "alert" });
  const figures = h("div", { class: "stats" });
  const chartBox = h("div", { class: "panel chart" });
  const workers = h("tbody", { id: "workers" });
  const queues = h("tbody", { id: "queues" });
  const kinds = h("tbody", { id: "kinds" });
  const feed = h("ol", { class: "feed", id: "live-tasks" });
  const table = (headers, body) => h("div", { class: "table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, ...headers.map((t) => h("th", {}, t)))), body));
  main.replaceChildren(h("h1", {}, "Monitor"), banner, figures,
    h("h2", {}, "Finished per minute, last hour"), chartBox,
    h("h2", {}, "Workers"), table(["Worker", "Host", "Status", "Active", "Processed", "Succeeded", "Failed", "Slots", "Queues", "Last heartbeat"], workers),
    h("h2", {}, "Queues"), table(["Queue", "Waiting", "Running", "Oldest waiting", "Consumers"], queues),
    h("h2", {}, "By kind, last hour"), table(["Kind", "Succeeded", "Failed", "Revoked", "Runtime p50", "p95", "max", "Queue wait p50", "p95"], kinds),
    h("h2", {}, "Live"), feed);
  const stat = (name, label, value) => h("div", { class: `stat ${name}`, "data-stat": name },
    h("div", { class: "label" }, label), h("div", { class: "value" }, value));
  async function load() {
    const o = await api("/api/monitor");
    banner.replaceChildren(...o.alerts.map((a) => h("p", { class: `alert ${a.severity}`, "data-alert": a.kind },
      h("strong", {}, a.kind.replaceAll("_", " ")), " — ", a.message)));
    const s = o.stats;
    figures.replaceChildren(stat("online", "Workers online", o.workers.online),
      stat("finished", "Finished (1 h)", s.finished), stat("rate", "Per minute", s.throughput_per_minute.toFixed(1)),
      stat("failure", "Failure rate", percent(s.failure_rate)),
      stat("waiting", "Waiting", o.queues.reduce((n, q) => n + q.depth, 0)));
    chartBox.replaceChildren(throughputChart(s.minutes),
      h("p", { class: "legend muted" }, h("span", { class: "key ok" }), "succeeded ", h("span", { class: "key failed" }), "failed ",
        h("span", { class: "key revoked" }), "revoked"));
    workers.replaceChildren(...o.workers.workers.map((w) => h("tr", { "data-worker": w.id },
      h("td", { class: "mono" }, w.id), h("td", {}, w.host),
      h("td", {}, h("span", { class: "status" }, h("span", { class: `dot ${w.online ? "green" : "grey"}` }), w.online ? "online" : "offline")),
      h("td", {}, w.active), h("td", {}, w.processed), h("td", {}, w.succeeded), h("td", {}, w.failed),
      h("td", {}, w.concurrency), h("td", {}, w.queues.length ? w.queues.join(", ") : "all"), h("td", {}, when(w.last_heartbeat)))));
    if (!o.workers.workers.length) workers.replaceChildren(h("tr", {}, h("td", { colspan: 10, class: "muted" }, "No worker has registered")));
    queues.replaceChildren(...o.queues.map((q) => h("tr", { "data-queue": q.name },
      h("td", {}, q.name), h("td", {}, q.depth), h("td", {}, q.active),
      h("td", {}, q.oldest_wait_seconds === null ? "–" : duration(q.oldest_wait_seconds)), h("td", {}, q.consumers))));
    kinds.replaceChildren(...s.kinds.map((k) => h("tr", {},
      h("td", {}, k.kind), h("td", {}, k.succeeded), h("td", {}, k.failed), h("td", {}, k.revoked),
      h("td", {}, seconds(k.runtime.p50)), h("td", {}, seconds(k.runtime.p95)), h("td", {}, seconds(k.runtime.max)),
      h("td", {}, seconds(k.queue_wait.p50)), h("td", {}, seconds(k.queue_wait.p95)))));
    if (!s.kinds.length) kinds.replaceChildren(h("tr", {}, h("td", { colspan: 9, class: "muted" }, "Nothing finished in the last hour")));
  }
  // The live list: every change the event stream brings, newest first.
  const listener = (status) => {
    feed.prepend(h("li", {}, h("time", {}, new Date().toLocaleTimeString()), " ",
      h("a", { class: "mono", href: `#/tasks/${status.task_id}` }, shortId(status.task_id)), ` ${status.kind} `,
      h("span", { class: `state-${status.state}` }, status.state), ` ${status.progress}% ${status.ready ? "" : status.status}`));
    while (feed.children.length > 30) feed.lastChild.remove();
    // A task that starts or ends changes the running and finished figures.
    if (status.ready || status.state === "STARTED") scheduleLoad();
  };
  let pending = null;
  const scheduleLoad = () => {
    if (pending) return;
    pending = setTimeout(() => { pending = null; load().catch(() => {}); }, 300);
  };
  live.listeners.add(listener);
  const timer = setInterval(() => load().catch(() => {}), 5000);
  await load();
  return {
    refresh: () => load().catch(() => {}),
    cleanup: () => { clearInterval(timer); clearTimeout(pending); live.listeners.delete(listener); },
  };
}

// ---- Start --------------------------------------------------------------------------------------

document.getElementById("token-form").addEventListener("submit", () => {});
window.addEventListener("hashchange", route);
// Back from the background, or the hub restarted: catch up from the API.
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") live.refresh().then(rerender).catch(() => {});
});
route().then(() => live.connect());
