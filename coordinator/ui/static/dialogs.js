// The upload (drag and drop), sync and clone dialogs. Each shows the API's own message when
// it refuses.

import { post, upload } from "./api.js";
import { bytes, el } from "./format.js";

const $ = (id) => document.getElementById(id);

function checkboxes(container, nodes, checked = () => false, disabled = () => false) {
  container.replaceChildren(
    ...nodes.map((n) =>
      el(
        "label",
        { class: "check" },
        el("input", { type: "checkbox", value: n.id, checked: checked(n), disabled: disabled(n) }),
        n.node_name,
      ),
    ),
  );
}

// The start button submits its form, and so does Enter in a field: never a navigation (the
// page's CSP has form-action 'none'), the dialog's own call instead.
function submitStarts(form, start) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    start();
  });
}

const checkedIds = (container) =>
  [...container.querySelectorAll("input[type=checkbox]:checked")].map((box) => Number(box.value));

function fillSelect(select, options, keep) {
  select.replaceChildren(...options.map(([value, label]) => el("option", { value }, label)));
  if (keep !== undefined && options.some(([value]) => String(value) === String(keep))) select.value = keep;
}

// ---------------------------------------------------------------- upload

export class UploadDialog {
  constructor(store, done) {
    this.store = store;
    this.done = done;
    this.file = null;
    this.running = null;
    const zone = $("drop-zone");
    for (const name of ["dragenter", "dragover"]) {
      zone.addEventListener(name, (event) => {
        event.preventDefault();
        zone.classList.add("over");
      });
    }
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("over");
      if (event.dataTransfer.files.length) this.choose(event.dataTransfer.files[0]);
    });
    $("upload-file").addEventListener("change", (event) => {
      if (event.target.files.length) this.choose(event.target.files[0]);
    });
    $("upload-cluster").addEventListener("change", () => this.fillStorages());
    $("upload-storage").addEventListener("change", () => this.fillTargets());
    submitStarts($("upload-form"), () => this.start());
    $("upload-cancel").addEventListener("click", () => this.close());
  }

  open() {
    $("upload-error").textContent = "";
    $("upload-status").textContent = "";
    this.setBar(0);
    const clusters = this.store.clusters.map((c) => [c.id, c.cluster_name]);
    fillSelect($("upload-cluster"), clusters, this.store.clusterFilter || $("upload-cluster").value);
    this.fillStorages();
    $("upload-dialog").showModal();
  }

  close() {
    if (this.running) this.running.abort();
    $("upload-dialog").close();
  }

  choose(file) {
    this.file = file;
    $("drop-label").textContent = `${file.name} (${bytes(file.size)})`;
    const name = $("upload-name");
    if (!name.value) name.value = file.name.replace(/\.(qcow2|raw|img|vmdk|vdi|vhdx?)$/i, "");
  }

  // Storages that take VM images: a shared one once (its first id, as PVE lists it on node 1
  // first), a local one per node.
  storages() {
    const cluster = Number($("upload-cluster").value);
    const seen = new Set();
    return [...this.store.storages].sort((a, b) => a.id - b.id).filter((s) => {
      if (s.cluster_id !== cluster || !s.content.split(",").includes("images")) return false;
      if (!s.shared) return true;
      if (seen.has(s.storage_name)) return false;
      seen.add(s.storage_name);
      return true;
    });
  }

  fillStorages() {
    const options = this.storages().map((s) => [
      s.id,
      s.shared ? `${s.storage_name} (${s.type}, shared)` : `${s.storage_name} on ${s.node_name} (${s.type}, local)`,
    ]);
    fillSelect($("upload-storage"), options, $("upload-storage").value);
    this.fillTargets();
  }

  fillTargets() {
    const storage = this.store.storages.find((s) => s.id === Number($("upload-storage").value));
    const local = storage && !storage.shared;
    $("upload-targets").disabled = !local;
    const others = local ? this.store.nodes.filter((n) => n.cluster_id === storage.cluster_id && n.id !== storage.node_id) : [];
    checkboxes($("upload-target-list"), others);
    if (!local) $("upload-target-list").append(el("span", { class: "dim" }, storage ? "shared: every node sees it" : "choose a storage"));
  }

  setBar(percent) {
    $("upload-bar").style.width = `${percent}%`;
    $("upload-bar").parentElement.setAttribute("aria-valuenow", percent);
  }

  async start() {
    $("upload-error").textContent = "";
    if (!this.file) {
      $("upload-error").textContent = "choose or drop a disk image first";
      return;
    }
    const fields = {
      template_name: $("upload-name").value,
      description: $("upload-description").value,
      cluster_id: $("upload-cluster").value,
      storage_id: $("upload-storage").value,
    };
    const targets = checkedIds($("upload-target-list"));
    if (targets.length) fields.sync_node_ids = targets.join(",");
    $("upload-start").disabled = true;
    $("upload-cancel").textContent = "Cancel upload";
    this.running = upload(fields, this.file, (sent, total) => {
      this.setBar(Math.floor((100 * sent) / total));
      $("upload-status").textContent = `${bytes(sent)} of ${bytes(total)} sent`;
    });
    try {
      const answer = await this.running.promise;
      this.setBar(100);
      const copies = answer.sync_tasks.length ? `, then copied to ${answer.sync_tasks.map((t) => t.target_node_name).join(", ")}` : "";
      $("upload-status").textContent = `Stored and checked: template ${answer.template_id} imports on ${answer.import_node.node_name}${copies}.`;
      this.file = null;
      $("drop-label").textContent = "Uploaded. Drop another image to upload more.";
      $("upload-name").value = "";
      this.done();
    } catch (err) {
      $("upload-error").textContent = err.message;
    } finally {
      this.running = null;
      $("upload-start").disabled = false;
      $("upload-cancel").textContent = "Close";
    }
  }
}

