/**
 * Nothing leaks: a child process runs every operation (open, count, stats, full, broken-off and
 * aborted dumps, an event subscription, get/create/update/delete, summarize, close) hundreds of
 * times against a real namespace, and reports its descriptors, threads and RSS after GC; memory
 * is judged against the same process's own snapshots, not a fixed budget.
 */
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { runNode } from '../../helpers/child.js';
import { BUILT_INDEX } from '../../helpers/cli.js';
import { describeIntegration } from '../../helpers/gate.js';
import { createNetns, destroyAllNetns, enableTracking, type Netns } from '../../helpers/netns.js';
import { oracleIds } from '../../helpers/oracle.js';
import { rounds } from '../../helpers/sanitizers.js';
import { fillUdp } from '../../helpers/traffic.js';

const CHILD = fileURLToPath(new URL('../../helpers/leak-child.mjs', import.meta.url));
/** Leaks are judged on the plain build; under the sanitizers the rounds look for memory errors. */
const ROUNDS = rounds(600, 150);

interface Snapshot { fds: number; threads: number; rss: number; native: number }

describeIntegration('leaks', () => {
  let ns: Netns;

  beforeAll(async () => {
    ns = await createNetns('leaks');
    await enableTracking(ns);
    await fillUdp(ns, 2000);
  }, 120_000);

  afterAll(destroyAllNetns);

  it(`${ROUNDS} rounds of every operation: descriptors and threads back to where they were, native memory flat`, async () => {
    const result = await runNode(['--expose-gc', CHILD, BUILT_INDEX, ns.path, String(ROUNDS)], { timeoutMs: 240_000 });
    expect(result.status, result.stderr).toBe(0);
    const report = JSON.parse(result.stdout.trim()) as { before: Omit<Snapshot, 'rss'>; warm: Snapshot; blocks: Snapshot[]; end: Snapshot };
    // Sockets, namespace fds and native threads are all given back.
    expect(report.end.fds).toBeLessThanOrEqual(report.before.fds);
    expect(report.end.threads).toBeLessThanOrEqual(report.before.threads);
    // Native memory (RSS less V8's heap, which grows as V8 sees fit), after a full GC, measured
    // after the warm-up and after each of three blocks of rounds in the same process: a leak grows
    // it in every block (close() and the end of a dump once waited for GC to free their buffers:
    // some 8 MiB per block), allocator noise does not. At least one block must stay flat.
    expect(report.blocks).toHaveLength(3);
    const growthMiB = report.blocks.map((block, i) => (block.native - (i === 0 ? report.warm : report.blocks[i - 1] as Snapshot).native) / 1048576);
    expect(Math.min(...growthMiB), `native memory growth per block: ${growthMiB.map((g) => g.toFixed(1)).join(', ')} MiB`).toBeLessThan(2);
    // The table is as the test left it: every entry the rounds made was deleted again.
    expect(await oracleIds(ns, { filter: ['-d', '10.7.0.2'] })).toEqual([]);
  }, 300_000);
}, { tools: ['conntrack'] });
