// The dashboard's front-end. It names no tenant: the page is served under the tenant's
// path (or host), so relative URLs reach that tenant's realm and functions only.
const base = new URL("..", document.baseURI); // …/t/<tenant>/
const tenantPath = base.pathname.replace(/\/$/, "");
const realm = tenantPath.startsWith("/t/") ? "/realms/" + tenantPath.slice(3) : null;
let token = null;

async function call(path) {
  const r = await fetch(new URL("fn/" + path, base), { headers: { Authorization: "Bearer " + token } });
  if (!r.ok) throw new Error((await r.json()).error.message);
  return r.json();
}

function fill(id, items) {
  const ul = document.getElementById(id);
  ul.replaceChildren(...items.map((t) => Object.assign(document.createElement("li"), { textContent: t })));
}

async function show() {
  const d = await call("dashboard");
  document.getElementById("open").textContent = d.open;
  document.getElementById("pending").textContent = d.pending;
  document.getElementById("sla").textContent = d.sla_hours;
  fill("oldest", d.oldest_open);
  fill("notes", (await call("notes")).map((n) => n.name + ": " + n.text));
  document.getElementById("dashboard").hidden = false;
}

document.getElementById("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = new FormData(ev.target);
  const body = new URLSearchParams({ grant_type: "password", client_id: "helpdesk", username: form.get("username"), password: form.get("password") });
  try {
    const r = await fetch(realm + "/protocol/openid-connect/token", { method: "POST", body });
    if (!r.ok) throw new Error("sign-in failed");
    token = (await r.json()).access_token;
    await show();
  } catch (e) {
    document.getElementById("error").textContent = e.message;
  }
});
