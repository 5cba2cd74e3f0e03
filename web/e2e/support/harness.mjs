// Real parts for the demo's end-to-end tests: tidings-server processes that
// serve web/demo (127.0.0.1, port 0, stopped by pid), a failover proxy in
// front of several instances, and headless Debian Chromium.
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import os from "node:os";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, "../../..");
export const demoDir = path.join(repoRoot, "web/demo");
export const artifactsDir = path.join(repoRoot, "web/e2e/artifacts");
export const serverBin = process.env.TIDINGS_SERVER_BIN ?? path.join(repoRoot, "target/debug/tidings-server");
export const redisUrl = process.env.TIDINGS_TEST_REDIS_URL ?? "redis://127.0.0.1:6379";
// HS256 needs a secret of at least 32 bytes; the server refuses shorter ones.
export const jwtSecret = "demo-e2e-secret-0123456789abcdef0123";

/**
 * Starts `tidings-server` with the demo and `quiz:>` public; resolves once it
 * prints `listening on http://ADDR`. Like `scripts/demo`, it serves a
 * directory of links to web/demo's files plus a `demo-run.json` for this
 * instance (`instance` {n, of}; `tenants`: demo tokens to mint; `demoRun:
 * false` leaves the file out, like a server started by hand). `stop()` sends
 * SIGKILL (a crash) unless given another signal, and resolves when the
 * process is gone.
 */
export async function startServer({
  listen = "127.0.0.1:0",
  redis,
  streamKey,
  args = [],
  instance = { n: 1, of: 1 },
  tenants = ["acme", "globex"],
  demoRun = true,
} = {}) {
  const site = demoSite();
  const argv = ["--listen", listen, "--demo-dir", site, "--public", "quiz:>", "--jwt-secret", jwtSecret, ...args];
  if (redis) argv.push("--redis", redis);
  if (redis && streamKey && serverHelp().includes("--redis-stream-key")) argv.push("--redis-stream-key", streamKey);
  const child = spawn(serverBin, argv, {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" },
  });
  let output = "";
  child.stderr.on("data", (chunk) => (output += chunk));
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  exited.then(() => rmSync(site, { recursive: true, force: true }));
  const origin = await new Promise((resolve, reject) => {
    const onData = (chunk) => {
      output += chunk;
      const match = /listening on (http:\/\/\S+)/.exec(output);
      if (match) {
        child.stdout.off("data", onData);
        child.stdout.resume();
        resolve(match[1]);
      }
    };
    child.stdout.on("data", onData);
    exited.then(({ code, signal }) => reject(new Error(`tidings-server ${argv.join(" ")} exited (${code ?? signal}):\n${output}`)));
  });
  const address = new URL(origin).host;
  if (demoRun) {
    const run = {
      instance: { ...instance, address, engine: redis ? "redis" : "memory", ...(redis ? { streamKey } : {}) },
      tenants: Object.fromEntries(tenants.map((t) => [t, tenantToken(t)])),
    };
    writeFileSync(path.join(site, "demo-run.json"), JSON.stringify(run));
  }
  return {
    origin,
    listen: address,
    pid: child.pid,
    output: () => output,
    stop(signal = "SIGKILL") {
      if (child.exitCode === null && child.signalCode === null) process.kill(child.pid, signal);
      return exited;
    },
  };
}

/** A fresh directory of links to web/demo's files, as `scripts/demo` serves. */
function demoSite() {
  const site = mkdtempSync(path.join(os.tmpdir(), "tidings-demo-site-"));
  for (const name of readdirSync(demoDir)) symlinkSync(path.join(demoDir, name), path.join(site, name));
  return site;
}

/** A tenant's demo token: subscribe and publish to `order:status:TENANT:>`. */
export function tenantToken(tenant, ttl = "1h") {
  return mintToken({ subscribe: [`order:status:${tenant}:>`], publish: [`order:status:${tenant}:>`], ttl });
}

let help;
/** `tidings-server --help`, to use flags only when the server has them. */
function serverHelp() {
  help ??= execFileSync(serverBin, ["--help"]).toString();
  return help;
}

/**
 * Deletes a test's Redis stream `key` and the engine's keys beside it
 * (`KEY:meta`, `KEY:idem:...`) with `redis-cli`, if it is installed.
 */
export function deleteRedisKey(url, key) {
  try {
    const beside = execFileSync("redis-cli", ["-u", url, "--scan", "--pattern", `${key}:*`]).toString().split("\n").filter(Boolean);
    execFileSync("redis-cli", ["-u", url, "del", key, ...beside], { stdio: "ignore" });
  } catch {
    // No redis-cli: the keys stay, they are small and capped by MAXLEN.
  }
}

/** The keys `key` and `key:*` that exist in Redis (empty without redis-cli). */
export function redisKeys(url, key) {
  try {
    const beside = execFileSync("redis-cli", ["-u", url, "--scan", "--pattern", `${key}:*`]).toString().split("\n").filter(Boolean);
    const stream = execFileSync("redis-cli", ["-u", url, "exists", key]).toString().trim() === "1" ? [key] : [];
    return [...stream, ...beside];
  } catch {
    return [];
  }
}

