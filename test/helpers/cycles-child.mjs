// Opens and closes handles, or starts and abandons dumps, many times in one process and reports
// what the process holds at a baseline taken after a warm-up and at the end: descriptors, threads
// and memory after a full GC. Started by test/integration/table/cycles.test.ts with --expose-gc;
// prints one JSON line.
//
//   node --expose-gc cycles-child.mjs DIST_INDEX NETNS_PATH MODE COUNT
//   MODE: open (COUNT open/close cycles), dumps (COUNT dumps aborted midway on one handle)
import { readdirSync, readFileSync } from 'node:fs';

const [dist, netns, mode, countText] = process.argv.slice(2);
const count = Number(countText);
const { Conntrack } = await import(dist);

const fds = () => readdirSync('/proc/self/fd').length;
const threads = () => readdirSync('/proc/self/task').length;
const settle = () => new Promise((resolve) => setTimeout(resolve, 25));
async function snapshot() {
  // Native objects are finalized after a GC, in a later turn: let that run between collections.
  for (let i = 0; i < 4; i++) {
    await settle();
    globalThis.gc();
  }
  const rss = Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'))[1]) * 1024;
  // Native memory: RSS less V8's heap, which grows and shrinks as V8 sees fit.
  const { heapTotal, heapUsed } = process.memoryUsage();
  return { fds: fds(), threads: threads(), rss, native: rss - heapTotal, heapUsed };
}

async function openClose() {
  const ct = await Conntrack.open({ netns });
  await ct.close();
}

let handle;
let entriesSeen = 0;
/** One dump left midway, three ways in turn: abort(), break, and return() of batches(). */
async function abandonedDump(i) {
  handle ??= await Conntrack.open({ netns });
  const stopAt = 300 + (i % 7) * 100;
  let seen = 0;
  if (i % 3 === 0) {
    const controller = new AbortController();
    try {
      for await (const entry of handle.entries(undefined, { batchSize: 256, signal: controller.signal })) {
        void entry;
        if (++seen === stopAt) controller.abort();
      }
    } catch (err) {
      if (err.name !== 'AbortError') throw err;
    }
  } else if (i % 3 === 1) {
    for await (const entry of handle.entries(undefined, { batchSize: 256 })) {
      void entry;
      if (++seen === stopAt) break;
    }
  } else {
    const batches = handle.batches(undefined, { batchSize: 256 });
    while (seen < stopAt) {
      const next = await batches.next();
      if (next.done) break;
      seen += next.value.length;
    }
    await batches.return();
  }
  if (seen < stopAt) throw new Error(`the dump ended after ${seen} entries, before the midway point ${stopAt}`);
  entriesSeen += seen;
}

const cycle = mode === 'open' ? openClose : abandonedDump;
if (mode !== 'open' && mode !== 'dumps') throw new Error(`unknown mode ${mode}`);

const warmUp = Math.max(50, Math.ceil(count / 20));
for (let i = 0; i < warmUp; i++) await cycle(i);
const baseline = await snapshot();
for (let i = 0; i < count; i++) await cycle(warmUp + i);
const end = await snapshot(); // with the dumps' handle still open, as at the baseline
await handle?.close();
process.stdout.write(`${JSON.stringify({ warmUp, baseline, end, count, entriesSeen })}\n`);
