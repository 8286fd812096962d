/**
 * Nothing leaks: a child process runs every operation (open, count, stats, full, broken-off and
 * aborted dumps, an event subscription, get/create/update/delete, summarize, close) hundreds of
 * times against a real namespace, and reports its descriptors, threads and RSS after GC.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Conntrack } from '../../../lib/index.js';
import { BUILT_INDEX } from '../../helpers/cli.js';
import { describeIntegration } from '../../helpers/gate.js';
import { createNetns, destroyAllNetns, enableTracking, type Netns } from '../../helpers/netns.js';
import { fillUdp } from '../../helpers/traffic.js';

const CHILD = fileURLToPath(new URL('../../helpers/leak-child.mjs', import.meta.url));
const ROUNDS = 600;

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
    const result = spawnSync(process.execPath, ['--expose-gc', CHILD, BUILT_INDEX, ns.path, String(ROUNDS)], { encoding: 'utf8', timeout: 240_000 });
    expect(result.status, result.stderr).toBe(0);
    const report = JSON.parse(result.stdout.trim()) as { before: Omit<Snapshot, 'rss'>; warm: Snapshot; end: Snapshot };
    // Sockets, namespace fds and native threads are all given back.
    expect(report.end.fds).toBeLessThanOrEqual(report.before.fds);
    expect(report.end.threads).toBeLessThanOrEqual(report.before.threads);
    // 450 more rounds after warm-up (about 900,000 decoded entries, 1,350 dumps, 450 subscriptions
    // and handles). Native memory (RSS less V8's heap, which grows as V8 sees fit) stays within
    // allocator noise (±10 MiB here); before close() and the end of a dump let go of their
    // buffers (they waited for GC), it grew about 40 MiB over as many rounds.
    const growthMiB = (report.end.native - report.warm.native) / 1048576;
    expect(growthMiB, `native memory grew ${growthMiB.toFixed(1)} MiB`).toBeLessThan(16);
    // The table is as the test left it: every entry the rounds made was deleted again.
    await using ct = await Conntrack.open({ netns: ns.path });
    expect((await ct.summarize({ dst: '10.7.0.2' }, { by: ['protocol'] })).total).toBe(0);
  }, 300_000);
}, { tools: ['conntrack'] });
