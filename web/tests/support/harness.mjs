// Real parts for the browser tests: a Redis server, tidings-server processes
// (cluster mode, so history survives a restart), a small proxy that serves
// the package to the page and can answer 502/503 or inject raw SSE bytes, and
// headless Chromium. Everything binds 127.0.0.1 port 0 and is stopped by pid.
import { spawn, execFileSync } from "node:child_process";
import { readFile } from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
export const webRoot = path.resolve(here, "../..");
const repoRoot = path.resolve(webRoot, "..");
export const serverBin = process.env.TIDINGS_SERVER_BIN ?? path.join(repoRoot, "target/debug/tidings-server");
// 32 bytes or more: HS256 secrets shorter than that are refused.
export const jwtSecret = "browser-tests-secret-of-at-least-32-bytes";

export function freePort() {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

function stopProcess(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once("exit", () => resolve());
    process.kill(child.pid, "SIGKILL");
  });
}

/** A throwaway Redis on a free port (no persistence). */
export async function startRedis() {
  const port = await freePort();
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  await new Promise((resolve, reject) => {
    let out = "";
    child.stdout.on("data", (chunk) => {
      out += chunk;
      if (out.includes("Ready to accept connections")) resolve();
    });
    child.once("exit", (code) => reject(new Error(`redis-server exited with ${code}: ${out}`)));
    child.once("error", reject);
    setTimeout(() => reject(new Error(`redis-server did not start: ${out}`)), 15_000).unref();
  });
  child.stdout.resume();
  return { url: `redis://127.0.0.1:${port}`, stop: () => stopProcess(child) };
}

/** One tidings-server process (`args`: more flags); `stop()` kills it (SIGKILL: a crash). */
export async function startServer({ redisUrl, args: extra = [] } = {}) {
  const args = ["--listen", "127.0.0.1:0", "--jwt-secret", jwtSecret, "--public", "demo:>", "--retry-ms", "100", ...extra];
  if (redisUrl) args.push("--redis", redisUrl);
  const child = spawn(serverBin, args, { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, RUST_LOG: "warn" } });
  const origin = await new Promise((resolve, reject) => {
    let out = "";
    const onData = (chunk) => {
      out += chunk;
      const match = /listening on (http:\/\/\S+)/.exec(out);
      if (match) {
        child.stdout.off("data", onData);
        child.stdout.resume();
        resolve(match[1]);
      }
    };
    child.stdout.on("data", onData);
    child.once("exit", (code) => reject(new Error(`tidings-server exited with ${code}: ${out}`)));
    child.once("error", reject);
    setTimeout(() => reject(new Error(`tidings-server printed no address: ${out}`)), 15_000).unref();
  });
  return { origin, pid: child.pid, stop: () => stopProcess(child) };
}

/** A signed token from `tidings-server token` (`sub`: the subject claim). */
export function mintToken({ subscribe = [], publish = [], ttl = "1h", sub } = {}) {
  const args = ["token", "--ttl", ttl];
  if (sub) args.push("--sub", sub);
  for (const p of subscribe) args.push("--subscribe", p);
  for (const p of publish) args.push("--publish", p);
  return execFileSync(serverBin, args, { env: { ...process.env, TIDINGS_JWT_SECRET: jwtSecret } })
    .toString()
    .trim();
}

/** POST /publish; returns the ids. */
export async function publish(origin, messages, token) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(`${origin}/publish`, { method: "POST", headers, body: JSON.stringify(messages) });
  const body = await response.json();
  if (response.status !== 200) throw new Error(`publish: ${response.status} ${JSON.stringify(body)}`);
  return body.ids ?? [body.id];
}

const types = { ".js": "text/javascript", ".wasm": "application/wasm", ".html": "text/html" };
const page = `<!doctype html><meta charset="utf-8"><title>tidings tests</title>
<script type="module">
  window.tidings = await import("/src/index.js");
  window.mintToken = (subscribe, sub) =>
    fetch("/__token?subscribe=" + encodeURIComponent(subscribe) + (sub ? "&sub=" + encodeURIComponent(sub) : "")).then((r) => r.text());
  window.loaded = true;
</script>`;

/**
 * Serves the page and the package, and forwards `/events` and `/publish` to
 * `proxy.upstream`. `proxy.fail(topic, ...faults)` queues what the next
 * `/events` requests for a topic get instead: `{status, headers}` or
 * `{prefix}` (raw SSE bytes written before the real stream). Every `/events` request is logged in `proxy.requests`.
 */
