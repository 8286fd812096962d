// Runs every library operation many times in one process and reports what the process holds
// before, after a warm-up and after each of three blocks of rounds: file descriptors, threads, and
// RSS after a full GC. Started by test/integration/table/leaks.test.ts with --expose-gc; prints one
// JSON line.
//
//   node --expose-gc leak-child.mjs DIST_INDEX NETNS_PATH ROUNDS
import { readdirSync, readFileSync } from 'node:fs';

const [dist, netns, roundsText] = process.argv.slice(2);
const rounds = Number(roundsText);
const { Conntrack } = await import(dist);

const fds = () => readdirSync('/proc/self/fd').length;
const threads = () => readdirSync('/proc/self/task').length;
/** RSS after a full GC, and the part of it that is not V8's heap (native memory). */
function memory() {
  for (let i = 0; i < 3; i++) globalThis.gc();
  const rss = Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'))[1]) * 1024;
  return { rss, native: rss - process.memoryUsage().heapTotal };
}
const settle = () => new Promise((resolve) => setTimeout(resolve, 50));

async function round(i) {
  const ct = await Conntrack.open({ netns });
  try {
    await ct.count();
    await ct.stats();
    let n = 0;
    for await (const e of ct.entries()) n += e.id > 0 ? 1 : 0;
    // A dump left early, and one aborted.
    for await (const e of ct.entries()) { void e; break; }
    const abort = new AbortController();
    const it = ct.entries(undefined, { signal: abort.signal });
    abort.abort();
    await it.next().catch(() => undefined);
    // An event subscription that sees its own change, then ends.
    const events = ct.events({ protocol: 'udp' });
    const first = events.next();
    const tuple = { protocol: 'udp', src: '10.7.0.1', dst: '10.7.0.2', sport: 1000 + (i % 50000), dport: 53 };
    for (let tries = 0; tries < 200; tries++) {
      await ct.create({ original: { ...tuple, sport: tuple.sport }, timeout: 30 }).catch(() => undefined);
      const got = await Promise.race([first.then(() => true), settle().then(() => false)]);
      if (got) break;
      await ct.delete(tuple);
    }
    await events.return();
    await ct.get(tuple);
    await ct.update(tuple, { mark: i });
    await ct.delete(tuple);
    await ct.summarize(undefined, { by: ['protocol', 'dport'] });
    return n;
  } finally {
    await ct.close();
  }
}

// A quarter of the rounds warms up (allocator arenas, V8's code and heap); the rest run in three
// equal blocks with a snapshot after each, so a leak shows as growth in every block while
// allocator noise does not repeat.
const before = { fds: fds(), threads: threads() };
const warmRounds = Math.ceil(rounds / 4);
const blockRounds = Math.ceil((rounds - warmRounds) / 3);
let done = 0;
for (; done < warmRounds; done++) await round(done);
await settle();
const warm = { fds: fds(), threads: threads(), ...memory() };
const blocks = [];
while (done < rounds) {
  const end = Math.min(rounds, done + blockRounds);
  for (; done < end; done++) await round(done);
  await settle();
  blocks.push({ rounds: done, fds: fds(), threads: threads(), ...memory() });
}
process.stdout.write(`${JSON.stringify({ before, warm, blocks, end: blocks.at(-1), rounds })}\n`);
