// The `bulkhead` module's objects for one invocation. Evaluated in the invocation's fresh
// context before any of the app's code, it returns a function that takes the host call (a
// native function bound to this invocation's tenant and caller) and the caller; nothing here
// or in the host names a tenant. Built-ins are captured now, so what app code later does to
// `JSON`, `Object` or prototypes cannot change how requests and answers are encoded.
(function () {
  "use strict";
  const parse = JSON.parse;
  const stringify = JSON.stringify;
  const freeze = Object.freeze;
  const WeakSetCtor = WeakSet;
  const ErrorCtor = Error;
  const PromiseCtor = Promise;
  const isArray = Array.isArray;

  return function (host, callerJson) {
    const caller = parse(callerJson);
    const ours = new WeakSetCtor();

    class BulkheadError extends ErrorCtor {
      constructor(code, message, field) {
        super(message);
        this.name = "BulkheadError";
        this.code = code;
        if (field !== undefined && field !== null) this.field = field;
      }
    }

    function call(op, args) {
      const out = parse(host(op, stringify(args === undefined ? null : args)));
      if (out.error) {
        const e = new BulkheadError(out.error.code, out.error.message, out.error.field);
        ours.add(e);
        throw e;
      }
      return out.ok;
    }
    function later(op, args) {
      try {
        return PromiseCtor.resolve(call(op, args));
      } catch (e) {
        return PromiseCtor.reject(e);
      }
    }
    const text = (v, what) => {
      if (typeof v !== "string") throw new TypeError(what + " must be a string");
      return v;
    };

    class Query {
      #tx;
      #entity;
      #where = [];
      #order = null;
      #limit = null;
      #after = null;
      constructor(tx, entity) {
        this.#tx = tx;
        this.#entity = text(entity, "entity");
      }
      where(conditions) {
        this.#where.push(conditions);
        return this;
      }
      orderBy(field) {
        this.#order = text(field, "orderBy");
        return this;
      }
      limit(n) {
        this.#limit = n;
        return this;
      }
      after(cursor) {
        this.#after = text(cursor, "after");
        return this;
      }
      fetch() {
        return later("db.query", {
          tx: this.#tx,
          entity: this.#entity,
          where: this.#where,
          order: this.#order,
          limit: this.#limit,
          after: this.#after,
        });
      }
      count() {
        return later("db.count", { tx: this.#tx, entity: this.#entity, where: this.#where });
      }
    }
    freeze(Query.prototype);

    // The data handle: `tx` is null outside a transaction, the transaction's number inside.
    function dataHandle(tx) {
      const handle = {
        query: (entity) => new Query(tx, entity),
        get: (entity, id) => later("db.get", { tx, entity: text(entity, "entity"), id: text(id, "id") }),
        insert: (entity, record) => later("db.insert", { tx, entity: text(entity, "entity"), record }),
        update: (entity, id, patch) =>
          later("db.update", { tx, entity: text(entity, "entity"), id: text(id, "id"), patch }),
        delete: (entity, id) => later("db.delete", { tx, entity: text(entity, "entity"), id: text(id, "id") }),
        count: (entity, where) =>
          later("db.count", { tx, entity: text(entity, "entity"), where: where === undefined ? [] : [where] }),
      };
      if (tx === null) {
        // The one explicit escape: granted per entity in the manifest, read-only, audited
        // with `reason`; each record carries its tenant_id.
        handle.crossTenant = (entity, reason) => {
          const args = { entity: text(entity, "entity"), reason: text(reason, "reason"), where: [], limit: null };
          const read = freeze({
            where: (conditions) => {
              args.where.push(conditions);
              return read;
            },
            limit: (n) => {
              args.limit = n;
              return read;
            },
            fetch: () => later("db.cross_tenant", args),
          });
          return read;
        };
        // Commits when `fn` resolves, rolls back when it throws: all or nothing.
        handle.transaction = async (fn) => {
          if (typeof fn !== "function") throw new TypeError("transaction takes an async function");
          const id = call("db.begin", null);
          let result;
          try {
            result = await fn(dataHandle(id));
          } catch (e) {
            try {
              call("db.rollback", { tx: id });
            } catch (_) {}
            throw e;
          }
          call("db.commit", { tx: id });
          return result;
        };
      }
      return freeze(handle);
    }
    const db = dataHandle(null);

    function store(scope) {
      return freeze({
        get: (key) => later("storage.get", { scope, key: text(key, "key") }),
        set: (key, value) => later("storage.set", { scope, key: text(key, "key"), value }),
        delete: (key) => later("storage.delete", { scope, key: text(key, "key") }),
        list: (prefix) =>
          later("storage.list", { scope, prefix: prefix === undefined ? "" : text(prefix, "prefix") }),
      });
    }
    const tenantStore = store("tenant");
    const storage = freeze(Object.assign(Object.create(null), tenantStore, { user: store("user") }));

    const http = freeze({
      fetch: (url, init) => {
        const i = init === undefined || init === null ? {} : init;
        return later("http.fetch", {
          url: text(url, "url"),
          method: i.method === undefined ? "GET" : text(i.method, "method"),
          headers: i.headers === undefined ? {} : i.headers,
          body: i.body === undefined || i.body === null ? null : typeof i.body === "string" ? i.body : stringify(i.body),
        });
      },
    });
    const files = freeze({
      list: () => later("files.list", null),
      get: (key) => later("files.get", { key: text(key, "key") }),
      put: (key, content) => later("files.put", { key: text(key, "key"), text: text(content, "content") }),
      delete: (key) => later("files.delete", { key: text(key, "key") }),
    });
    const search = freeze({
      query: (q, options) => {
        const o = options === undefined || options === null ? {} : options;
        return later("search.query", {
          q: q === undefined ? "" : text(q, "q"),
          entity: o.entity === undefined ? null : text(o.entity, "entity"),
          limit: o.limit === undefined ? null : o.limit,
          cursor: o.cursor === undefined ? null : text(o.cursor, "cursor"),
        });
      },
    });
    const flags = freeze({ get: (name) => later("flags.get", { name: text(name, "name") }) });
    const config = freeze({ get: (name) => later("config.get", { name: text(name, "name") }) });
    const show = (args) =>
      args.map((a) => (typeof a === "string" ? a : (() => { try { return stringify(a); } catch (_) { return String(a); } })())).join(" ");
    const log = freeze({
      info: (...args) => void call("log", { level: "info", message: show(args) }),
      warn: (...args) => void call("log", { level: "warn", message: show(args) }),
      error: (...args) => void call("log", { level: "error", message: show(args) }),
    });
    const user = freeze({
      id: caller.id,
      roles: freeze(isArray(caller.roles) ? caller.roles.slice() : []),
      anonymous: caller.id === null,
    });

    class Response {
      constructor(status, body, headers) {
        this.status = status;
        this.body = body === undefined ? null : body;
        this.headers = headers === undefined ? {} : headers;
        freeze(this);
      }
    }
    freeze(Response.prototype);
    const respond = (status, body, headers) => new Response(status, body, headers);

    const api = freeze({ db, storage, files, http, search, flags, config, log, user, respond });

    // Runs the route's export with the request; the answer as JSON text.
    async function run(fn, requestJson) {
      if (typeof fn !== "function") {
        return stringify({ missing: true });
      }
      try {
        const r = await fn(freeze(parse(requestJson)));
        if (r instanceof Response) {
          return stringify({ status: r.status, headers: r.headers, body: r.body });
        }
        return stringify({ status: 200, body: r === undefined ? null : r });
      } catch (e) {
        if (ours.has(e)) {
          return stringify({ error: { code: e.code, message: e.message, field: e.field } });
        }
        throw e;
      }
    }

    return { api, run };
  };
})()
