// Real MQTT clients (the `mqtt` package) for the incident test and the demo. Runs inside a network
// namespace (`ip netns exec NS node mqtt-clients.mjs URL`), because the clients' SYNs must be
// tracked by that namespace's table. Plain JS: it runs under bare `node`.
//
// Protocol on stdin/stdout, one JSON object per line:
//   {"connect": N, "timeoutMs": T, "concurrency": C}  connects N more clients (C at a time, each
//       given T ms to get its CONNACK) and answers {"connected": a, "failed": b, "open": total,
//       "errors": {message: count}}. A failed client is closed and not retried, like a device
//       that gives up; the next request makes new ones.
//   {"publish": true}  every open client publishes once and waits for the broker's PUBACK;
//       answers {"published": n, "failed": m}.
//   stdin closing ends every client and the process.

import { createInterface } from 'node:readline';
import mqtt from 'mqtt';

const url = process.argv[2] ?? 'mqtt://127.0.0.1:1883';
const open = [];
let serial = 0;

function connectOne(timeoutMs) {
  return new Promise((resolve) => {
    serial += 1;
    const client = mqtt.connect(url, {
      clientId: `ct-demo-${process.pid}-${serial}`,
      connectTimeout: timeoutMs,
      reconnectPeriod: 0,
      keepalive: 60,
    });
    let settled = false;
    const finish = (ok, message) => {
      if (settled) return;
      settled = true;
      if (ok) open.push(client);
      else client.end(true);
      resolve({ ok, message });
    };
    client.once('connect', () => finish(true));
    client.once('error', (err) => finish(false, err.code ?? err.message));
    // mqtt.js reports a connect timeout as a close without an error.
    client.once('close', () => finish(false, 'connect timeout (no CONNACK)'));
  });
}

async function connectMany(count, timeoutMs, concurrency) {
  let connected = 0;
  let failed = 0;
  const errors = {};
  let next = 0;
  const worker = async () => {
    while (next < count) {
      next += 1;
      const { ok, message } = await connectOne(timeoutMs);
      if (ok) connected += 1;
      else {
        failed += 1;
        errors[message] = (errors[message] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, count)) }, worker));
  return { connected, failed, open: open.length, errors };
}

async function publishAll() {
  const results = await Promise.all(open.map((client) => new Promise((resolve) => {
    client.publish('conntrack/demo', 'hello', { qos: 1 }, (err) => resolve(!err));
  })));
  const published = results.filter(Boolean).length;
  return { published, failed: results.length - published };
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (line.trim() === '') continue;
  const request = JSON.parse(line);
  let answer;
  if (request.connect !== undefined) {
    answer = await connectMany(request.connect, request.timeoutMs ?? 3000, request.concurrency ?? 50);
  } else if (request.publish) {
    answer = await publishAll();
  } else {
    answer = { error: `unknown request ${line}` };
  }
  process.stdout.write(`${JSON.stringify(answer)}\n`);
}
await Promise.all(open.map((client) => client.endAsync(true)));
process.exit(0);
