// The `tidings` package in headless Chromium against real tidings-server
// processes (sharing a real Redis), through a proxy that can fail requests.
// Run: scripts/test-web.sh (builds web/pkg and the server first).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { mintToken, openPage, publish, startBrowser, startProxy, startRedis, startServer, until } from "./support/harness.mjs";

let redis, primary, secondary, proxy, browser;
/** The servers share history through Redis (cluster mode); the restart test
 * keeps its no-Redis variant (a gap instead of a replay) for reference. */
const clustered = true;

before(async () => {
  redis = await startRedis();
  primary = await startServer({ redisUrl: redis.url }).catch(() => null);
  if (!primary) {
    console.error("tidings-server lacks cluster mode: running without Redis");
    redis.url = undefined;
    clustered = false;
    primary = await startServer({});
  }
  secondary = await startServer({ redisUrl: redis.url });
  proxy = await startProxy(primary.origin);
  browser = await startBrowser();
});

after(async () => {
  await browser?.close();
  await proxy?.stop();
  await primary?.stop();
  await secondary?.stop();
  await redis?.stop();
});

let topicCounter = 0;
/** A topic no other test uses, so histories never mix. */
const freshTopic = (prefix = "demo") => `${prefix}:t${process.pid}x${++topicCounter}`;

/**
 * Opens a page and connects a client; the page logs events of `types` in
 * `window.log`, errors in `window.errors`, states in `window.states`.
 * `tokenFor` adds a `getToken` hook minting a token for that pattern.
 */
async function connect(options, types, { tokenFor } = {}) {
  const page = await openPage(browser, proxy);
  await page.evaluate(
    async ({ options, types, tokenFor }) => {
      window.log = [];
      window.errors = [];
      window.states = [];
      window.unhandled = [];
      window.hookCalls = 0;
      window.addEventListener("unhandledrejection", (e) => window.unhandled.push(String(e.reason)));
      window.addEventListener("error", (e) => window.unhandled.push(String(e.message)));
      if (tokenFor) {
        options.getToken = async () => {
          window.hookCalls += 1;
          return window.mintToken(tokenFor);
        };
      }
      window.client = await window.tidings.connect("/events", options);
      window.gaps = [];
      window.client.on("tidings.gap", (data) => window.gaps.push(data));
      window.client.onState((state) => window.states.push(state));
      window.client.onError((e) =>
        window.errors.push({ kind: e.kind, status: e.status ?? null, eventType: e.eventType ?? null, message: e.message }),
      );
      for (const type of types) window.client.on(type, (data, meta) => window.log.push({ data, ...meta }));
    },
    { options, types, tokenFor },
  );
  return page;
}

const read = (page, name) => page.evaluate((name) => window[name], name);
const stateOf = (page) => page.evaluate(() => window.client.state.kind);
async function waitOpen(page) {
  await until(async () => (await stateOf(page)) === "open", "the stream to open");
}
async function waitLog(page, count) {
  return until(async () => {
    const log = await read(page, "log");
    return log.length >= count && log;
  }, `${count} events`);
}
async function finish(page) {
  assert.deepEqual(await read(page, "unhandled"), [], "no unhandled rejection or error on the page");
  await page.close();
}