/** A token from `tidings-server token`, signed with the test servers' secret. */
export function mintToken({ subscribe = [], publish = [], ttl = "1h" }) {
  const argv = ["token", "--ttl", ttl, "--jwt-secret", jwtSecret];
  for (const p of subscribe) argv.push("--subscribe", p);
  for (const p of publish) argv.push("--publish", p);
  return execFileSync(serverBin, argv).toString().trim();
}

/** `POST /publish` from outside the browser; returns the server's answer. */
export async function publish(origin, messages, token) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(`${origin}/publish`, { method: "POST", headers, body: JSON.stringify(messages) });
  const body = await response.json();
  if (response.status !== 200) throw new Error(`publish: HTTP ${response.status} ${JSON.stringify(body)}`);
  return body;
}

/**
 * A reverse proxy like a load balancer with health checks: sends every
 * request to the first upstream that accepts a connection, so a stopped
 * instance's clients land on the next one. `requests` counts requests per
 * upstream origin.
 */
export async function startFailoverProxy(upstreams) {
  const requests = new Map(upstreams.map((u) => [u, 0]));
  const open = new Set();
  const forward = (req, res, body, index) => {
    const upstream = upstreams[index];
    if (!upstream) {
      res.writeHead(502, { "content-type": "text/plain" }).end("no upstream answers");
      return;
    }
    const target = new URL(req.url, upstream);
    const outgoing = http.request(target, { method: req.method, headers: { ...req.headers, host: target.host } }, (incoming) => {
      requests.set(upstream, requests.get(upstream) + 1);
      res.writeHead(incoming.statusCode, incoming.headers);
      incoming.pipe(res);
      incoming.on("error", () => res.destroy());
      incoming.on("aborted", () => res.destroy());
    });
    outgoing.on("error", (error) => {
      if (res.headersSent) res.destroy();
      else if (error.code === "ECONNREFUSED") forward(req, res, body, index + 1);
      else res.destroy();
    });
    res.on("close", () => outgoing.destroy());
    outgoing.end(body);
  };
  const server = http.createServer((req, res) => {
    open.add(res);
    res.on("close", () => open.delete(res));
    const chunks = [];
    req.on("data", (chunk) => chunks.push(chunk));
    req.on("end", () => forward(req, res, Buffer.concat(chunks), 0));
  });
  server.keepAliveTimeout = 1;
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    origin: `http://127.0.0.1:${server.address().port}`,
    requests,
    stop: () =>
      new Promise((resolve) => {
        for (const res of open) res.destroy();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Headless Debian Chromium with the flags docs/TOOLCHAIN.md says work here. */
export function startBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      "--disable-quic",
    ],
  });
}

const openPages = new Set();

/** A page in its own browser context (its own cookies and storage: another user). */
export async function newPlayerPage(browser, url) {
  const context = await browser.newContext({ viewport: { width: 960, height: 700 } });
  const page = await context.newPage();
  openPages.add(page);
  page.on("close", () => openPages.delete(page));
  page.errors = [];
  page.on("pageerror", (error) => page.errors.push(String(error)));
  page.on("console", (message) => {
    if (message.type() === "error") page.errors.push(message.text());
  });
  await page.goto(url);
  return page;
}

/** Saves a full-page screenshot under web/e2e/artifacts/NAME.png; returns the path. */
export async function screenshot(page, name) {
  mkdirSync(artifactsDir, { recursive: true });
  const file = path.join(artifactsDir, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

/** Screenshots every page still open as NAME-1.png, NAME-2.png...: what a failed test left on screen. */
export async function screenshotOpenPages(name) {
  let n = 0;
  for (const page of openPages) await screenshot(page, `${name}-${++n}`).catch(() => {});
}

/** Wraps a test body: when it fails, every open page is saved as failed-NAME-N.png first. */
export function shotsOnFailure(name, body) {
  return async (t) => {
    try {
      return await body(t);
    } catch (error) {
      await screenshotOpenPages(`failed-${name}`);
      throw error;
    }
  };
}

/** A name no other test run uses (rooms, tenants), so histories never mix. */
export function unique(prefix) {
  return `${prefix}${process.pid}${Math.random().toString(36).slice(2, 7)}`;
}

/**
 * Screenshots of several pages side by side in one image (two players at
 * once), saved as web/e2e/artifacts/NAME.png.
 */
export async function screenshotSideBySide(browser, pages, name) {
  const shots = [];
  for (const page of pages) shots.push((await page.screenshot()).toString("base64"));
  const width = pages.reduce((sum, page) => sum + page.viewportSize().width, 0) / 2 + 16 * (pages.length + 1);
  const context = await browser.newContext({ viewport: { width: Math.ceil(width), height: 400 }, deviceScaleFactor: 2 });
  const canvas = await context.newPage();
  const images = shots
    .map((b64) => `<img src="data:image/png;base64,${b64}" style="width:${100 / pages.length}%;border:1px solid #d4d7dd;border-radius:8px">`)
    .join("");
  await canvas.setContent(`<body style="margin:0;padding:16px;background:#e9ebef;display:flex;gap:16px">${images}</body>`);
  await canvas.waitForFunction(() => [...document.images].every((img) => img.complete));
  const file = path.join(artifactsDir, `${name}.png`);
  mkdirSync(artifactsDir, { recursive: true });
  await canvas.screenshot({ path: file, fullPage: true });
  await context.close();
  return file;
}
