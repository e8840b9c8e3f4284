// The templates × nodes matrix: one row per template, one column per node; each cell the
// instance that node holds (its version and state), or the sync task bringing it there.

import { ACTIVE, bar, el, patchRows, stateClass } from "./format.js";

// The newest sync task of each (template, node, version), by task id.
export function latestTasks(tasks) {
  const latest = new Map();
  for (const task of tasks.values()) {
    const key = `${task.template_id}/${task.target_node.node_id}/${task.version}`;
    const seen = latest.get(key);
    if (!seen || seen.task_id < task.task_id) latest.set(key, task);
  }
  return latest;
}

function cell(template, node, latest) {
  const attrs = { class: "cell", dataset: { template: template.id, node: node.id } };
  if (node.cluster_id !== template.cluster_id) return el("td", { ...attrs, class: "cell na" }, "");
  const current = template.current_version;
  const instances = (template.instances ?? []).filter((i) => i.node_id === node.id && i.status !== "deleted");
  const here = instances.find((i) => i.version === current);
  const older = instances.filter((i) => i.version !== current).map((i) => `v${i.version}`);
  const task = latest.get(`${template.id}/${node.id}/${current}`);
  const parts = [];
  let status = "none";
  if (task && ACTIVE.has(task.status)) {
    status = task.status;
    parts.push(el("span", { class: stateClass(task.status) }, `v${current} ${task.status}`), bar(task.progress, task.status));
  } else if (task && (task.status === "failed" || task.status === "canceled") && here?.status !== "available") {
    // The newest word on this node: the copy that did not come (its instance may lag behind).
    status = task.status;
    parts.push(el("span", { class: stateClass(task.status), title: task.error_message ?? "" }, `v${current} ${task.status}`));
  } else if (here) {
    status = here.status;
    const label = here.status === "available" ? `v${here.version}` : `v${here.version} ${here.status}`;
    parts.push(el("span", { class: stateClass(here.status), title: here.is_primary ? "primary (imported here)" : "" }, label));
    if (here.vmid) parts.push(el("span", { class: "vmid", title: "VMID" }, here.vmid));
    if (here.is_primary) parts.push(el("span", { class: "tag", title: "imported here (the sync source)" }, "P"));
  } else {
    parts.push(el("span", { class: "dim" }, "—"));
  }
  if (older.length) parts.push(el("span", { class: "older", title: "older versions still on this node" }, `+${older.join(",")}`));
  attrs.dataset.status = status;
  return el("td", attrs, ...parts.flatMap((part, i) => (i ? [" ", part] : [part])));
}

function uploadCell(info) {
  if (!info) return el("td", { class: "dim" }, "no upload");
  if (info.status === "imported") return el("td", {}, el("span", { class: stateClass("imported") }, "imported"));
  return el(
    "td",
    { title: info.error_message ?? "" },
    el("span", { class: stateClass(info.status) }, info.status),
    ACTIVE.has(info.status) ? bar(info.import_progress ?? 0, info.status) : null,
  );
}

export function renderMatrix(table, templates, nodes, tasks, actions) {
  const latest = latestTasks(tasks);
  const head = el(
    "tr",
    {},
    el("th", {}, "Template"),
    el("th", {}, "Cluster"),
    el("th", { title: "current version" }, "Ver."),
    el("th", {}, "Storage"),
    el("th", {}, "Upload"),
    nodes.map((n) =>
      el(
        "th",
        { class: "node", title: n.agent_live ? `${n.node_name}: agent live` : `${n.node_name}: no live agent` },
        el("span", { class: n.agent_live ? "dot up" : "dot down" }),
        n.node_name,
      ),
    ),
    el("th", {}, ""),
  );
  patchRows(table.tHead, [head]);
  const rows = templates.map((t) => {
    const info = t.upload_info;
    const storage = info
      ? [info.storage_name, " ", el("span", { class: info.is_shared ? "tag shared" : "tag local" }, info.is_shared ? "shared" : "local")]
      : [];
    return el(
      "tr",
      { dataset: { template: t.id } },
      el("td", { class: "name", title: t.description || "" }, t.template_name, t.status === "deleting" ? el("span", { class: stateClass("deleting") }, "deleting") : null),
      el("td", {}, t.cluster_name),
      el("td", { class: "num" }, `v${t.current_version}`),
      el("td", {}, ...storage),
      uploadCell(info),
      nodes.map((n) => cell(t, n, latest)),
      el(
        "td",
        { class: "actions" },
        el("button", { type: "button", class: "small", dataset: { action: "sync" }, onclick: () => actions.sync(t.id) }, "Sync…"),
        el("button", { type: "button", class: "small", dataset: { action: "clone" }, onclick: () => actions.clone(t.id) }, "Clone…"),
      ),
    );
  });
  patchRows(table.tBodies[0], rows);
}