export async function startProxy(upstream) {
  const open = new Map();
  let lastFault = null;
  const proxy = {
    upstream,
    faults: new Map(),
    requests: [],
    /** The next `/events` requests for `topic` get these instead. */
    fail(topic, ...faults) {
      proxy.faults.set(topic, [...(proxy.faults.get(topic) ?? []), ...faults]);
    },
    /** Streams open through the proxy right now for `topic`. */
    openStreams(topic) {
      return [...open.values()].filter(({ url }) => url.searchParams.getAll("topic").includes(topic)).length;
    },
    /** Cuts the open streams for `topic` (a network blip; the server stays up). */
    dropStreams(topic) {
      for (const [res, { url }] of open) if (url.searchParams.getAll("topic").includes(topic)) res.destroy();
    },
    /** Ends the open streams for `topic` (those `which({url, headers})`
     * picks) the way tidings-server does when a token expires: an event
     * `tidings.expired` (no `id:`), then the end. */
    expireStreams(topic, which = () => true) {
      for (const [res, { url, up, headers }] of open) {
        if (!url.searchParams.getAll("topic").includes(topic) || !which({ url, headers })) continue;
        up?.unpipe(res);
        res.end('event: tidings.expired\ndata: {"reason":"token expired"}\n\n');
      }
    },
    /** `/events` requests for `topic` (not counting the client's status probes). */
    requestsFor(topic) {
      return proxy.requests.filter((r) => !r.probe && r.url.searchParams.getAll("topic").includes(topic));
    },
  };
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, "http://proxy");
    // The wasm-bindgen-test page comes from the runner's own origin.
    // (tidings-server itself sends no CORS headers yet.)
    if (req.headers.origin) {
      res.setHeader("access-control-allow-origin", req.headers.origin);
      res.setHeader("access-control-allow-credentials", "true");
      res.setHeader("access-control-expose-headers", "retry-after");
      if (req.method === "OPTIONS") {
        res.writeHead(204, {
          "access-control-allow-methods": "GET, POST",
          "access-control-allow-headers": req.headers["access-control-request-headers"] ?? "",
        });
        res.end();
        return;
      }
    }
    if (url.pathname === "/__open") {
      res.writeHead(200, { "content-type": "text/plain" }).end(String(proxy.openStreams(url.searchParams.get("topic"))));
      return;
    }
    if (url.pathname === "/__expire") {
      proxy.expireStreams(url.searchParams.get("topic"));
      res.writeHead(200, { "content-type": "text/plain" }).end("expired");
      return;
    }
    if (url.pathname === "/") {
      res.writeHead(200, { "content-type": "text/html" }).end(page);
      return;
    }
    if (url.pathname === "/__token") {
      const subscribe = url.searchParams.getAll("subscribe");
      const publish = url.searchParams.getAll("publish");
      const sub = url.searchParams.get("sub") ?? undefined;
      res.writeHead(200, { "content-type": "text/plain" }).end(mintToken({ subscribe, publish, sub }));
      return;
    }
    if (url.pathname.startsWith("/src/") || url.pathname.startsWith("/pkg/")) {
      const file = path.join(webRoot, path.normalize(url.pathname));
      try {
        const body = await readFile(file);
        res.writeHead(200, { "content-type": types[path.extname(file)] ?? "application/octet-stream" }).end(body);
      } catch {
        res.writeHead(404).end();
      }
      return;
    }
    let fault;
    if (url.pathname === "/events") {
      // The EventSource transport follows a failed stream with a status
      // probe (a plain fetch, no `Accept: text/event-stream`): it meets the
      // same failure, as it would at a real overloaded server.
      const probe = !(req.headers.accept ?? "").includes("text/event-stream");
      proxy.requests.push({ url, headers: req.headers, at: Date.now(), probe });
      const topic = url.searchParams.get("topic");
      fault = probe ? lastFault : proxy.faults.get(topic)?.shift();
      lastFault = probe ? null : (fault ?? null);
      if (fault?.status) {
        res.writeHead(fault.status, { "content-type": "text/plain", ...fault.headers }).end(`injected ${fault.status}`);
        return;
      }
    }
    const upstreamUrl = new URL(req.url, proxy.upstream);
    const forward = http.request(upstreamUrl, { method: req.method, headers: { ...req.headers, host: upstreamUrl.host } }, (up) => {
      res.writeHead(up.statusCode, up.headers);
      if (fault?.prefix && up.statusCode === 200) res.write(fault.prefix);
      if (open.has(res)) open.get(res).up = up;
      up.pipe(res);
      up.on("error", () => res.destroy());
      up.on("aborted", () => res.destroy());
    });
    forward.on("error", () => {
      // The upstream is down (a crash, a deploy): what a reverse proxy says.
      if (!res.headersSent) res.writeHead(502, { "content-type": "text/plain" }).end("bad gateway");
      else res.destroy();
    });
    if (url.pathname === "/events") {
      open.set(res, { url, headers: req.headers, up: null });
      res.on("close", () => {
        open.delete(res);
        forward.destroy();
      });
    }
    req.pipe(forward);
  });
  server.keepAliveTimeout = 1;
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  proxy.origin = `http://127.0.0.1:${server.address().port}`;
  proxy.stop = () =>
    new Promise((resolve) => {
      for (const res of open.keys()) res.destroy();
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return proxy;
}

/** Headless Debian Chromium. */
export async function startBrowser() {
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
      "--js-flags=--expose-gc",
    ],
  });
}

/** A fresh page on the proxy with the package loaded as `window.tidings`. */
export async function openPage(browser, proxy) {
  const page = await browser.newPage();
  page.on("pageerror", (error) => console.error("page error:", error));
  await page.goto(proxy.origin + "/");
  await page.waitForFunction(() => window.loaded === true);
  return page;
}

/** Polls `check` until it returns a truthy value. */
export async function until(check, what, { timeoutMs = 20_000 } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}
