// The order-status board in headless Chromium against a real tidings-server:
// resume after a dropped connection, and tenant isolation by token.
// Run: scripts/test-e2e.sh
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { mintToken, newPlayerPage, publish, screenshot, shotsOnFailure, startBrowser, startServer } from "./support/harness.mjs";

let browser, server;
before(async () => {
  browser = await startBrowser();
  server = await startServer();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

const tokenFor = (tenant) => mintToken({ subscribe: [`order:status:${tenant}:>`], publish: [`order:status:${tenant}:>`] });

async function openBoard(tenant, token) {
  const page = await newPlayerPage(browser, `${server.origin}/orders.html#tenant=${tenant}&token=${token}`);
  await page.waitForFunction(() => window.tidingsDemo.states.at(-1)?.kind === "open");
  return page;
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

  // Watching globex with acme's token: the server answers 403 and the page says so.
  await page.fill("#watch", "globex");
  await page.click("#watch-form button[type=submit]");
  await page.waitForSelector("#board-error", { state: "visible" });
  assert.match(await page.textContent("#board-error"), /HTTP 403/);
  await page.waitForSelector('#state[data-state="denied"]');
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
