// Receives a Tidings stream with the npm `eventsource` package (a WHATWG
// EventSource for Node) and checks that every event arrives intact.
//
// Usage: node eventsource-check.mjs http://127.0.0.1:PORT
// Uses the public `demo:` namespace of the default configuration.
// Exits 0 and prints `ok: ...` when everything matched, 1 otherwise.
import { EventSource } from 'eventsource';

const base = process.argv[2];
if (!base) {
  console.error('usage: node eventsource-check.mjs BASE_URL');
  process.exit(2);
}
const fail = (why) => {
  console.error(`FAIL: ${why}`);
  process.exit(1);
};
setTimeout(() => fail('timed out'), 20_000).unref();

const topic = `demo:es:${process.pid}`;
const messages = [
  { topic, data: { n: 1, text: 'plain' } },
  { topic, type: 'status', data: { n: 2, text: 'line one\nline two', emoji: 'snow ☃ 🎉' } },
  { topic: `${topic}:deeper`, type: 'order.updated', data: [1, 2.5, null, true, 'x'] },
  { topic, data: 'just a string' },
  { topic, data: -0.5e-3 },
];

async function publish(batch) {
  const response = await fetch(`${base}/publish`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(batch),
  });
  if (!response.ok) fail(`publish answered ${response.status}: ${await response.text()}`);
  return (await response.json()).ids;
}

function open(url, types, onEvent) {
  const source = new EventSource(url);
  source.onerror = (e) => {
    if (source.readyState === EventSource.CLOSED) fail(`stream failed: ${e.message ?? e}`);
  };
  for (const type of types) source.addEventListener(type, (e) => onEvent(type, e, source));
  return source;
}

const types = ['tidings.connected', 'tidings.gap', 'message', 'status', 'order.updated'];
const url = `${base}/events?topic=${encodeURIComponent(topic)}&topic=${encodeURIComponent(`${topic}:>`)}`;

// 1. Live delivery of every message, in order, with ids and types. The
// events may arrive before the publish is answered (the publisher writes
// waiting streams itself): wait for both.
const live = await new Promise((resolve) => {
  const got = [];
  let ids;
  open(url, types, async (type, event, source) => {
    if (type === 'tidings.connected') {
      const info = JSON.parse(event.data);
      if (!/^[0-9a-f]{32}$/.test(info.connectionId)) fail(`bad connectionId ${event.data}`);
      // The first frame's id is a resume point (a stream cut before its
      // first message resumes from it): EventSource must expose it.
      if (!/^[0-9a-z]+-\d+$/.test(event.lastEventId)) fail(`tidings.connected must carry a resumable id, got '${event.lastEventId}'`);
      ids = publish(messages);
      return;
    }
    got.push({ type, data: event.data, id: event.lastEventId });
    if (got.length === messages.length) {
      source.close();
      resolve({ got, ids });
    }
  });
});
live.ids = await live.ids;
live.got.forEach((g, i) => {
  const want = messages[i];
  if (g.type !== (want.type ?? 'message')) fail(`event ${i}: type ${g.type}`);
  if (g.id !== live.ids[i]) fail(`event ${i}: id ${g.id}, expected ${live.ids[i]}`);
  const wantData = JSON.stringify(want.data);
  if (g.data !== wantData) fail(`event ${i}: data ${g.data}, expected ${wantData}`);
});

// 2. Resume after the last seen id: only the messages published since.
const later = await publish([{ topic, data: 'missed 1' }, { topic, data: 'missed 2' }]);
const resumed = await new Promise((resolve) => {
  const got = [];
  const resumeUrl = `${url}&lastEventId=${encodeURIComponent(live.ids.at(-1))}`;
  open(resumeUrl, types, (type, event, source) => {
    if (type === 'tidings.connected') return;
    got.push({ type, id: event.lastEventId, data: event.data });
    if (got.length === later.length) {
      source.close();
      resolve(got);
    }
  });
});
resumed.forEach((g, i) => {
  if (g.type !== 'message' || g.id !== later[i] || g.data !== JSON.stringify(`missed ${i + 1}`)) {
    fail(`resumed event ${i}: ${JSON.stringify(g)}`);
  }
});

console.log(`ok: ${live.got.length} live events and ${resumed.length} resumed events received intact`);
process.exit(0);
