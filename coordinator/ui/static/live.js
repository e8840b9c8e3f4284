// What one event of GET /api/v1/events changes in what the dashboard holds. Returns "render"
// when the change is in place, "refresh" when the event tells of something not held yet, or
// of an end (the instances it made are read again), "ignore" otherwise.

const ENDS = new Set(["completed", "failed", "canceled", "imported", "available"]);
const PROGRESS_FIELDS = ["status", "progress", "bytes_done", "bytes_total", "rate_bytes_per_sec", "error_message"];

function copyProgress(target, event) {
  for (const field of PROGRESS_FIELDS) {
    if (event[field] !== undefined) target[field] = event[field];
  }
}

export function applyEvent(store, event) {
  switch (event.kind) {
    case "sync_task": {
      const task = store.tasks.get(event.id);
      if (!task) return "refresh";
      copyProgress(task, event);
      return ENDS.has(event.status) ? "refresh" : "render";
    }
    case "upload": {
      const template = store.templates.get(event.template_id);
      const info = template && template.upload_info;
      if (!info || info.upload_id !== event.id) return "refresh";
      info.status = event.status;
      if (event.progress !== undefined) info.import_progress = event.progress;
      if (event.error_message !== undefined) info.error_message = event.error_message;
      return ENDS.has(event.status) ? "refresh" : "render";
    }
    case "clone": {
      const clone = store.clones.get(event.id);
      if (!clone) return "refresh";
      copyProgress(clone, event);
      return ENDS.has(event.status) ? "refresh" : "render";
    }
    case "version":
      return "refresh";
    default:
      return "ignore";
  }
}
