/**
 * `conntrack watch` against conntrack-tools in a namespace with real flows: the numbers of each
 * line, the spacing of the lines, growth while the table fills, SIGINT, and bad command lines.
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { WatchLine } from '../../../lib/cli/watch.js';
import { BUILT_CLI, ensureBuilt, runCli, startCli } from '../../helpers/cli.js';
import { describeIntegration } from '../../helpers/gate.js';
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
  let ns: Netns;
  let flows: OpenFlows;
  const max = Number(readFileSync('/proc/sys/net/netfilter/nf_conntrack_max', 'utf8'));

  beforeAll(async () => {
    await ensureBuilt('cli/watch.js');
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
  });

  it('--jsonl --count 3 --interval 0.2: three lines 0.2 s apart, entries equal to conntrack -C', async () => {
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
    for (const gap of gaps(watched)) {
      expect(gap).toBeGreaterThan(0.15);
      expect(gap).toBeLessThan(0.3);
    }
  });

  it('does not drift and never doubles a line: line k comes k intervals after the first', async () => {
    const result = await runCli(['watch', '--netns', ns.path, '--interval', '0.05', '--count', '21', '--jsonl']);
    expect(result.status, result.stderr).toBe(0);
    const watched = lines(result.stdout);
    expect(watched).toHaveLength(21);
    // A timer re-armed after each sample falls behind by the sample's time and the timer's own
    // lateness on every line (some 30 ms over 20 lines here); one aimed at start + k·interval does not.
    const start = Date.parse(watched[0]?.time ?? '');
    const late = (Date.parse(watched.at(-1)?.time ?? '') - start) / 1000 - 20 * 0.05;
    expect(Math.abs(late)).toBeLessThan(0.025);
    for (const gap of gaps(watched)) expect(gap).toBeGreaterThan(0.025);
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
    // Every rate is the change of entries over the time between two lines.
    const seconds = gaps(watched);
    for (const [i, line] of watched.slice(1).entries()) {
      const expected = (line.entries - (watched[i]?.entries ?? 0)) / (seconds[i] ?? 1);
      expect(Math.abs((line.entriesPerSecond ?? NaN) - expected), `line ${i + 1}`).toBeLessThanOrEqual(Math.abs(expected) * 0.05 + 0.1);
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
