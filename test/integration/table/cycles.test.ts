/**
 * Many lifetimes in one process: 10,000 handles opened and closed, 1,000 dumps left midway. The
 * child process (test/helpers/cycles-child.mjs) takes its baseline after a warm-up, with GC exposed,
 * and again at the end: descriptors and threads exactly as at the baseline, memory within tolerance.
 */
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { runNode } from '../../helpers/child.js';
import { BUILT_LIB } from '../../helpers/cli.js';
import { describeIntegration } from '../../helpers/gate.js';
import { createNetns, destroyAllNetns, enableTracking, type Netns } from '../../helpers/netns.js';
import { fillUdp } from '../../helpers/traffic.js';

const DIST_INDEX = join(BUILT_LIB, 'index.js');
const CHILD = fileURLToPath(new URL('../../helpers/cycles-child.mjs', import.meta.url));
const ENTRIES = 20_000;
const MiB = 1024 * 1024;

interface Snapshot { fds: number; threads: number; rss: number; native: number; heapUsed: number }
interface Report { warmUp: number; baseline: Snapshot; end: Snapshot; count: number; entriesSeen: number }

async function runCycles(ns: Netns, mode: 'open' | 'dumps', count: number): Promise<Report> {
  const result = await runNode(['--expose-gc', CHILD, DIST_INDEX, ns.path, mode, String(count)], { timeoutMs: 240_000 });
  expect({ signal: result.signal, status: result.status }, result.stderr).toEqual({ signal: null, status: 0 });
  return JSON.parse(result.stdout.trim()) as Report;
}

/**
 * Measured here: native memory (RSS less V8's heap) +1 to +3 MiB after either run (allocator
 * caches), RSS +10 to +15 MiB (V8's young generation grows to its full size after the baseline),
 * V8's live heap flat. A leak of 1 KiB per cycle would add 10 MiB native to the 10,000 handles, a
 * dump's batch left behind (256 records) 30 MiB to the 1,000 dumps.
 */
function expectBackToBaseline(report: Report): void {
  expect(report.end.fds).toBe(report.baseline.fds);
  expect(report.end.threads).toBe(report.baseline.threads);
  const growth = (key: 'rss' | 'native' | 'heapUsed') => (report.end[key] - report.baseline[key]) / MiB;
  expect(growth('native'), `native memory grew ${growth('native').toFixed(1)} MiB`).toBeLessThan(8);
  expect(growth('rss'), `RSS grew ${growth('rss').toFixed(1)} MiB`).toBeLessThan(32);
  expect(growth('heapUsed'), `V8's live heap grew ${growth('heapUsed').toFixed(1)} MiB`).toBeLessThan(2);
}

describeIntegration('open/close and abandoned dump cycles', () => {
  let ns: Netns;

  beforeAll(async () => {
    ns = await createNetns('cycles');
    await enableTracking(ns);
    expect(await fillUdp(ns, ENTRIES)).toEqual({ sent: ENTRIES });
  }, 120_000);

  afterAll(destroyAllNetns);

  it('10,000 handles opened and closed: descriptors, threads and memory back to the baseline', async () => {
    const report = await runCycles(ns, 'open', 10_000);
    expect(report.count).toBe(10_000);
    expectBackToBaseline(report);
  }, 300_000);

  it('1,000 dumps left midway (abort, break, return): descriptors, threads and memory back to the baseline', async () => {
    const report = await runCycles(ns, 'dumps', 1000);
    expect(report.count).toBe(1000);
    // Each dump stopped between 300 and 900 entries of 20,000: midway, not at the end.
    expect(report.entriesSeen).toBeGreaterThanOrEqual((report.count + report.warmUp) * 300);
    expectBackToBaseline(report);
  }, 300_000);
});
