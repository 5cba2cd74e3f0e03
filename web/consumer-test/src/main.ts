// Uses the package the way an app would; `tsc --noEmit` checks the typings.
// (The README examples are checked too: run.sh extracts them into src/readme.)
import { connect, type Client, type SharedClient, type State, type TidingsError } from "tidings";

type Events = {
  status: { state: "queued" | "shipped"; at: string };
  count: number;
};

// An interface works as the event map too.
interface ChatEvents {
  message: { from: string; text: string };
}

const log = document.getElementById("log")!;

async function main(): Promise<Client<Events>> {
  const client = await connect<Events>("/events", { topics: ["demo:>"], transport: "fetch", maxDelay: 10_000 });
  const off = client.on("status", (data, meta) => {
    const state: "queued" | "shipped" = data.state;
    log.textContent += `${meta.type} ${meta.id ?? "-"} ${state} ${data.at}\n`;
  });
  // @ts-expect-error: `count` carries a number, not a string.
  client.on("count", (data: string) => log.append(data));
  // @ts-expect-error: not a type of this map, nor one of the server's.
  client.on("nope", () => {});
  // The server's own events, typed whatever the map.
  client.on("tidings.gap", (data, meta) => log.append(`${meta.type} after ${data.lastEventId ?? "start"}`));
  client.on("tidings.connected", (data) => log.append(data.connectionId, ...data.topics));
  client.off("tidings.gap");
  client.onState((state: State) => {
    if (state.kind === "reconnecting") log.textContent += `retry ${state.attempt} in ${state.delayMs} ms\n`;
  });
  client.onError((error: TidingsError) => console.warn(error.kind, error.status, error.message));
  for await (const event of client.events("count", "tidings.gap")) {
    if (event.type === "count") {
      const n: number = event.data;
      if (n > 10) break;
    } else {
      const after: string | null = event.data.lastEventId;
      log.append(String(after));
    }
  }
  // `for await` over the client yields `message` events; this map has none.
  for await (const event of client) {
    // @ts-expect-error: unknown data must be checked before use.
    event.data.anything;
    const type: "message" = event.type;
    log.append(type);
    break;
  }
  off();
  return client;
}

async function chat(): Promise<void> {
  const shared: SharedClient<ChatEvents> = await connect<ChatEvents>("/events", { topics: ["chat:room:1"], shared: true });
  const leading: boolean = shared.isLeader;
  for await (const { data, id } of shared) {
    log.textContent += `${leading} ${id ?? "-"} ${data.from}: ${data.text}\n`;
    break;
  }
  const own = await connect<ChatEvents>("/events", { topics: ["chat:room:1"] });
  // @ts-expect-error: only a shared client has `isLeader`.
  own.isLeader;
  own.close();
  shared.close();
}

main().then((client) => client.close());
void chat;
