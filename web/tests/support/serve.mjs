// Starts a tidings-server and the test proxy for the Rust browser tests
// (wasm/tests/browser.rs), which cannot spawn processes themselves. Writes
// the proxy's origin to the file named by argv[2] once ready; SIGTERM stops
// everything. Used by scripts/test-web.sh.
import { writeFileSync } from "node:fs";
import { startProxy, startServer } from "./harness.mjs";

const server = await startServer();
const proxy = await startProxy(server.origin);
writeFileSync(process.argv[2], proxy.origin);
const stop = async () => {
  await proxy.stop();
  await server.stop();
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
