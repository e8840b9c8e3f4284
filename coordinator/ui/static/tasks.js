// The sync tasks and clones tables, with live progress bars and their actions.

import { bar, bytes, el, patchRows, rate, stateClass, time } from "./format.js";

const CANCELABLE = new Set(["pending", "syncing"]);
// A cancel keeps the verified bytes for a retry, as a failure does.
const RETRYABLE = new Set(["failed", "canceled"]);

export function taskRow(task, actions) {
  const buttons = [];
  if (RETRYABLE.has(task.status)) {
    buttons.push(el("button", { type: "button", class: "small", dataset: { action: "retry" }, onclick: () => actions.retry(task.task_id) }, "Retry"));
  }
  if (CANCELABLE.has(task.status)) {
    buttons.push(el("button", { type: "button", class: "small", dataset: { action: "cancel" }, onclick: () => actions.cancel(task.task_id) }, "Cancel"));
  }
  return el(
    "tr",
    { dataset: { task: task.task_id, status: task.status } },
    el("td", { class: "num" }, task.task_id),
    el("td", {}, task.template_name),
    el("td", { class: "num" }, `v${task.version}`),
    el("td", {}, `${task.source_node.node_name} → ${task.target_node.node_name}`),
    el("td", {}, el("span", { class: stateClass(task.status) }, task.status)),
    el("td", { class: "bar-col" }, bar(task.progress, task.status)),
    el("td", { class: "num" }, task.bytes_total ? `${bytes(task.bytes_done)} / ${bytes(task.bytes_total)}` : ""),
    el("td", { class: "num" }, task.status === "syncing" ? rate(task.rate_bytes_per_sec) : ""),
    el("td", {}, time(task.sync_start_time)),
    el("td", { class: "error-text" }, task.error_message ?? ""),
    el("td", { class: "actions" }, ...buttons),
  );
}

export function renderTasks(table, tasks, actions) {
  const sorted = [...tasks.values()].sort((a, b) => b.task_id - a.task_id);
  patchRows(
    table.tBodies[0],
    sorted.length ? sorted.map((t) => taskRow(t, actions)) : [el("tr", {}, el("td", { colspan: 11, class: "dim" }, "No sync tasks."))],
  );
}

export function renderClones(table, clones, templateNames) {
  const sorted = [...clones.values()].sort((a, b) => b.clone_id - a.clone_id);
  const rows = sorted.map((c) =>
    el(
      "tr",
      { dataset: { clone: c.clone_id, status: c.status } },
      el("td", { class: "num" }, c.clone_id),
      el("td", {}, templateNames.get(c.template_id) ?? `#${c.template_id}`),
      el("td", { class: "num" }, `v${c.version}`),
      el("td", {}, c.node.node_name),
      el("td", {}, c.name),
      el("td", { class: "num" }, c.vmid ?? ""),
      el("td", {}, c.linked ? "linked" : "full"),
      el("td", {}, el("span", { class: stateClass(c.status) }, c.status)),
      el("td", { class: "bar-col" }, bar(c.progress, c.status)),
      el("td", { class: "error-text" }, c.error_message ?? ""),
    ),
  );
  patchRows(table.tBodies[0], rows.length ? rows : [el("tr", {}, el("td", { colspan: 10, class: "dim" }, "No clones."))]);
}
