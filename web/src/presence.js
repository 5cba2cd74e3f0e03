// `client.presence(topic)`: `GET /presence` beside the subscribe URL, with
// the client's credentials. Plain JS (not in the WebAssembly): it costs the
// bundle less than a kilobyte that way.

/** `/presence?topic=..` beside the subscribe URL `url`. */
function presenceUrl(url, topic, { limit, cursor } = {}) {
  const target = new URL("presence", new URL(String(url), globalThis.location?.href));
  target.searchParams.set("topic", topic);
  if (limit !== undefined) target.searchParams.set("limit", String(limit));
  if (cursor) target.searchParams.set("cursor", cursor);
  return target.href;
}

/** A page of presence; rejects with an `Error` carrying `kind` (`auth`,
 * `http`, `network`) and `status`, like `onError`'s errors. */
export async function fetchPresence(url, topic, query, { token, headers, withCredentials }) {
  const sent = { ...(headers ?? {}) };
  if (token) {
    for (const name of Object.keys(sent)) if (name.toLowerCase() === "authorization") delete sent[name];
    sent.Authorization = `Bearer ${token}`;
  }
  let response;
  try {
    response = await fetch(presenceUrl(url, topic, query ?? {}), {
      headers: sent,
      credentials: withCredentials ? "include" : "same-origin",
      cache: "no-store",
    });
  } catch (cause) {
    throw Object.assign(new Error("network error while asking for presence"), { kind: "network", cause });
  }
  if (!response.ok) {
    const auth = response.status === 401 || response.status === 403;
    const body = await response.json().catch(() => null);
    const message = body?.error?.message ?? `server answered HTTP ${response.status}`;
    throw Object.assign(new Error(message), { kind: auth ? "auth" : "http", status: response.status });
  }
  return response.json();
}
