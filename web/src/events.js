// Events of some types as an async iterator, over any client with `on`,
// `onState` (both returning an unsubscribe function) and `state`. It ends
// when the client closes or the loop breaks; errors go to `onError`, never
// into the loop (no unhandled rejection).
export function eventsOf(client, types) {
  if (types.length === 0) types = ["message"];
  const queue = [];
  let wake = null;
  let done = client.state.kind === "closed";
  const offs = [];
  const finish = () => {
    done = true;
    for (const off of offs.splice(0)) off();
    wake?.();
  };
  if (!done) {
    for (const type of types) offs.push(client.on(type, (data, meta) => (queue.push({ data, ...meta }), wake?.())));
    offs.push(client.onState((state) => state.kind === "closed" && finish()));
  }
  return {
    next: async () => {
      while (queue.length === 0 && !done) await new Promise((resolve) => (wake = resolve));
      wake = null;
      return queue.length > 0 ? { value: queue.shift(), done: false } : { value: undefined, done: true };
    },
    return: async () => {
      finish();
      queue.length = 0;
      return { value: undefined, done: true };
    },
    [Symbol.asyncIterator]() {
      return this;
    },
  };
}
