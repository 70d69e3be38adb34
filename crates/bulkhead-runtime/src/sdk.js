// Bulkhead's browser SDK: the surface of the sandbox's `bulkhead` module (db, storage, files,
// search, flags, config, user) for a front-end, over the browser's signed-in session.
//
//   import * as bulkhead from "../sdk/bulkhead.js";
//   await bulkhead.session.signIn("alice", "…");
//   const profile = await bulkhead.storage.get("user:profile");
//
// The platform serves this file under the tenant's path (`/t/{tenant}/sdk/bulkhead.js`) or on
// the tenant's host (`/sdk/bulkhead.js`). Every URL below is relative to where it was served
// from, so nothing here names a tenant: the session's tenant and the host decide, and a session
// of another tenant is refused by the platform (403 `tenant_mismatch` or 401).
//
// The session lives in HttpOnly cookies the page never sees; writes carry the session's CSRF
// token (the readable `bulkhead_csrf` cookie) in `X-CSRF-Token`, which another site cannot read.

const base = new URL("..", import.meta.url);

/** A refusal from the platform: HTTP status, the stable error code, message and field. */
export class BulkheadError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.name = "BulkheadError";
    this.status = status;
    this.code = code;
    if (field !== undefined && field !== null) this.field = field;
  }
}

function csrfToken() {
  const entry = document.cookie.split("; ").find((c) => c.startsWith("bulkhead_csrf="));
  return entry === undefined ? null : decodeURIComponent(entry.slice("bulkhead_csrf=".length));
}

async function failure(r) {
  let e = {};
  try {
    const body = await r.json();
    // The platform's `{error: {code, message, field}}`, or OAuth's `{error, error_description}`
    // from the realm's sign-in.
    e = typeof body.error === "string" ? { code: body.error, message: body.error_description } : body.error || {};
  } catch (_) {
    // Not JSON: the status says it.
  }
  return new BulkheadError(r.status, e.code || "http_" + r.status, e.message || r.statusText, e.field);
}

// One request to this tenant's API: `path` is relative to the tenant's base.
async function request(method, path, options = {}) {
  const url = new URL(path, base);
  for (const [k, v] of options.query || []) url.searchParams.append(k, v);
  const headers = { Accept: "application/json" };
  if (method !== "GET" && method !== "HEAD") {
    const token = csrfToken();
    if (token !== null) headers["X-CSRF-Token"] = token;
  }
  let body;
  if (options.raw !== undefined) {
    body = options.raw;
    if (options.type) headers["Content-Type"] = options.type;
  } else if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(options.json);
  }
  const r = await fetch(url, { method, headers, body, credentials: "same-origin" });
  if (options.missingIsNull && r.status === 404) return null;
  if (!r.ok) throw await failure(r);
  if (r.status === 204) return null;
  if (options.text) return r.text();
  return (r.headers.get("content-type") || "").includes("json") ? r.json() : r.text();
}

const segment = (what, v) => {
  if (typeof v !== "string" || v.length === 0) throw new TypeError(what + " must be a non-empty string");
  return encodeURIComponent(v);
};
// A key is one path parameter however it is spelled: '/' and '.' escaped too, so that no key
// (`..`, `a/../b`) is a path the browser would normalise.
const keyPath = (key) => {
  if (typeof key !== "string" || key.length === 0) throw new TypeError("key must be a non-empty string");
  return encodeURIComponent(key).replace(/\./g, "%2E");
};
const isPlain = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

// `where({status: "open", priority: {gte: 3}, tags: {in: ["a", "b"]}})` as the REST API's
// query parameters (`status=open&priority[gte]=3&tags[in]=a,b`).
function conditionPairs(list) {
  const pairs = [];
  for (const cond of list) {
    if (!isPlain(cond)) throw new TypeError("where() takes an object of field conditions");
    for (const [field, v] of Object.entries(cond)) {
      if (isPlain(v)) {
        for (const [op, arg] of Object.entries(v)) {
          pairs.push([field + "[" + op + "]", Array.isArray(arg) ? arg.map(String).join(",") : String(arg)]);
        }
      } else if (v === null) {
        pairs.push([field + "[null]", "true"]);
      } else {
        pairs.push([field, String(v)]);
      }
    }
  }
  return pairs;
}

