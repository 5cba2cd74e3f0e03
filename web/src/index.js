// The `tidings` package: a thin ES module over the WebAssembly client
// (web/pkg, built by scripts/build-web.sh). Types: ../index.d.ts.
import init, { TidingsClient } from "../pkg/tidings_wasm.js";

let ready;

/** Loads the WebAssembly once; `connect` calls it for you. */
export function initTidings(wasm) {
  ready ??= init(wasm === undefined ? undefined : { module_or_path: wasm });
  return ready;
}

/** Opens a stream for `options.topics` at `url` (the server's `/events`). */
export async function connect(url, options = {}) {
  await initTidings(options.wasm);
  return new Client(new TidingsClient(String(url), options));
}

export class Client {
  #raw;

  constructor(raw) {
    this.#raw = raw;
  }

  on(type, handler) {
    this.#raw.on(type, handler);
    return () => this.#raw.off(type, handler);
  }

  off(type, handler) {
    this.#raw.off(type, handler);
  }

  onState(handler) {
    this.#raw.onState(handler);
    return () => this.#raw.offState(handler);
  }

  onError(handler) {
    this.#raw.onError(handler);
    return () => this.#raw.offError(handler);
  }

  get state() {
    return this.#raw.state;
  }

  get lastEventId() {
    return this.#raw.lastEventId;
  }

  close() {
    this.#raw.close();
  }

  /** Events of the given types (default `message`) as an async iterator;
   * it ends when the client closes or the loop breaks. */
  events(...types) {
    if (types.length === 0) types = ["message"];
    const queue = [];
    let wake = null;
    let done = this.#raw.state.kind === "closed";
    const push = (item) => {
      queue.push(item);
      wake?.();
    };
    const handlers = types.map((type) => [type, (data, meta) => push({ data, ...meta })]);
    const onState = (state) => {
      if (state.kind === "closed") finish();
    };
    const finish = () => {
      done = true;
      for (const [type, handler] of handlers) this.#raw.off(type, handler);
      this.#raw.offState(onState);
      wake?.();
    };
    if (!done) {
      for (const [type, handler] of handlers) this.#raw.on(type, handler);
      this.#raw.onState(onState);
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

  [Symbol.asyncIterator]() {
    return this.events();
  }
}
