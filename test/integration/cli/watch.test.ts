/**
 * `conntrack watch` against conntrack-tools in a namespace with real flows: the numbers of each
 * line, lines never ahead of their schedule, growth while the table fills, SIGINT, and bad
 * command lines. How late lines may come (timer drift) is measured by benchmarks/watch-drift.mjs.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { WatchLine } from '../../../lib/cli/watch.js';
import { BUILT_CLI, runCli, startCli } from '../../helpers/cli.js';
import { describeIntegration } from '../../helpers/gate.js';
import { holdGlobalLimits, type GlobalLimitsLock } from '../../helpers/global-lock.js';
import { createNetns, destroyAllNetns, enableTracking, run, type Netns } from '../../helpers/netns.js';
import { oracleCount } from '../../helpers/oracle.js';
import { fillUdp, openFlows, type OpenFlows } from '../../helpers/traffic.js';

const FILL = 30;
const GROWTH = 200;

function lines(text: string): WatchLine[] {
  return text.split('\n').filter((line) => line !== '').map((line) => JSON.parse(line) as WatchLine);
}

/** Seconds between the lines' timestamps. */
function gaps(watched: readonly WatchLine[]): number[] {
  return watched.slice(1).map((line, i) => (Date.parse(line.time) - Date.parse(watched[i]?.time ?? '')) / 1000);
}

