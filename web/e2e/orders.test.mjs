// The order-status board in headless Chromium against a real tidings-server:
// resume after a dropped connection, and tenant isolation by token.
// Run: scripts/test-e2e.sh
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { newPlayerPage, publish, screenshot, shotsOnFailure, startBrowser, startServer, tenantToken } from "./support/harness.mjs";

let browser, server;
before(async () => {
  browser = await startBrowser();
  server = await startServer();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

const tokenFor = (tenant) => tenantToken(tenant);
const boardLink = (tenant, token) => `${server.origin}/orders.html#tenant=${tenant}&token=${token}`;

async function openBoard(tenant, token) {
  const page = await newPlayerPage(browser, boardLink(tenant, token));
  await waitForLive(page);
  return page;
}

function waitForLive(page) {
  return page.waitForFunction(() => window.tidingsDemo.states.at(-1)?.kind === "open");
}

/** Publishes a status change with the page's form; returns the id it shows. */
async function publishWithForm(page, order, status) {
  await page.fill("#order", order);
  await page.selectOption("#status", status);
  const before = await page.evaluate(() => window.tidingsDemo.published.length);
  await page.click("#publish-form button[type=submit]");
  await page.waitForFunction((n) => window.tidingsDemo.published.length > n, before);
  return page.evaluate(() => window.tidingsDemo.published.at(-1).ids[0]);
}

function waitForRow(page, order, status) {
  return page.waitForSelector(`#orders tr[data-order="${order}"][data-status="${status}"]`);
}

/** Events in the board's log, oldest first: `[{id, order, status, text}]`. */
function events(page) {
  return page.$$eval("#events li[data-kind=status]", (items) =>
    items.reverse().map((li) => ({ id: li.dataset.id, order: li.dataset.order, status: li.dataset.status, text: li.textContent })),
  );
}

test("a dropped board resumes: changes published meanwhile arrive once each", { timeout: 90_000 }, shotsOnFailure("orders-resume", async () => {
  const acme = tokenFor("acme");
  const page = await openBoard("acme", acme);
  await publishWithForm(page, "1001", "paid");
  await waitForRow(page, "1001", "paid");

  await page.click("#drop");
  await page.waitForFunction(() => window.tidingsDemo.states.at(-1)?.kind === "closed");
  // Two changes from this page's form and one from another publisher (a backend).
  const missed = [await publishWithForm(page, "1001", "shipped"), await publishWithForm(page, "1002", "placed")];
  const backend = await publish(server.origin, { topic: "order:status:acme:1003", type: "status", data: { order: "1003", status: "packed" } }, acme);
  missed.push(backend.id);
  assert.equal((await events(page)).length, 1, "nothing arrives while dropped");

  await page.click("#resume");
  await waitForRow(page, "1001", "shipped");
  await waitForRow(page, "1002", "placed");
  await waitForRow(page, "1003", "packed");
  // And live updates go on after the resume.
  const live = await publishWithForm(page, "1002", "paid");
  await waitForRow(page, "1002", "paid");

  const log = await events(page);
  const ids = log.map((e) => e.id);
  assert.equal(new Set(ids).size, ids.length, `no event twice: ${ids}`);
  assert.deepEqual(ids.slice(1), [...missed, live], "the missed changes in order, then the live one");
  assert.equal(log.filter((e) => e.text.includes("missed while offline")).length, 2, "the page's own offline publishes are marked");
  await screenshot(page, "orders-resume");
  assert.equal(await page.locator("#events .tag.bad").count(), 0, "no duplicate or gap marker");
  assert.deepEqual(page.errors, []);
}));

test("a token for tenant acme cannot watch or publish to globex: 403 in the page", { timeout: 90_000 }, shotsOnFailure("orders-tenants", async () => {
  const acme = tokenFor("acme");
  const globex = tokenFor("globex");
  const page = await openBoard("acme", acme);

  // Another tenant's order, then one of acme's: acme's board shows only its own.
  await publish(server.origin, { topic: "order:status:globex:7", type: "status", data: { order: "7", status: "shipped" } }, globex);
  await publish(server.origin, { topic: "order:status:acme:8", type: "status", data: { order: "8", status: "placed" } }, acme);
  await waitForRow(page, "8", "placed");
  assert.equal(await page.locator('#orders tr[data-order="7"]').count(), 0, "globex's order on acme's board");

  // A publish on acme's board, then a switch: the form forgets acme's result.
  await publishWithForm(page, "9", "paid");
  assert.match(await page.textContent("#publish-result"), /Published 9 → paid/);

  // Watching globex with acme's token: the server answers 403 and the page says so.
  await page.fill("#watch", "globex");
  await page.click("#watch-form button[type=submit]");
  await page.waitForSelector("#board-error", { state: "visible" });
  assert.match(await page.textContent("#board-error"), /HTTP 403/);
  await page.waitForSelector('#state[data-state="denied"]');
  assert.equal(await page.textContent("#publish-result"), "", "acme's publish result stayed after switching to globex");
  assert.equal(await page.locator("#orders tbody tr").count(), 0, "no globex order shown");

  // Publishing into globex with acme's token is refused too.
  await page.fill("#order", "7");
  await page.click("#publish-form button[type=submit]");
  await page.waitForFunction(() => /Refused \(HTTP 403\)/.test(document.getElementById("publish-result").textContent));
  await screenshot(page, "orders-tenant-denied");

  // Globex's own board, with its own token, sees its order.
  const globexPage = await openBoard("globex", globex);
  await waitForRow(globexPage, "7", "shipped");
  assert.equal(await globexPage.locator('#orders tr[data-order="8"]').count(), 0, "acme's order on globex's board");
  await screenshot(globexPage, "orders-globex");
}));

test("a visitor without a token reaches a board from the index page: the board offers this run's demo tenants", { timeout: 90_000 }, shotsOnFailure("orders-no-token", async () => {
  const page = await newPlayerPage(browser, `${server.origin}/`);
  await page.click("text=Order-status board");
  await page.waitForURL(/\/orders\.html$/);
  await page.waitForSelector("#no-token", { state: "visible" });
  await page.waitForSelector("#demo-tenants a[data-tenant=acme]");
  assert.deepEqual(await page.$$eval("#demo-tenants a", (links) => links.map((a) => a.dataset.tenant)), ["acme", "globex"]);
  await screenshot(page, "orders-choose-tenant");

  await page.click("#demo-tenants a[data-tenant=globex]");
  await waitForLive(page);
  assert.equal(await page.textContent("#board-title"), "Orders of globex");
  await publishWithForm(page, "31", "packed");
  await waitForRow(page, "31", "packed");
  assert.deepEqual(page.errors, []);
}));

test("a server started without scripts/demo: the board says how to mint a token and takes a pasted one", { timeout: 90_000 }, shotsOnFailure("orders-paste-token", async () => {
  const bare = await startServer({ demoRun: false });
  try {
    const page = await newPlayerPage(browser, `${bare.origin}/orders.html`);
    await page.waitForSelector("#no-demo-run", { state: "visible" });
    assert.match(await page.textContent("#no-demo-run"), /tidings-server token/);
    await screenshot(page, "orders-no-demo-run");
    await page.fill("#token-input", tokenFor("acme"));
    await page.click("#token-form button[type=submit]");
    await waitForLive(page);
    assert.match(await page.textContent("#who"), /tenant acme/);
  } finally {
    await bare.stop();
  }
}));

test("a token link pasted into an open board switches it at once, without a reload", { timeout: 90_000 }, shotsOnFailure("orders-hashchange", async () => {
  const page = await openBoard("acme", tokenFor("acme"));
  await page.evaluate(() => (window.sameDocument = true));
  await page.goto(boardLink("globex", tokenFor("globex"))); // only the fragment differs: no reload
  await page.waitForFunction(() => document.getElementById("board-title").textContent === "Orders of globex");
  await waitForLive(page);
  assert.equal(await page.evaluate(() => window.sameDocument), true, "the page reloaded");
  assert.match(await page.textContent("#who"), /tenant globex/);
  await publish(server.origin, { topic: "order:status:globex:77", type: "status", data: { order: "77", status: "paid" } }, tokenFor("globex"));
  await waitForRow(page, "77", "paid");
  // And the "switch tenant" link goes back to the chooser.
  await page.click("#sign-out");
  await page.waitForSelector("#no-token", { state: "visible" });
  await page.waitForSelector('#state[data-state="closed"]');
}));

test("after a reload, each replayed row shows when the change happened, not when it arrived", { timeout: 90_000 }, shotsOnFailure("orders-reload-times", async () => {
  const acme = tokenFor("acme");
  const page = await openBoard("acme", acme);
  // A change from a backend two hours ago, and one from the page's own form.
  const twoHoursAgo = new Date(Date.now() - 2 * 3600_000).toISOString();
  await publish(server.origin, { topic: "order:status:acme:501", type: "status", data: { order: "501", status: "delivered", at: twoHoursAgo } }, acme);
  await publishWithForm(page, "502", "shipped");
  await waitForRow(page, "501", "delivered");
  await waitForRow(page, "502", "shipped");
  const before = await rowTimes(page);

  await page.reload();
  await waitForLive(page);
  await waitForRow(page, "502", "shipped");
  const after = await rowTimes(page);
  assert.equal(after["501"].dateTime, twoHoursAgo);
  assert.equal(after["501"].text, await page.evaluate((at) => new Date(at).toLocaleTimeString([], { hour12: false }), twoHoursAgo));
  assert.equal(after["502"].dateTime, before["502"].dateTime, "the form's change shows its publish time after the reload");
  assert.ok(after["502"].published, "the form's change carries its publish time");
  await screenshot(page, "orders-after-reload");
}));

test("the board's cards keep their spacing at 1280 px", { timeout: 90_000 }, shotsOnFailure("orders-layout", async () => {
  const page = await openBoard("acme", tokenFor("acme"));
  await page.setViewportSize({ width: 1280, height: 800 });
  const gaps = await page.$$eval("#board > *:not([hidden])", (cards) => {
    const boxes = cards.map((card) => card.getBoundingClientRect());
    return boxes.slice(1).map((box, i) => Math.round(box.top - boxes[i].bottom));
  });
  await screenshot(page, "orders-1280");
  assert.ok(gaps.length >= 2);
  for (const gap of gaps) assert.ok(gap >= 12, `cards touch: gaps ${gaps}`);
}));

/** The Updated cell of each row: `{order: {text, dateTime, published}}`. */
function rowTimes(page) {
  return page.$$eval("#orders tbody tr", (rows) =>
    Object.fromEntries(
      rows.map((row) => {
        const time = row.cells[2].querySelector("time");
        return [row.dataset.order, { text: time.textContent, dateTime: time.dateTime, published: !row.cells[2].classList.contains("received") }];
      }),
    ),
  );
}