class Query {
  #entity;
  #where = [];
  #order = null;
  #limit = null;
  #after = null;
  constructor(entity) {
    this.#entity = segment("entity", entity);
  }
  where(conditions) {
    this.#where.push(conditions);
    return this;
  }
  orderBy(field) {
    this.#order = String(field);
    return this;
  }
  limit(n) {
    this.#limit = n;
    return this;
  }
  after(cursor) {
    this.#after = String(cursor);
    return this;
  }
  #pairs() {
    const pairs = conditionPairs(this.#where);
    if (this.#order !== null) pairs.push(["order", this.#order]);
    if (this.#limit !== null) pairs.push(["limit", String(this.#limit)]);
    if (this.#after !== null) pairs.push(["after", this.#after]);
    return pairs;
  }
  /** `{records, next_cursor}`, as in a function. */
  fetch() {
    return request("GET", "api/" + this.#entity, { query: this.#pairs() });
  }
  async count() {
    const pairs = conditionPairs(this.#where);
    pairs.push(["limit", "1"], ["count", "true"]);
    return (await request("GET", "api/" + this.#entity, { query: pairs })).count;
  }
}

export const db = Object.freeze({
  query: (entity) => new Query(entity),
  get: (entity, id) => request("GET", "api/" + segment("entity", entity) + "/" + segment("id", id)),
  insert: (entity, record) => request("POST", "api/" + segment("entity", entity), { json: record }),
  update: (entity, id, patch) =>
    request("PATCH", "api/" + segment("entity", entity) + "/" + segment("id", id), { json: patch }),
  delete: async (entity, id) => {
    await request("DELETE", "api/" + segment("entity", entity) + "/" + segment("id", id));
    return { deleted: true };
  },
  count: (entity, where) => {
    const q = new Query(entity);
    if (where !== undefined) q.where(where);
    return q.count();
  },
});

// The tenant's storage (`storage.*`, where the manifest's `functions.storage` grants the
// caller's roles) and the signed-in user's own (`storage.user.*`).
function store(root) {
  return Object.freeze({
    get: async (key) => {
      const r = await request("GET", root + "/" + keyPath(key), { missingIsNull: true });
      return r === null ? null : r.value;
    },
    set: async (key, value) => {
      await request("PUT", root + "/" + keyPath(key), { json: value });
    },
    delete: async (key) => (await request("DELETE", root + "/" + keyPath(key), { missingIsNull: true })) !== null,
    list: async (prefix) => (await request("GET", root, { query: [["prefix", prefix === undefined ? "" : String(prefix)]] })).entries,
  });
}
export const storage = Object.freeze(Object.assign(Object.create(null), store("storage"), { user: store("me/storage") }));

export const files = Object.freeze({
  list: async () => (await request("GET", "files")).files,
  /** The file's content as text. */
  get: (key) => request("GET", "files/" + keyPath(key), { text: true }),
  /** Stores `content` (a string, Blob or ArrayBuffer) under `key`. */
  put: (key, content, type) =>
    request("PUT", "files/" + keyPath(key), { raw: content, type: type || "application/octet-stream" }),
  delete: (key) => request("DELETE", "files/" + keyPath(key)),
});

export const search = Object.freeze({
  query: (q, options = {}) => {
    const pairs = [["q", q === undefined ? "" : String(q)]];
    if (options.entity !== undefined) pairs.push(["entity", String(options.entity)]);
    if (options.limit !== undefined) pairs.push(["limit", String(options.limit)]);
    if (options.cursor !== undefined) pairs.push(["cursor", String(options.cursor)]);
    return request("GET", "search", { query: pairs });
  },
});

// Flags through OFREP (the tenant's evaluation for this caller).
export const flags = Object.freeze({
  get: async (name) => {
    const r = await request("POST", "ofrep/v1/evaluate/flags/" + segment("name", name), { json: { context: {} }, missingIsNull: true });
    return r === null ? null : r.value;
  },
});

export const config = Object.freeze({
  get: async (name) => {
    const all = await request("GET", "config");
    const settings = all.settings;
    return Object.prototype.hasOwnProperty.call(settings, name) ? settings[name] : null;
  },
});

/** The signed-in caller: `{id, roles, anonymous}`. */
export const user = () => request("GET", "me");

/** The app's own function routes: `fn("notes")`, `fn("notes/a", {method: "PUT", body: {...}})`. */
export function fn(path, init = {}) {
  const method = (init.method || "GET").toUpperCase();
  return request(method, "fn/" + String(path).replace(/^\/+/, ""), init.body === undefined ? {} : { json: init.body });
}

// Sign-in and sign-out with this tenant's realm; the platform says where it is.
let realm = null;
async function realmEndpoints() {
  if (realm === null) realm = await request("GET", "sdk/session");
  return realm;
}
export const session = Object.freeze({
  signIn: async (username, password) => {
    const where = await realmEndpoints();
    const body = new URLSearchParams({ client_id: where.client_id, username, password });
    const r = await fetch(where.login, { method: "POST", body, credentials: "same-origin" });
    if (!r.ok) throw await failure(r);
    return user();
  },
  signOut: async () => {
    const where = await realmEndpoints();
    const r = await fetch(where.logout, { method: "POST", credentials: "same-origin" });
    if (!r.ok) throw await failure(r);
  },
});

export default Object.freeze({ db, storage, files, search, flags, config, user, fn, session, BulkheadError });
