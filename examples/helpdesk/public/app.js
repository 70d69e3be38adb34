// The dashboard's front-end, over the platform's browser SDK. It names no tenant: the page and
// the SDK are served under the tenant's path (or host), the session is the tenant realm's, and
// the platform refuses a session of another tenant.
import * as bulkhead from "../sdk/bulkhead.js";

const $ = (id) => document.getElementById(id);

function fill(id, items) {
  $(id).replaceChildren(...items.map((t) => Object.assign(document.createElement("li"), { textContent: t })));
}

async function show() {
  const me = await bulkhead.user();
  $("who").textContent = me.id + " (" + me.roles.join(", ") + ")";
  const open = await bulkhead.db.query("ticket").where({ status: "open" }).orderBy("-created_at").limit(5).fetch();
  fill("tickets", open.records.map((t) => t.title));
  $("open-count").textContent = await bulkhead.db.count("ticket", { status: "open" });
  const prefs = (await bulkhead.storage.user.get("prefs")) ?? { theme: "light" };
  document.body.dataset.theme = prefs.theme;
  $("theme").value = prefs.theme;
  if (me.roles.includes("agent")) {
    const d = await bulkhead.fn("dashboard");
    $("sla").textContent = d.sla_hours;
    $("pending").textContent = d.pending;
    fill("notes", (await bulkhead.fn("notes")).map((n) => n.name + ": " + n.text));
    $("message").textContent = (await bulkhead.storage.get("board:message")) ?? "";
    $("agent").hidden = false;
  }
  $("login").hidden = true;
  $("dashboard").hidden = false;
  $("error").textContent = "";
}

async function attempt(work) {
  try {
    await work();
  } catch (e) {
    $("error").textContent = e.code ? e.code + ": " + e.message : e.message;
  }
}

$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const form = new FormData(ev.target);
  attempt(async () => {
    await bulkhead.session.signIn(form.get("username"), form.get("password"));
    await show();
  });
});

$("theme").addEventListener("change", (ev) =>
  attempt(async () => {
    await bulkhead.storage.user.set("prefs", { theme: ev.target.value });
    document.body.dataset.theme = ev.target.value;
  }),
);

$("post").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = new FormData(ev.target).get("text");
  attempt(async () => {
    await bulkhead.storage.set("board:message", text);
    $("message").textContent = await bulkhead.storage.get("board:message");
  });
});

$("logout").addEventListener("click", () =>
  attempt(async () => {
    await bulkhead.session.signOut();
    $("dashboard").hidden = true;
    $("agent").hidden = true;
    $("login").hidden = false;
  }),
);

// Already signed in (the session cookie is HttpOnly: ask the platform).
bulkhead.user().then((me) => (me.anonymous ? null : show())).catch(() => {});
