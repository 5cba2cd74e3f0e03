// scripts/demo itself, in its --check mode (start, fetch every page, stop),
// against the server under test: in --redis mode it says which Redis it
// uses, gives the run a stream key of its own, tells each instance's pages
// who they are, and deletes its key when it stops.
// Run: scripts/test-e2e.sh web/e2e/demo-script.test.mjs
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import path from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { redisKeys, redisUrl, repoRoot, serverBin } from "./support/harness.mjs";

const run = promisify(execFile);

function demo(...args) {
  // A first port unlikely to be taken; the script moves to a free one if it is.
  const port = String(20000 + Math.floor(Math.random() * 20000));
  return run(path.join(repoRoot, "scripts/demo"), ["--no-build", "--check", ...args], {
    env: { ...process.env, TIDINGS_SERVER_BIN: serverBin, TIDINGS_DEMO_PORT: port, TIDINGS_REDIS_URL: redisUrl },
    timeout: 120_000,
  });
}

test("scripts/demo --redis: a stream key of the run's own, named in its output and in each page, gone when it stops", { timeout: 150_000 }, async () => {
  const { stdout } = await demo("--redis");
  const key = /stream key (tidings-demo:\S+)/.exec(stdout)?.[1];
  assert.ok(key, `no stream key in the output:\n${stdout}`);
  assert.match(stdout, new RegExp(`using the Redis of TIDINGS_REDIS_URL: ${redisUrl}`));
  const instances = [...stdout.matchAll(/instance (\d) of 2 at (\S+), Redis stream (\S+)/g)];
  assert.deepEqual(instances.map((m) => m[1]), ["1", "2"], stdout);
  for (const m of instances) assert.equal(m[3], key);
  assert.notEqual(instances[0][2], instances[1][2]);
  assert.deepEqual(redisKeys(redisUrl, key), [], `${key} and the keys beside it are gone`);
});

test("scripts/demo: one in-memory instance that names itself", { timeout: 150_000 }, async () => {
  const { stdout } = await demo();
  assert.match(stdout, /instance 1 of 1 at 127\.0\.0\.1:\d+, in-memory broker/);
});