describeIntegration('conntrack watch', () => {
  let limits: GlobalLimitsLock | undefined;
  let ns: Netns;
  let flows: OpenFlows;
  let max: number;

  beforeAll(async () => {
    // Compared with nf_conntrack_max below: nobody may change it meanwhile.
    limits = await holdGlobalLimits('shared');
    max = limits.readMax();
    ns = await createNetns('watch');
    await enableTracking(ns);
    flows = await openFlows(ns, [
      { kind: 'tcp-established', family: 4 },
      { kind: 'udp-oneway', family: 4 },
    ]);
    await fillUdp(ns, FILL);
  }, 120_000);

  afterAll(async () => {
    await flows?.close();
    await destroyAllNetns();
    limits?.release();
  });

  /**
   * Lines are due at start + k·interval; a late sample delays its own line only, so two lines may
   * come closer than an interval, but never does a line come before its time: the span from the
   * first line to line k is at least k intervals (less a few ms: timers may fire a hair early, and
   * the printed times are whole milliseconds). How late lines come is the benchmark's business.
   */
  function expectNeverAhead(watched: readonly WatchLine[], intervalSeconds: number): void {
    const first = Date.parse(watched[0]?.time ?? '');
    watched.forEach((line, k) => {
      const since = (Date.parse(line.time) - first) / 1000;
      expect(since, `line ${k} at ${line.time}`).toBeGreaterThanOrEqual(k * intervalSeconds - 0.005);
    });
    for (const gap of gaps(watched)) expect(gap).toBeGreaterThanOrEqual(0);
  }

  it('--jsonl --count 3 --interval 0.2: three lines on their schedule, entries equal to conntrack -C', async () => {
    const before = await oracleCount(ns);
    const result = await runCli(['watch', '--netns', ns.path, '--interval', '0.2', '--count', '3', '--jsonl']);
    const after = await oracleCount(ns);
    expect(result.status, result.stderr).toBe(0);
    expect(result.stderr).toBe('');
    expect(after).toBe(before);
    expect(before).toBe(flows.info.length + FILL);
    const watched = lines(result.stdout);
    expect(watched).toHaveLength(3);
    for (const line of watched) {
      expect(line).toMatchObject({ entries: before, max, usage: before / max });
    }
    expect(watched[0]).toMatchObject({ entriesPerSecond: null, changes: null });
    for (const line of watched.slice(1)) {
      expect(line).toMatchObject({ entriesPerSecond: 0, changes: { drop: 0, early_drop: 0, insert_failed: 0 } });
    }
    expectNeverAhead(watched, 0.2);
  });

  it('never runs ahead of its schedule and never doubles a line: 21 lines take at least 20 intervals', async () => {
    const result = await runCli(['watch', '--netns', ns.path, '--interval', '0.05', '--count', '21', '--jsonl']);
    expect(result.status, result.stderr).toBe(0);
    const watched = lines(result.stdout);
    expect(watched).toHaveLength(21);
    expectNeverAhead(watched, 0.05);
  });

  it('shows the table growing while it fills, and SIGINT ends it with status 0', async () => {
    const before = await oracleCount(ns);
    const watch = startCli(['watch', '--netns', ns.path, '--interval', '0.25', '--jsonl']);
    try {
      await watch.waitFor('stdout', /\n/);
      await fillUdp(ns, GROWTH, { port: 10 });
      const after = await oracleCount(ns);
      expect(after).toBe(before + GROWTH);
      await watch.waitFor('stdout', new RegExp(`"entries":${after},[^\\n]*\\n[^\\n]*\\n`));
      watch.child.kill('SIGINT');
      expect(await watch.exited).toEqual({ status: 0, signal: null });
    } finally {
      watch.child.kill('SIGKILL');
    }
    const watched = lines(watch.stdout());
    expect(watched[0]?.entries).toBe(before);
    expect(watched.at(-1)?.entries).toBe(before + GROWTH);
    // Every rate is the change of entries over the time between two lines. The command times lines
    // with a monotonic clock and prints wall-clock milliseconds, rounding the rate to 0.1: so
    // rate × printed gap = change, within rate × 2 ms and 0.05 × gap.
    const seconds = gaps(watched);
    for (const [i, line] of watched.slice(1).entries()) {
      const change = line.entries - (watched[i]?.entries ?? 0);
      const gap = seconds[i] ?? Number.NaN;
      const rate = line.entriesPerSecond ?? Number.NaN;
      expect(Math.abs(rate * gap - change), `line ${i + 1}: ${rate}/s over ${gap} s for ${change}`).toBeLessThanOrEqual(Math.abs(rate) * 0.002 + 0.05 * gap + 1e-9);
      expect(line.changes).toEqual({ drop: 0, early_drop: 0, insert_failed: 0 });
    }
    expect(Math.max(...watched.slice(1).map((line) => line.entriesPerSecond ?? 0))).toBeGreaterThan(0);
  });

  it('prints a header and aligned columns without --jsonl', async () => {
    const entries = await oracleCount(ns);
    const result = await runCli(['watch', '--netns', ns.path, '--interval', '0.1', '--count', '2']);
    expect(result.status, result.stderr).toBe(0);
    const [header, ...rows] = result.stdout.trimEnd().split('\n');
    expect(header?.split(/\s+/)).toEqual(['time', 'entries', 'max', 'usage', 'entries/s', 'full', 'in', 'drop', 'early_drop', 'insert_failed']);
    expect(rows).toHaveLength(2);
    for (const row of rows) {
      expect(row).toHaveLength(header?.length ?? -1);
      const [, count, limit, usage] = row.split(/\s+/);
      expect(Number(count)).toBe(entries);
      expect(Number(limit)).toBe(max);
      expect(usage).toBe(`${((entries / max) * 100).toFixed(1)}%`);
    }
  });

  it('--fail-above: exit 3 after the first line above the threshold, 0 when under it', async () => {
    const usage = ((await oracleCount(ns)) / max) * 100;
    const above = await runCli(['watch', '--netns', ns.path, '--interval', '0.1', '--count', '5', '--jsonl', '--fail-above', String(usage / 2)]);
    expect(above.status).toBe(3);
    expect(lines(above.stdout)).toHaveLength(1);
    expect(above.stderr).toMatch(/conntrack watch: usage \d+\.\d% is above /);
    const under = await runCli(['watch', '--netns', ns.path, '--interval', '0.1', '--count', '2', '--jsonl', '--fail-above', String(Math.min(100, usage * 2 + 1))]);
    expect(under.status, under.stderr).toBe(0);
    expect(lines(under.stdout)).toHaveLength(2);
  });

  it('time to full: none for the first 5 s, then from the growth the lines show', async () => {
    const watch = startCli(['watch', '--netns', ns.path, '--interval', '0.5', '--count', '15', '--jsonl']);
    try {
      for (let step = 0; step < 3; step++) {
        await new Promise((resolve) => setTimeout(resolve, 1500));
        await fillUdp(ns, 100, { port: 20 + step });
      }
      expect((await watch.exited).status, watch.stderr()).toBe(0);
    } finally {
      watch.child.kill('SIGKILL');
    }
    const watched = lines(watch.stdout());
    expect(watched).toHaveLength(15);
    const start = Date.parse(watched[0]?.time ?? '');
    for (const line of watched) {
      const seconds = (Date.parse(line.time) - start) / 1000;
      if (seconds < 4.9) expect(line.timeToFullSeconds, line.time).toBeNull();
    }
    // Least squares over the printed times and counts, worked out here.
    const points = watched.map((line) => [(Date.parse(line.time) - start) / 1000, line.entries] as const);
    const meanT = points.reduce((sum, [t]) => sum + t, 0) / points.length;
    const meanE = points.reduce((sum, [, e]) => sum + e, 0) / points.length;
    const slope = points.reduce((sum, [t, e]) => sum + (t - meanT) * (e - meanE), 0) / points.reduce((sum, [t]) => sum + (t - meanT) ** 2, 0);
    const last = watched.at(-1) as WatchLine;
    expect(slope).toBeGreaterThan(0);
    expect(last.timeToFullSeconds).not.toBeNull();
    expect(Math.abs((last.timeToFullSeconds ?? 0) / ((max - last.entries) / slope) - 1)).toBeLessThan(0.1);
  });

  it('on a terminal: a sparkline of usage after each line', async () => {
    // script(1) gives the command a pseudo-terminal.
    const result = await run('script', ['-qec', `${process.execPath} ${BUILT_CLI} watch --netns ${ns.path} --interval 0.1 --count 3`, '/dev/null']);
    const rows = result.stdout.replace(/\r/g, '').trimEnd().split('\n');
    expect(rows[0]).toMatch(/insert_failed  usage trend$/);
    expect(rows.slice(1).map((row) => /\s([▁▂▃▄▅▆▇█]+)$/.exec(row)?.[1])).toEqual(['▁', '▁▁', '▁▁▁']);
  });

  it('a bad --interval or --count exits 2 with nothing on stdout', async () => {
    for (const args of [['--interval', '0'], ['--interval', 'soon'], ['--interval', '-1'], ['--count', '0']]) {
      const result = await runCli(['watch', '--netns', ns.path, ...args]);
      expect(result.status, args.join(' ')).toBe(2);
      expect(result.stdout, args.join(' ')).toBe('');
      expect(result.stderr, args.join(' ')).toContain('usage: conntrack watch');
    }
  });

  it('a namespace that does not exist exits 1 with the reason', async () => {
    const result = await runCli(['watch', '--netns', '/run/netns/ctt-watch-no-such-ns', '--count', '1']);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('/run/netns/ctt-watch-no-such-ns does not exist');
    expect(result.stdout).toBe('');
  });
});
