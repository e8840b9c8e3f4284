// How numbers, times and states read on the dashboard; and a small DOM builder.

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

export function bytes(n) {
  if (n === null || n === undefined) return "";
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value >= 10 || unit === 0 ? Math.round(value) : value.toFixed(1)} ${UNITS[unit]}`;
}

export function rate(n) {
  return n ? `${bytes(n)}/s` : "";
}

export function time(iso) {
  if (!iso) return "";
  const at = new Date(iso);
  return at.toLocaleString(undefined, { month: "short", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

// A state's colour class: the same words across uploads, instances, sync tasks and clones.
const STATE_CLASS = {
  available: "ok", completed: "ok", imported: "ok",
  syncing: "busy", importing: "busy", uploading: "busy", uploaded: "busy", cloning: "busy",
  pending: "wait", waiting_for_sync: "wait",
  failed: "bad",
  canceled: "off", deleted: "off", deleting: "off",
};

export function stateClass(status) {
  return `state s-${STATE_CLASS[status] ?? "off"}`;
}

export const ACTIVE = new Set(["pending", "syncing", "importing", "uploading", "uploaded", "cloning", "waiting_for_sync"]);

// el("td", {class: "x", title: "y"}, child, "text", ...): attributes set as properties or
// attributes (never an inline style or handler: the page's CSP allows neither).
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name === "onclick") node.addEventListener("click", value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// Puts `rows` in `body`, keeping in place every row already there with the same markup: the
// tables are drawn again at every event, and a row replaced under the pointer would lose a
// click. A kept row keeps its handlers, so handlers read their data by id when clicked.
export function patchRows(body, rows) {
  const old = new Map([...body.children].map((row) => [row.outerHTML, row]));
  const next = rows.map((row) => old.get(row.outerHTML) ?? row);
  next.forEach((row, i) => {
    if (body.children[i] !== row) body.insertBefore(row, body.children[i] ?? null);
  });
  while (body.children.length > next.length) body.lastElementChild.remove();
}

// A progress bar: its width is set through the CSSOM, which the CSP allows.
export function bar(percent, status) {
  const fill = el("div", { class: `fill ${stateClass(status).split(" ")[1]}` });
  fill.style.width = `${Math.max(0, Math.min(100, percent))}%`;
  return el(
    "div",
    { class: "progress", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": percent },
    fill,
    el("span", { class: "pct" }, `${percent} %`),
  );
}
