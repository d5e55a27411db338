// The console in headless Chromium (Debian's package, driven by playwright-core): run by
// host/tests/api/console.rs against a server it started. Exits non-zero on the first
// failed expectation; saves a screenshot of every page to $SCREENSHOTS.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { join } from "node:path";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const base = env("BASE_URL").replace(/\/$/, "");
const token = env("ADMIN_TOKEN");
const shots = env("SCREENSHOTS");
const require = createRequire(join(env("PLAYWRIGHT_DIR"), "node_modules") + "/");
const { chromium } = require("playwright-core");

const step = (what) => console.log(`- ${what}`);
function expect(condition, what) {
  if (!condition) throw new Error(`expected: ${what}`);
}
async function shot(page, name) {
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
}
/** Poll `check` until it is true or `ms` pass. */
async function until(what, check, ms = 30000) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
async function api(method, path, body, admin = false) {
  const headers = { "content-type": "application/json" };
  if (admin) headers.authorization = `Bearer ${token}`;
  const response = await fetch(base + path, { method, headers, body: body && JSON.stringify(body) });
  return { status: response.status, json: await response.json().catch(() => null) };
}
const placeOrder = async (card) =>
  (await api("POST", "/api/orders", {
    customer_id: "c-console",
    items: [{ sku: "SKU-1", quantity: 1, unit_price_cents: 1250 }],
    payment: { card_token: card },
  })).json.order_id;

