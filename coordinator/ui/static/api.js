// The coordinator's API as the dashboard calls it: the bearer token of this tab, the
// envelope unwrapped, and errors carried as the API words them (its `message`).

const TOKEN_KEY = "pvesphere.token";
export const API = "/api/v1";
const PAGE_SIZE = 100;

export class ApiError extends Error {
  constructor(status, slug, message) {
    super(message);
    this.status = status;
    this.slug = slug;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

// The data of a success envelope, or an ApiError with the envelope's message.
export function unwrap(status, text) {
  let envelope = null;
  try {
    envelope = JSON.parse(text);
  } catch {
    envelope = null;
  }
  if (status >= 200 && status < 300 && envelope !== null) return envelope.data;
  const message =
    envelope && typeof envelope.message === "string" ? envelope.message : `HTTP ${status} from the coordinator`;
  const slug = envelope && envelope.data && envelope.data.error ? envelope.data.error : "";
  throw new ApiError(status, slug, message);
}

export async function call(method, path, body) {
  const headers = { Authorization: `Bearer ${token() ?? ""}` };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(API + path, init);
  } catch (err) {
    throw new ApiError(0, "unreachable", `the coordinator does not answer (${err.message})`);
  }
  return unwrap(response.status, await response.text());
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body);

// Every item of a paginated list (the API's pages hold at most 100).
export async function all(path, params = {}) {
  const items = [];
  for (let page = 1; ; page++) {
    const query = new URLSearchParams({ ...params, page: String(page), page_size: String(PAGE_SIZE) });
    const data = await get(`${path}?${query}`);
    items.push(...data.list);
    if (items.length >= data.total || data.list.length === 0) return items;
  }
}

// POST /templates/upload as multipart, through XMLHttpRequest for its upload progress
// (fetch has none). The fields go first and the file last, as the API reads them.
// Returns {promise, abort}; onProgress(sentBytes, totalBytes).
export function upload(fields, file, onProgress) {
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) form.append(name, value);
  form.append("file", file, file.name);
  const xhr = new XMLHttpRequest();
  const promise = new Promise((resolve, reject) => {
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress(event.loaded, event.total);
    };
    xhr.onload = () => {
      try {
        resolve(unwrap(xhr.status, xhr.responseText));
      } catch (err) {
        reject(err);
      }
    };
    xhr.onerror = () => reject(new ApiError(0, "unreachable", "the upload was cut off: the coordinator closed the connection"));
    xhr.onabort = () => reject(new ApiError(0, "aborted", "upload canceled"));
  });
  xhr.open("POST", `${API}/templates/upload`);
  xhr.setRequestHeader("Authorization", `Bearer ${token() ?? ""}`);
  xhr.send(form);
  return { promise, abort: () => xhr.abort() };
}