for (const transport of ["eventsource", "fetch"]) {
  describe(`${transport} transport`, () => {
    test("typed events arrive for several topics and a pattern, and nothing else", { timeout: 60_000 }, async () => {
      const [a, b, other] = [freshTopic(), freshTopic(), freshTopic()];
      const page = await connect({ topics: [a, `${b}:*`], transport }, ["greeting", "count", "message"]);
      await waitOpen(page);
      await publish(primary.origin, [
        { topic: a, type: "greeting", data: { text: "hello" } },
        { topic: `${b}:x`, type: "count", data: 1 },
        { topic: other, type: "greeting", data: { text: "not subscribed" } },
        { topic: `${b}:y:z`, type: "count", data: 2 }, // `*` is one segment only
        { topic: `${b}:y`, data: [3] },
      ]);
      const log = await waitLog(page, 3);
      assert.deepEqual(
        log.map(({ type, data }) => ({ type, data })),
        [
          { type: "greeting", data: { text: "hello" } },
          { type: "count", data: 1 },
          { type: "message", data: [3] },
        ],
      );
      assert.ok(log.every((e) => typeof e.id === "string" && e.id.length > 0));
      // The async iterator sees the same events. It subscribes synchronously
      // when the loop starts, so nothing published after this call is missed.
      await page.evaluate(() => {
        window.iterated = (async () => {
          const seen = [];
          for await (const event of window.client.events("count")) {
            seen.push(event.data);
            if (seen.length === 2) break;
          }
          return seen;
        })();
      });
      await publish(primary.origin, [
        { topic: `${b}:q`, type: "count", data: 10 },
        { topic: `${b}:q`, type: "count", data: 11 },
      ]);
      const iterated = page.evaluate(() => window.iterated);
      assert.deepEqual(await iterated, [10, 11]);
      await finish(page);
    });

    test("a crashed server comes back and the client resumes with nothing lost or duplicated", { timeout: 60_000 }, async () => {
      const topic = freshTopic();
      const page = await connect({ topics: [topic], transport, initialDelay: 50, maxDelay: 400 }, ["n"]);
      await waitOpen(page);
      const first = await publish(primary.origin, [1, 2, 3].map((n) => ({ topic, type: "n", data: n })));
      await waitLog(page, 3);
      const before = proxy.requestsFor(topic).length;

      await primary.stop(); // SIGKILL: no goodbye to the streams
      if (clustered) {
        // Published through the other instance while this one is down.
        await publish(secondary.origin, [4, 5, 6].map((n) => ({ topic, type: "n", data: n })));
      }
      await until(async () => proxy.requestsFor(topic).length >= before + 2, "reconnect attempts answered 502 by the proxy");
      primary = await startServer({ redisUrl: redis.url });
      proxy.upstream = primary.origin;
      await until(async () => (await stateOf(page)) === "open", "the client to reconnect");
      const rest = clustered ? [7] : [4, 5, 6, 7];
      await publish(primary.origin, rest.map((n) => ({ topic, type: "n", data: n })));

      const log = await waitLog(page, 7);
      // A duplicate would travel the same stream as this marker, before it.
      await publish(primary.origin, [{ topic, type: "n", data: "end" }]);
      await waitLog(page, 8);
      const all = await read(page, "log");
      assert.deepEqual(all.map((e) => e.data), [1, 2, 3, 4, 5, 6, 7, "end"], "every message once, in order");
      assert.equal(new Set(log.map((e) => e.id)).size, log.length);
      const resumed = proxy.requestsFor(topic).slice(before).map((r) => r.url.searchParams.get("lastEventId"));
      assert.ok(resumed.every((id) => id === first[2]), `every retry resumes after ${first[2]}: ${resumed}`);
      const errors = await read(page, "errors");
      assert.ok(errors.some((e) => e.kind === "http" && e.status === 502), JSON.stringify(errors));
      // Without shared history the restarted server cannot replay: the app
      // hears about the gap instead of silently missing messages.
      assert.equal((await read(page, "gaps")).length, clustered ? 0 : 1);
      await finish(page);
    });

    test("503 and 502 lead to reconnects with growing, jittered delays", { timeout: 60_000 }, async () => {
      const topic = freshTopic();
      const statuses = [503, 502, 503, 502, 503];
      proxy.fail(topic, ...statuses.map((status) => ({ status })));
      const page = await connect({ topics: [topic], transport, initialDelay: 40, maxDelay: 2000 }, ["n"]);
      await waitOpen(page);
      const errors = (await read(page, "errors")).filter((e) => e.kind === "http");
      assert.deepEqual(errors.map((e) => e.status), statuses);
      const waits = (await read(page, "states")).filter((s) => s.kind === "reconnecting");
      assert.deepEqual(waits.map((s) => s.attempt), [1, 2, 3, 4, 5]);
      waits.forEach((s, i) => assert.ok(s.delayMs >= 0 && s.delayMs <= 40 * 2 ** i, `attempt ${s.attempt}: ${s.delayMs} ms`));
      // Jitter: the delays are drawn, not the ceilings themselves.
      assert.notDeepEqual(waits.map((s) => s.delayMs), waits.map((_, i) => 40 * 2 ** i));
      // The client really waited: each retry came at least its delay later.
      const times = proxy.requestsFor(topic).map((r) => r.at);
      waits.forEach((s, i) => assert.ok(times[i + 1] - times[i] >= s.delayMs - 5, `retry ${i + 1} waited`));
      // And then it works.
      await publish(primary.origin, [{ topic, type: "n", data: 1 }]);
      await waitLog(page, 1);
      await finish(page);
    });

    test("the server's retry: is the floor of the backoff", { timeout: 60_000 }, async () => {
      const topic = freshTopic();
      // Without the floor every delay would be 0 or 1 ms.
      const page = await connect({ topics: [topic], transport, initialDelay: 1, maxDelay: 1 }, ["n"]);
      await waitOpen(page);
      proxy.dropStreams(topic);
      const wait = await until(
        async () => (await read(page, "states")).find((s) => s.kind === "reconnecting"),
        "a reconnect after the stream broke",
      );
      assert.equal(wait.delayMs, 100, "tidings-server runs with --retry-ms 100");
      await waitOpen(page);
      assert.equal(proxy.requestsFor(topic).length, 2);
      await finish(page);
    });

    test("401 stops with an auth error; the token hook lets it resume", { timeout: 60_000 }, async () => {
      const topic = freshTopic("private");
      // Without a hook: an auth error, then closed for good.
      const denied = await connect({ topics: [topic], transport }, ["n"]);
      await until(async () => (await stateOf(denied)) === "closed", "closed after 401");
      assert.deepEqual(
        (await read(denied, "errors")).map(({ kind, status }) => ({ kind, status })),
        [{ kind: "auth", status: 401 }],
      );
      await finish(denied);

      const page = await connect({ topics: [topic], transport, initialDelay: 20 }, ["n"], { tokenFor: topic });
      await waitOpen(page);
      assert.equal(await read(page, "hookCalls"), 1);
      assert.deepEqual(
        (await read(page, "states")).map((s) => s.kind),
        ["authenticating", "reconnecting", "connecting", "open"],
      );
      await publish(primary.origin, [{ topic, type: "n", data: "secret" }], mintToken({ publish: [topic] }));
      assert.deepEqual((await waitLog(page, 1)).map((e) => e.data), ["secret"]);
      const last = proxy.requestsFor(topic).at(-1);
      if (transport === "fetch") assert.match(last.headers.authorization ?? "", /^Bearer ey/);
      else assert.match(last.url.searchParams.get("access_token") ?? "", /^ey/);
      await finish(page);
    });

    test("an expired token is refreshed through getToken and the stream resumes without loss", { timeout: 60_000 }, async () => {
      const topic = freshTopic("private");
      // Another lifetime than the hook's tokens (1 h): minted in the same
      // second with the same claims, the refreshed token would be identical.
      const token = mintToken({ subscribe: [topic], ttl: "30m" });
      const page = await connect({ topics: [topic], transport, token, resetAfter: 50 }, ["n", "tidings.expired"], { tokenFor: topic });
      await waitOpen(page);
      const publisher = mintToken({ publish: [topic] });
      const first = await publish(primary.origin, [1, 2].map((n) => ({ topic, type: "n", data: n })), publisher);
      await waitLog(page, 2);
      await new Promise((resolve) => setTimeout(resolve, 100)); // longer than resetAfter: a stable stream
      await page.evaluate(() => (window.states = []));

      proxy.expireStreams(topic);
      // Published while the client fetches a token: the resume replays them.
      await publish(primary.origin, [3, 4].map((n) => ({ topic, type: "n", data: n })), publisher);
      await until(async () => (await read(page, "log")).filter((e) => e.type === "n").length === 4, "4 events");
      await until(async () => (await stateOf(page)) === "open", "the stream to reopen");
      await publish(primary.origin, [{ topic, type: "n", data: 5 }], publisher);
      await until(async () => (await read(page, "log")).filter((e) => e.type === "n").length === 5, "5 events");

      const log = await read(page, "log");
      assert.deepEqual(log.filter((e) => e.type === "n").map((e) => e.data), [1, 2, 3, 4, 5], "every message once, in order");
      assert.equal(log.filter((e) => e.type === "tidings.expired").length, 1, "the app may listen to tidings.expired");
      assert.equal(await read(page, "hookCalls"), 1);
      assert.deepEqual(await read(page, "errors"), [], "an expired token is not an error");
      assert.deepEqual(
        (await read(page, "states")).map((s) => s.kind),
        ["authenticating", "connecting", "open"],
        "no backoff wait after a stable stream",
      );
      const requests = proxy.requestsFor(topic);
      assert.equal(requests.length, 2, "one stream, then one resume");
      assert.equal(proxy.requests.filter((r) => r.probe && r.url.searchParams.getAll("topic").includes(topic)).length, 0, "no status probe");
      const resumed = requests[1];
      assert.equal(resumed.url.searchParams.get("lastEventId"), first[1], "resumes after the last id");
      const sent = transport === "fetch" ? resumed.headers.authorization?.replace(/^Bearer /, "") : resumed.url.searchParams.get("access_token");
      assert.ok(sent && sent !== token, "the resume carries the fresh token");
      await finish(page);
    });

    test("an expired token without getToken closes with an auth error", { timeout: 60_000 }, async () => {
      const topic = freshTopic("private");
      const page = await connect({ topics: [topic], transport, token: mintToken({ subscribe: [topic] }) }, ["n"]);
      await waitOpen(page);
      proxy.expireStreams(topic);
      await until(async () => (await stateOf(page)) === "closed", "closed after tidings.expired");
      const errors = await read(page, "errors");
      assert.deepEqual(errors.map(({ kind, status }) => ({ kind, status })), [{ kind: "auth", status: null }]);
      assert.match(errors[0].message, /expired.*getToken/);
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(proxy.requestsFor(topic).length, 1, "no reconnect");
      await finish(page);
    });

    test("204 closes for good, without a retry", { timeout: 60_000 }, async () => {
      const topic = freshTopic();
      proxy.fail(topic, { status: 204 });
      const page = await connect({ topics: [topic], transport, initialDelay: 20 }, ["n"]);
      await until(async () => (await stateOf(page)) === "closed", "closed after 204");
      await new Promise((resolve) => setTimeout(resolve, 300)); // longer than any retry delay here
      assert.equal(proxy.requestsFor(topic).length, 1, "no retry after 204");
      assert.deepEqual(await read(page, "errors"), []);
      await finish(page);
    });

    test("a resume point the server no longer has surfaces tidings.gap", { timeout: 60_000 }, async () => {
      const topic = freshTopic();
      const page = await connect({ topics: [topic], transport, lastEventId: "1-0" }, ["n"]);
      await until(async () => (await read(page, "gaps")).length === 1, "the gap event");
      assert.equal(proxy.requestsFor(topic)[0].url.searchParams.get("lastEventId"), "1-0");
      await publish(primary.origin, [{ topic, type: "n", data: 1 }]);
      assert.deepEqual((await waitLog(page, 1)).map((e) => e.data), [1], "live events follow the gap");
      await finish(page);
    });

    test("the id of a tidings.* event is a resume point: a stream cut before any message loses nothing", { timeout: 60_000 }, async () => {
      // The server's first frame carries an id: tidings.connected's, or
      // tidings.gap's when the resume id cannot be placed (`0-0`).
      for (const control of ["tidings.connected", "tidings.gap"]) {
        const topic = freshTopic();
        const options = { topics: [topic], transport, initialDelay: 20 };
        if (control === "tidings.gap") options.lastEventId = "0-0";
        const page = await connect(options, ["n"]);
        await waitOpen(page);
        if (control === "tidings.gap") await until(async () => (await read(page, "gaps")).length === 1, "the gap event");
        const start = await until(() => page.evaluate(() => window.client.lastEventId), `the ${control} id as the resume point`);
        // Cut before the first message; the retry waits (Retry-After) while
        // a burst is published.
        proxy.fail(topic, { status: 503, headers: { "retry-after": "1" } });
        proxy.dropStreams(topic);
        await publish(primary.origin, [1, 2, 3].map((n) => ({ topic, type: "n", data: n })));
        const log = await waitLog(page, 3);
        assert.deepEqual(log.map((e) => e.data), [1, 2, 3], `after ${control}: the burst is replayed`);
        const resumes = proxy.requestsFor(topic).slice(1).map((r) => r.headers["last-event-id"] ?? r.url.searchParams.get("lastEventId"));
        assert.ok(resumes.length >= 2 && resumes.every((id) => id === start), `every retry resumes after ${start}: ${resumes}`);
        await finish(page);
      }
    });

    test("close() stops everything: stream, retries and handlers", { timeout: 60_000 }, async () => {
      const topic = freshTopic();
      const page = await connect({ topics: [topic], transport }, ["n"]);
      await waitOpen(page);
      assert.equal(proxy.openStreams(topic), 1);
      await page.evaluate(() => window.client.close());
      assert.equal(await stateOf(page), "closed");
      await until(() => proxy.openStreams(topic) === 0, "the stream to close");
      await publish(primary.origin, [{ topic, type: "n", data: 1 }]);

      // Closing while a retry is scheduled cancels the retry.
      const other = freshTopic();
      // Retry-After: 1 makes the wait at least 1 s, so close() lands in it.
      proxy.fail(other, { status: 503, headers: { "retry-after": "1" } });
      const retrying = await connect({ topics: [other], transport, initialDelay: 300, maxDelay: 300 }, ["n"]);
      const { delayMs: delay } = await until(
        async () => (await read(retrying, "states")).find((s) => s.kind === "reconnecting"),
        "a scheduled retry",
      );
      assert.ok(delay >= 1000, `Retry-After is a floor: ${delay} ms`);
      assert.equal(await stateOf(retrying), "reconnecting");
      const requests = proxy.requestsFor(other).length;
      await retrying.evaluate(() => window.client.close());
      await new Promise((resolve) => setTimeout(resolve, delay + 300));
      assert.equal(proxy.requestsFor(other).length, requests, "no request after close");
      assert.equal(proxy.openStreams(other), 0);
      assert.deepEqual(await read(page, "log"), [], "no event after close");
      await finish(retrying);
      await finish(page);
    });

    test("a burst of 2,000 events of mixed sizes arrives complete and in order", { timeout: 60_000 }, async () => {
      const topic = freshTopic();
      const page = await connect({ topics: [topic], transport }, []);
      await page.evaluate(() => {
        window.received = 0;
        window.bad = [];
        window.client.on("blob", (data) => {
          if (data.n !== window.received || data.s.length !== (data.n * 7) % 600) window.bad.push(data.n);
          window.received += 1;
        });
      });
      await waitOpen(page);
      for (let batch = 0; batch < 20; batch++) {
        const messages = Array.from({ length: 100 }, (_, i) => {
          const n = batch * 100 + i;
          return { topic, type: "blob", data: { n, s: "x".repeat((n * 7) % 600) } };
        });
        await publish(primary.origin, messages);
      }
      await until(async () => (await read(page, "received")) >= 2000, "2,000 events");
      assert.deepEqual(await read(page, "bad"), []);
      assert.equal(await read(page, "received"), 2000);
      await finish(page);
    });

    test("a client the app keeps no reference to survives garbage collection", { timeout: 60_000 }, async () => {
      const topic = freshTopic();
      const page = await openPage(browser, proxy);
      await page.evaluate(
        async ({ topic, transport }) => {
          window.log = [];
          window.unhandled = [];
          const client = await window.tidings.connect("/events", { topics: [topic], transport });
          client.on("n", (data) => window.log.push(data));
        },
        { topic, transport },
      );
      await until(() => proxy.openStreams(topic) === 1, "the stream");
      for (let i = 0; i < 5; i++) {
        await page.evaluate(async () => {
          window.gc();
          await new Promise((resolve) => setTimeout(resolve, 20));
        });
      }
      await publish(primary.origin, [{ topic, type: "n", data: "still here" }]);
      assert.deepEqual(await waitLog(page, 1), ["still here"]);
      assert.equal(proxy.openStreams(topic), 1);
      await finish(page);
    });

    test("malformed data reaches the error callback and the stream goes on", { timeout: 60_000 }, async () => {
      const topic = freshTopic();
      proxy.fail(topic, { prefix: "id: bogus-1\nevent: n\ndata: {not json\n\n" });
      const page = await connect({ topics: [topic], transport }, ["n"]);
      await waitOpen(page);
      await page.evaluate(() => window.client.on("n", (data) => { if (data === 2) throw new Error("boom"); }));
      await publish(primary.origin, [1, 2, 3].map((n) => ({ topic, type: "n", data: n })));
      await waitLog(page, 3);
      assert.deepEqual((await read(page, "log")).map((e) => e.data), [1, 2, 3]);
      const errors = (await read(page, "errors")).map(({ kind, eventType }) => ({ kind, eventType }));
      assert.deepEqual(errors, [
        { kind: "decode", eventType: "n" },
        { kind: "handler", eventType: "n" },
      ]);
      await finish(page);
    });
  });
}
