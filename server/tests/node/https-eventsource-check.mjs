// Opens a Tidings server over HTTPS in headless Chromium (Debian's
// /usr/bin/chromium, certificate errors ignored for the test's own CA) and
// subscribes with the browser's EventSource: headers, `retry:`,
// `tidings.connected`, published events and a JSON refusal must behave as
// over HTTP/1.1, and the page must have used HTTP/2.
//
// Usage: node https-eventsource-check.mjs https://127.0.0.1:PORT
// Prints one JSON line with what the page saw; exits 1 on failure.
import { chromium } from 'playwright-core';

const base = process.argv[2];
if (!base) {
  console.error('usage: node https-eventsource-check.mjs BASE_URL');
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
    '--disable-quic',
    '--ignore-certificate-errors',
  ],
});
try {
  const page = await browser.newPage({ ignoreHTTPSErrors: true });
  const landing = await page.goto(`${base}/healthz`);
  if (landing.status() !== 200) throw new Error(`/healthz answered ${landing.status()}`);
  const seen = await page.evaluate(async () => {
    const topic = `demo:chromium:${Math.random().toString(36).slice(2)}`;
    const out = { events: [], errors: 0 };
    const withTimeout = (promise, what) =>
      Promise.race([
        promise,
        new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), 15000)),
      ]);
    const source = new EventSource(`/events?topic=${encodeURIComponent(topic)}`);
    const connected = new Promise((resolve) =>
      source.addEventListener('tidings.connected', (e) => resolve(JSON.parse(e.data))),
    );
    const received = [];
    let notify;
    source.addEventListener('note', (e) => {
      received.push({ id: e.lastEventId, data: JSON.parse(e.data) });
      if (received.length === 3 && notify) notify();
    });
    source.onerror = () => out.errors++;
    out.connected = await withTimeout(connected, 'tidings.connected');
    const ids = [];
    for (let n = 1; n <= 3; n++) {
      const answer = await fetch('/publish', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ topic, type: 'note', data: { n } }),
      });
      ids.push((await answer.json()).id);
    }
    await withTimeout(
      new Promise((resolve) => {
        notify = resolve;
        if (received.length === 3) resolve();
      }),
      'three events',
    );
    source.close();
    out.published = ids;
    out.events = received;
    const refused = await fetch('/events');
    out.refusal = { status: refused.status, body: await refused.json() };
    const stream = await fetch(`/events?topic=${encodeURIComponent(topic)}`);
    out.headers = {
      contentType: stream.headers.get('content-type'),
      cacheControl: stream.headers.get('cache-control'),
    };
    const reader = stream.body.getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    out.firstChunk = first;
    await reader.cancel();
    out.protocols = performance
      .getEntriesByType('resource')
      .concat(performance.getEntriesByType('navigation'))
      .map((entry) => entry.nextHopProtocol);
    return out;
  });
  console.log(JSON.stringify(seen));
} catch (error) {
  console.error(`FAIL: ${error.stack || error}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