// ---------------------------------------------------------------- sync and clone

// A dialog about one template that makes one API call: `${name}-dialog`, its
// `${name}-start`, `${name}-cancel` and `${name}-error`. It stays open, with the API's
// message, when the call is refused.
class TemplateAction {
  constructor(name, store, done) {
    this.name = name;
    this.store = store;
    this.done = done;
    this.template = null;
    submitStarts($(`${name}-form`), () => this.start());
    $(`${name}-cancel`).addEventListener("click", () => $(`${name}-dialog`).close());
  }

  open(template) {
    this.template = template;
    $(`${this.name}-error`).textContent = "";
    this.fill(template, this.store.nodes.filter((n) => n.cluster_id === template.cluster_id));
    $(`${this.name}-dialog`).showModal();
  }

  async start() {
    $(`${this.name}-error`).textContent = "";
    try {
      const note = await this.call(this.template);
      $(`${this.name}-dialog`).close();
      this.done(note);
    } catch (err) {
      $(`${this.name}-error`).textContent = err.message;
    }
  }
}

export class SyncDialog extends TemplateAction {
  constructor(store, done) {
    super("sync", store, done);
  }

  fill(template, nodes) {
    $("sync-template").textContent = template.template_name;
    const holds = new Set(
      (template.instances ?? []).filter((i) => i.version === template.current_version && i.status === "available").map((i) => i.node_id),
    );
    checkboxes($("sync-nodes"), nodes, (n) => !holds.has(n.id), (n) => holds.has(n.id));
  }

  async call(template) {
    const answer = await post(`/templates/${template.id}/sync`, { target_node_ids: checkedIds($("sync-nodes")) });
    return answer.skipped?.length ? `skipped: ${answer.skipped.map((s) => `${s.node_name} (${s.reason})`).join("; ")}` : "";
  }
}

export class CloneDialog extends TemplateAction {
  constructor(store, done) {
    super("clone", store, done);
  }

  fill(template, nodes) {
    $("clone-template").textContent = `${template.template_name} v${template.current_version}`;
    fillSelect($("clone-node"), nodes.map((n) => [n.id, n.node_name]), $("clone-node").value);
  }

  async call(template) {
    const kind = $("clone-kind").value;
    const clone = await post(`/templates/${template.id}/clone`, {
      node_id: Number($("clone-node").value),
      name: $("clone-name").value,
      full: kind === "" ? null : kind === "full",
    });
    return `clone ${clone.clone_id} (${clone.name}) on ${clone.node.node_name}: ${clone.status}`;
  }
}
