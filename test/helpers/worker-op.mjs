// One library operation, over and over, in a worker thread until the thread is terminated
// (test/helpers/worker-child.mjs starts it). Posts 'ready' when the loop begins.
//
// workerData: { dist, netns, op, index }
import { parentPort, workerData } from 'node:worker_threads';

const { dist, netns, op, index } = workerData;
const { Conntrack } = await import(dist);

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const ready = () => parentPort.postMessage('ready');
// An entry of this worker's own (workers run one at a time, but a terminated one leaves its entry).
const tuple = { protocol: 'udp', src: '10.8.0.1', dst: '10.8.0.2', sport: 1024 + (index % 60000), dport: 53 };
const ignoreExists = (err) => {
  if (err?.code !== 'ERR_CONNTRACK_EXISTS') throw err;
};

async function opened() {
  return Conntrack.open({ netns });
}

const OPS = {
  async open() {
    ready();
    for (;;) await (await opened()).close();
  },
  async count() {
    const ct = await opened();
    ready();
    for (;;) await ct.count();
  },
  async stats() {
    const ct = await opened();
    ready();
    for (;;) await ct.stats();
  },
  async dump() {
    const ct = await opened();
    ready();
    for (;;) for await (const entry of ct.entries()) void entry;
  },
  async summary() {
    const ct = await opened();
    ready();
    for (;;) await ct.summarize(undefined, { by: ['protocol', 'dport'] });
  },
  // The subscription's start, over and over (issue #13's reproducer waits on the first event).
  async eventsStart() {
    const ct = await opened();
    ready();
    for (;;) {
      const events = ct.events();
      const first = events.next();
      await Promise.race([first, sleep(1)]);
      await events.return();
      await first.catch(() => undefined);
    }
  },
  // A subscription in its steady state: events arrive (this worker makes them) and are read.
  async eventsSteady() {
    const ct = await opened();
    const events = ct.events();
    const reading = (async () => {
      for await (const event of events) void event;
    })();
    reading.catch(() => undefined);
    ready();
    for (;;) {
      await ct.create({ original: tuple, timeout: 5 }).catch(ignoreExists);
      await ct.delete(tuple);
    }
  },
  async entry() {
    const ct = await opened();
    ready();
    for (let mark = 0; ; mark++) {
      await ct.create({ original: tuple, timeout: 5 }).catch(ignoreExists);
      await ct.get(tuple);
      await ct.update(tuple, { mark });
      await ct.delete(tuple);
    }
  },
  // Bulk changes: a batch of creates, then the native delete pass over them (scan path: by
  // source port, which no filtered flush can carry), and the filtered flush by mark.
  async bulk() {
    const ct = await opened();
    const batch = Array.from({ length: 200 }, (_, i) => ({ original: { ...tuple, sport: 20000 + i }, timeout: 5, mark: 77 }));
    ready();
    for (;;) {
      await ct.createMany(batch);
      await ct.deleteMatching({ src: tuple.src, sport: [20000, 20099] });
      await ct.deleteMatching({ mark: 77 });
    }
  },
  async expectations() {
    const ct = await opened();
    ready();
    for (;;) {
      await ct.expectations();
      await ct.expectationStats();
    }
  },
  // Closing a handle while a dump and a subscription run on it.
  async close() {
    ready();
    for (;;) {
      const ct = await opened();
      const entries = ct.entries();
      const events = ct.events();
      await entries.next();
      const pending = events.next();
      await ct.close();
      await pending.catch(() => undefined);
    }
  },
};

const run = OPS[op];
if (run === undefined) throw new Error(`unknown operation ${op}`);
await run();
