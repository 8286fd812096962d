// Calls process.exit() while the library is busy, for test/integration/table/workers.test.ts: the
// process must end with the code given, not abort or hang on the library's threads.
//
//   node exit-child.mjs DIST_INDEX NETNS_PATH MODE
//   MODE: dump (in the middle of a dump), events (a read waiting on a subscription),
//         worker (a worker thread in the middle of a dump), pending (open, count and a dump just started)
import { Worker } from 'node:worker_threads';

const [dist, netns, mode] = process.argv.slice(2);
const { Conntrack } = await import(dist);
const EXIT_CODE = 7; // not 0, so the test sees exit() ran rather than a natural end

if (mode === 'dump') {
  const ct = await Conntrack.open({ netns });
  let seen = 0;
  for await (const entry of ct.entries(undefined, { batchSize: 256 })) {
    void entry;
    if (++seen === 1000) process.exit(EXIT_CODE);
  }
} else if (mode === 'events') {
  const ct = await Conntrack.open({ netns });
  const events = ct.events();
  void events.next();
  setTimeout(() => process.exit(EXIT_CODE), 50);
} else if (mode === 'worker') {
  const worker = new Worker(`
    const { parentPort, workerData } = require('node:worker_threads');
    (async () => {
      const { Conntrack } = await import(workerData.dist);
      const ct = await Conntrack.open({ netns: workerData.netns });
      let seen = 0;
      for (;;) for await (const entry of ct.entries(undefined, { batchSize: 256 })) if (++seen === 1000) parentPort.postMessage('dumping');
    })();`, { eval: true, workerData: { dist, netns } });
  worker.once('message', () => process.exit(EXIT_CODE));
} else if (mode === 'pending') {
  const ct = await Conntrack.open({ netns });
  void Conntrack.open({ netns });
  void ct.count();
  void ct.entries().next();
  process.exit(EXIT_CODE);
} else {
  throw new Error(`unknown mode ${mode}`);
}
