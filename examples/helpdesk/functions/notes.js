// Team notes (the tenant's key-value storage) and each user's own preferences
// (`storage.user`). Keys are only keys: whatever a key spells, it stays inside this tenant.
import { storage, user, respond, log } from "bulkhead";

const PREFIX = "note:";

export async function list() {
  const entries = await storage.list(PREFIX);
  return entries.map((e) => ({ name: e.key.slice(PREFIX.length), ...e.value }));
}

export async function put(req) {
  const text = req.body && req.body.text;
  if (typeof text !== "string" || text.length === 0 || text.length > 4000) {
    return respond(400, { error: { code: "bad_request", message: "text: 1 to 4000 characters", field: "text" } });
  }
  const note = { text, by: user.id, at: new Date().toISOString() };
  await storage.set(PREFIX + req.params.name, note);
  log.info("note saved", req.params.name);
  return respond(201, { name: req.params.name, ...note });
}

export async function remove(req) {
  const gone = await storage.delete(PREFIX + req.params.name);
  return gone ? respond(204, null) : respond(404, { error: { code: "not_found", message: "no such note" } });
}

export async function prefs() {
  return (await storage.user.get("prefs")) ?? { theme: "light" };
}

export async function setPrefs(req) {
  await storage.user.set("prefs", req.body);
  return req.body;
}
