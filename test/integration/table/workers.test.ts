/**
 * Threads and exits: the library inside worker_threads, workers terminated at every moment of every
 * operation (issue #13: terminating one while its events() subscription started aborted the whole
 * process), and process.exit() while the library is busy. Each scenario runs in a child process,
 * so an abort fails the test instead of ending vitest.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type ChildResult, runNode } from '../../helpers/child.js';
import { BUILT_LIB } from '../../helpers/cli.js';
import { describeIntegration } from '../../helpers/gate.js';
import { createNetns, destroyAllNetns, enableTracking, type Netns } from '../../helpers/netns.js';
import { oracleCount } from '../../helpers/oracle.js';
import { rounds } from '../../helpers/sanitizers.js';
import { fillUdp } from '../../helpers/traffic.js';

const DIST_INDEX = join(BUILT_LIB, 'index.js');
const WORKER_CHILD = fileURLToPath(new URL('../../helpers/worker-child.mjs', import.meta.url));
const EXIT_CHILD = fileURLToPath(new URL('../../helpers/exit-child.mjs', import.meta.url));
const ENTRIES = 20_000;
/** Every operation of worker-op.mjs. */
const OPERATIONS = ['open', 'count', 'stats', 'dump', 'summary', 'eventsStart', 'eventsSteady', 'entry', 'bulk', 'expectations', 'close'];
/** Under the sanitizers each round is several times slower; two rounds still take every path. */
const ROUNDS = rounds(6, 2);

/** The child ended by itself with `status`: not aborted, not killed by the timeout. */
function expectExited(result: ChildResult, status: number): void {
  expect({ signal: result.signal, status: result.status }, result.stderr).toEqual({ signal: null, status });
}

describeIntegration('worker threads and process exits', () => {
  let ns: Netns;
  let dir: string;

  beforeAll(async () => {
    ns = await createNetns('workers');
    await enableTracking(ns);
    expect(await fillUdp(ns, ENTRIES)).toEqual({ sent: ENTRIES });
    dir = mkdtempSync(join(tmpdir(), 'ctt-workers-'));
  }, 120_000);

  afterAll(async () => {
    if (dir) rmSync(dir, { recursive: true, force: true });
    await destroyAllNetns();
  });

  // First: the workers terminated below leave entries of their own behind for a few seconds.
  it('inside a worker, the library reads the namespace as conntrack-tools does', async () => {
    const script = join(dir, 'read-in-worker.mjs');
    writeFileSync(script, `
import { Worker } from 'node:worker_threads';
const code = \`
import { parentPort, workerData } from 'node:worker_threads';
const { Conntrack } = await import(workerData.dist);
const ct = await Conntrack.open({ netns: workerData.netns });
// Entries told apart by tuple, not id: ids are a 32-bit hash, and among 20,000 entries two share
// one in about one run of twenty.
const tuples = new Set();
let dumped = 0;
for await (const entry of ct.entries()) {
  dumped++;
  tuples.add(entry.original.src + ' ' + entry.original.dst + ' ' + entry.original.sport + ' ' + entry.original.dport);
}
let summarized = 0;
for (const group of (await ct.summarize(undefined, { by: ['protocol'] })).groups) summarized += group.count;
parentPort.postMessage({ count: (await ct.count()).entries, dumped, distinct: tuples.size, summarized });
await ct.close();\`;
const worker = new Worker(new URL('data:text/javascript,' + encodeURIComponent(code)), { workerData: { dist: process.argv[2], netns: process.argv[3] } });
worker.once('message', (report) => console.log(JSON.stringify(report)));
worker.once('error', (err) => { console.error(err); process.exitCode = 1; });
`);
    const result = await runNode([script, pathToFileURL(DIST_INDEX).href, ns.path], { timeoutMs: 60_000 });
    expectExited(result, 0);
    const expected = await oracleCount(ns);
    expect(expected).toBe(ENTRIES);
    expect(JSON.parse(result.stdout.trim())).toEqual({ count: expected, dumped: expected, distinct: expected, summarized: expected });
  });

  it("issue #13's reproducer: workers terminated right after starting events() leave the process running", async () => {
    // The script with 300 workers instead of 10 (60 under the sanitizers): before the fix,
    // 10 usually survived here and 300 aborted in two runs of three; the next test, with every
    // operation, aborted every time.
    const script = join(dir, 'issue-13.mjs');
    writeFileSync(script, `
import { Worker } from 'node:worker_threads';
const code = \`
import { parentPort } from 'node:worker_threads';
const { Conntrack } = await import(${JSON.stringify(pathToFileURL(DIST_INDEX).href)});
const ct = await Conntrack.open({ netns: ${JSON.stringify(ns.path)} });
parentPort.postMessage('open');
for await (const _ of ct.events()) {}\`;
for (let i = 0; i < ${rounds(300, 60)}; i++) {
  const w = new Worker(code, { eval: true });
  await new Promise((resolve) => w.once('message', resolve));
  await w.terminate();
}
console.log('survived');
`);
    const result = await runNode([script], { timeoutMs: 120_000 });
    expectExited(result, 0);
    expect(result.stdout.trim()).toBe('survived');
  }, 150_000);

  it(`every operation, its worker terminated after 0, 1, 5 and 50 ms, ${ROUNDS} times: the process goes on and gets its descriptors and threads back`, async () => {
    const result = await runNode([WORKER_CHILD, DIST_INDEX, ns.path, String(ROUNDS), OPERATIONS.join(',')], { timeoutMs: 400_000 });
    expectExited(result, 0);
    const report = JSON.parse(result.stdout.trim()) as {
      before: { fds: number; threads: number };
      after: { fds: number; threads: number };
      leftOver: string[];
      workers: number;
      failures: Array<{ op: string; delay: number; message: string }>;
    };
    expect(report.workers).toBe(OPERATIONS.length * 4 * ROUNDS);
    // No operation failed by itself before its worker was terminated.
    expect(report.failures).toEqual([]);
    // Sockets, namespace descriptors, eventfds and dump threads of the terminated workers are gone.
    expect(report.leftOver).toEqual([]);
    expect(report.after.fds).toBeLessThanOrEqual(report.before.fds);
    expect(report.after.threads).toBeLessThanOrEqual(report.before.threads);
  }, 450_000);

  for (const [mode, what] of [
    ['dump', 'in the middle of a dump'],
    ['events', 'while a read waits on an event subscription'],
    ['worker', 'while a worker thread is in the middle of a dump'],
    ['pending', 'with an open(), a count() and a dump just started'],
  ] as const) {
    it(`process.exit() ${what} ends the process with the code given`, async () => {
      for (let i = 0; i < 5; i++) {
        const result = await runNode([EXIT_CHILD, DIST_INDEX, ns.path, mode], { timeoutMs: 30_000 });
        expectExited(result, 7);
        expect(result.stderr).toBe('');
      }
    });
  }
});
