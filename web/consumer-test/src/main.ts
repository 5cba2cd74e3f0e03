// Uses the package the way an app would; `tsc --noEmit` checks the typings.
import { connect, type Client, type State, type TidingsError } from "tidings";

type Events = {
  status: { state: "queued" | "shipped"; at: string };
  count: number;
};

const log = document.getElementById("log")!;

async function main(): Promise<Client<Events>> {
  const client = await connect<Events>("/events", { topics: ["demo:>"], transport: "fetch", maxDelay: 10_000 });
  const off = client.on("status", (data, meta) => {
    const state: "queued" | "shipped" = data.state;
    log.textContent += `${meta.type} ${meta.id ?? "-"} ${state} ${data.at}\n`;
  });
  // @ts-expect-error: `count` carries a number, not a string.
  client.on("count", (data: string) => log.append(data));
  client.onState((state: State) => {
    if (state.kind === "reconnecting") log.textContent += `retry ${state.attempt} in ${state.delayMs} ms\n`;
  });
  client.onError((error: TidingsError) => console.warn(error.kind, error.status, error.message));
  for await (const event of client.events("count")) {
    const n: number = event.data;
    if (n > 10) break;
  }
  off();
  return client;
}

main().then((client) => client.close());