const browser = await chromium.launch({ executablePath: env("CHROMIUM"), args: ["--no-sandbox"] });
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
  const page = await context.newPage();
  // Offline: the console loads nothing from anywhere but this server.
  const elsewhere = [];
  page.on("request", (request) => {
    const url = request.url();
    if (!url.startsWith(base) && !url.startsWith("data:")) elsewhere.push(url);
  });
  const failures = [];
  page.on("pageerror", (error) => failures.push(String(error)));
  // Destructive actions ask first; the test says yes.
  page.on("dialog", (dialog) => dialog.accept());

  step("sign in");
  await page.goto(base + "/ui/orders");
  expect(page.url().startsWith(base + "/ui/login"), `sent to the sign-in page, at ${page.url()}`);
  await shot(page, "sign-in");
  await page.fill("#token", "wrong");
  await page.click("button[type=submit]");
  await page.getByText("That is not the admin token.").waitFor();
  await page.fill("#token", token);
  await page.click("button[type=submit]");
  await page.waitForURL(base + "/ui/orders");

  step("place orders through the API");
  await page.goto(base + "/ui");
  expect((await api("PUT", "/api/stock/SKU-1", { available: 100 }, true)).status === 202, "stock is set");
  const completed = [];
  for (let i = 0; i < 4; i++) completed.push(await placeOrder("tok_ok"));
  const trapped = [await placeOrder("tok_trap"), await placeOrder("tok_trap")];
  await until("the orders settle", async () => {
    for (const id of [...completed, ...trapped]) {
      const order = (await api("GET", `/api/orders/${id}`)).json;
      if (!order || order.status === "pending") return false;
    }
    return true;
  }, 60000);
  await until("both traps are dead letters", async () => {
    const list = (await api("GET", "/api/admin/dead-letters", null, true)).json || [];
    return trapped.every((id) => list.some((d) => d.event.order_id === id));
  }, 60000);

  step("the overview's charts show the completions");
  await until("charts with data", () =>
    page.evaluate(() => {
      const charts = window.wasagaCharts || {};
      const has = (name, series) => (charts[name]?.data?.[series] || []).some((v) => v != null && v > 0);
      return has("completed", 1) && has("latency", 1) && has("dead_letters", 1);
    }), 60000);
  expect((await page.locator(".uplot canvas").count()) === 4, "four charts are drawn");
  expect(Number(await page.locator('dd[data-status="completed"]').innerText()) >= 4, "the completed count");
  await shot(page, "overview");

  step("orders are listed, newest first");
  await page.goto(base + "/ui/orders");
  for (const id of [...completed, ...trapped]) await page.locator(`a[href="/ui/orders/${id}"]`).waitFor();
  const listed = await page.locator("table.orders tbody tr td:first-child").allInnerTexts();
  expect(listed.indexOf(trapped[1]) < listed.indexOf(completed[0]), "newest first");
  await page.click('nav.filters a:has-text("cancelled")');
  await page.locator(`a[href="/ui/orders/${trapped[0]}"]`).waitFor();
  expect((await page.locator(`a[href="/ui/orders/${completed[0]}"]`).count()) === 0, "the filter hides completed");
  await page.fill('input[name="id"]', completed[0]);
  await page.press('input[name="id"]', "Enter");
  await page.waitForURL(base + `/ui/orders/${completed[0]}`);
  await page.goto(base + "/ui/orders");
  await shot(page, "orders");

  step("an order's timeline names each version and attempt");
  await page.goto(base + `/ui/orders/${completed[0]}`);
  const timeline = await page.locator("table.timeline").innerText();
  for (const kind of ["order.placed", "stock.reserved", "payment.captured", "order.completed"]) {
    expect(timeline.includes(kind), `the timeline shows ${kind}`);
  }
  const v1 = env("PAYMENT_V1");
  expect((await page.locator(`table.timeline code.digest[title="${v1}"]`).count()) >= 1, "payment's full digest on hover");
  expect(timeline.includes(v1.slice(7, 19)), "payment's short digest");
  await shot(page, "order");

  step("the order of a trap shows its dead letter");
  await page.goto(base + `/ui/orders/${trapped[0]}`);
  await page.locator("table.dead-letters").getByText("tok_trap").first().waitFor();

  step("upload a new payment version, then roll it back");
  await page.goto(base + "/ui/steps");
  const payment = page.locator("#step-payment");
  await payment.locator('input[type="file"]').setInputFiles(env("PAYMENT_V2_FILE"));
  await payment.locator('button[type="submit"]').click();
  await page.getByText("payment now serves").waitFor();
  const v2 = env("PAYMENT_V2");
  await page.locator(`#step-payment h2 code.digest[title="${v2}"]`).waitFor();
  await shot(page, "steps");
  await page.locator('#step-payment button:has-text("Roll back")').click();
  await page.getByText("payment rolled back").waitFor();
  await page.locator(`#step-payment h2 code.digest[title="${v1}"]`).waitFor();
  const plugins = (await api("GET", "/api/admin/plugins", null, true)).json;
  expect(plugins.find((p) => p.name === "payment").digest === v1, "the API agrees: v1 serves");

  step("dead letters: dry run, recording, replay, discard");
  await page.goto(base + "/ui/dead-letters");
  const rowOf = (id) => page.locator("table.dead-letters tbody tr").filter({ hasText: id });
  await rowOf(trapped[0]).locator('button:has-text("Dry run")').click();
  await page.getByText("nothing committed").waitFor();
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    rowOf(trapped[0]).locator('a:has-text("Recording")').click(),
  ]);
  const recording = JSON.parse(readFileSync(await download.path(), "utf8"));
  expect(recording && typeof recording === "object", "the recording is JSON");
  await shot(page, "dead-letters");
  await rowOf(trapped[0]).locator('button:has-text("Replay")').click();
  await page.getByText("Replayed").waitFor();
  await rowOf(trapped[1]).locator('button:has-text("Discard")').click();
  await page.getByText("Discarded").waitFor();
  expect((await rowOf(trapped[1]).count()) === 0, "the discarded dead letter is gone from the page");
  const left = (await api("GET", "/api/admin/dead-letters", null, true)).json;
  expect(!left.some((d) => d.event.order_id === trapped[1]), "the API agrees: discarded");

  step("hosts");
  await page.goto(base + "/ui/hosts");
  await page.getByText("(this host)").waitFor();
  await shot(page, "hosts");

  step("a narrow window");
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(base + `/ui/orders/${completed[0]}`);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  expect(overflow <= 1, `the page fits a phone's width (overflow ${overflow}px)`);
  await shot(page, "order-narrow");

  step("sign out");
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.goto(base + "/ui");
  await page.click("button:has-text('Sign out')");
  await page.waitForURL((url) => url.pathname === "/ui/login");
  await page.goto(base + "/ui/steps");
  expect(page.url().startsWith(base + "/ui/login"), "signed out, the console asks to sign in again");

  expect(elsewhere.length === 0, `no request left the server: ${elsewhere.join(", ")}`);
  expect(failures.length === 0, `no script error: ${failures.join("; ")}`);
  console.log("ok");
} finally {
  await browser.close();
}
