// The example mini-app in a real browser (headless Chromium), through its front-end and the
// platform's SDK: sign-in by the realm's session cookies, data by tenant path and by tenant
// host, and what a page of one tenant may not do. Prints one JSON object of what it saw; the
// Rust test (browser.rs) asserts on it.
const { launch } = await import(process.env.BULKHEAD_BROWSER + "/launch.mjs");
const [origin, port] = process.argv.slice(2);

const browser = await launch();
const out = { page_errors: [] };

async function signedIn(url, username, password) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on("pageerror", (e) => out.page_errors.push(url + ": " + e.message));
  await page.goto(url);
  await page.fill("input[name=username]", username);
  await page.fill("input[name=password]", password);
  await page.click("#login button");
  await page.waitForSelector("#dashboard", { state: "visible", timeout: 20000 });
  return page;
}

async function seen(page) {
  return {
    who: await page.textContent("#who"),
    open_count: await page.textContent("#open-count"),
    tickets: await page.$$eval("#tickets li", (items) => items.map((i) => i.textContent)),
    agent_visible: await page.isVisible("#agent"),
    message: await page.textContent("#message"),
    theme: await page.evaluate(() => document.body.dataset.theme),
    error: await page.textContent("#error"),
  };
}

// What the page's own script can and cannot do with the SDK and the session.
function probe(page) {
  return page.evaluate(async () => {
    const sdk = await import(new URL("../sdk/bulkhead.js", location.href).href);
    const code = async (work) => {
      try {
        await work();
        return "answered";
      } catch (e) {
        return e.code || String(e);
      }
    };
    const r = {};
    r.session_cookie_readable = document.cookie.includes("bulkhead_session");
    r.me = await sdk.user();
    r.prefs = await sdk.storage.user.get("prefs");
    r.tenant_storage_read = await code(() => sdk.storage.get("board:message"));
    r.tenant_storage_write = await code(() => sdk.storage.set("board:probe", { by: "probe" }));
    r.user_storage_write = await code(() => sdk.storage.user.set("probe", 1));
    // Keys that spell another tenant stay keys of this one.
    r.spelled = await code(() => sdk.storage.user.set("../globex/prefs", { theme: "stolen" }));
    r.user_keys = (await sdk.storage.user.list("")).map((e) => e.key);
    const found = await sdk.db.query("ticket").where({ status: "open" }).orderBy("-created_at").limit(50).fetch();
    r.db_open_titles = found.records.map((t) => t.title);
    // A write without the session's CSRF token (what another site could make the browser send).
    const forged = await fetch(new URL("../me/storage/prefs", location.href), {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ theme: "forged" }),
    });
    r.write_without_csrf = forged.status;
    // This session at another tenant's path: refused, by the REST API and by that tenant's SDK.
    const other = await fetch("/t/globex/api/ticket");
    r.other_tenant_status = other.status;
    r.other_tenant_code = (await other.json()).error.code;
    const globexSdk = await import("/t/globex/sdk/bulkhead.js");
    r.other_tenant_sdk = await code(() => globexSdk.storage.user.get("prefs"));
    return r;
  });
}

try {
  // A wrong password: the realm's OAuth error reaches the page as its code.
  {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(origin + "/t/acme/app/");
    await page.fill("input[name=username]", "alice");
    await page.fill("input[name=password]", "alice-at-globex");
    await page.click("#login button");
    await page.waitForFunction(() => document.getElementById("error").textContent !== "");
    out.wrong_password = await page.textContent("#error");
    await context.close();
  }
  // acme by path: an agent signs in, posts the team message and picks a theme.
  const acme = await signedIn(origin + "/t/acme/app/", "alice", "alice-at-acme");
  out.acme_first = await seen(acme);
  await acme.fill("#post input[name=text]", "hello from acme");
  await acme.click("#post button");
  await acme.waitForFunction(() => document.getElementById("message").textContent === "hello from acme");
  await acme.selectOption("#theme", "dark");
  await acme.waitForFunction(() => document.body.dataset.theme === "dark");
  out.acme_probe = await probe(acme);
  // Signed out, the SDK has no session left.
  await acme.click("#logout");
  await acme.waitForSelector("#login", { state: "visible" });
  out.acme_after_logout = await acme.evaluate(async () => {
    const sdk = await import(new URL("../sdk/bulkhead.js", location.href).href);
    try {
      await sdk.user();
      return "answered";
    } catch (e) {
      return e.code;
    }
  });

  // globex by path: the same app, none of acme's data.
  const globex = await signedIn(origin + "/t/globex/app/", "alice", "alice-at-globex");
  out.globex = await seen(globex);

  // acme by its host: the SDK at /sdk/bulkhead.js, the tenant named by nothing but the host.
  const host = await signedIn(`http://acme.localhost:${port}/app/`, "alice", "alice-at-acme");
  out.acme_host = await seen(host);
  out.acme_host_loaded = await host.evaluate(() => performance.getEntriesByType("resource").map((e) => e.name));

  // A customer of acme: no agent section, no tenant storage.
  const bob = await signedIn(origin + "/t/acme/app/", "bob", "bob-at-acme");
  out.bob = await seen(bob);
  out.bob_probe = await probe(bob);
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
