/**
 * The exposition text of renderMetrics(), read back with a strict parser; the sample helpers; and
 * the command-line checks of `watch` and `exporter` that run before anything is opened.
 */
import { describe, expect, it } from 'vitest';
import { parseListen, exporterCommand } from '../../../lib/cli/exporter.js';
import { formatDuration, formatWatchLine, sparkline, WATCH_HEADER, watchCommand, watchLine, type WatchSample } from '../../../lib/cli/watch.js';
import type { Conntrack } from '../../../lib/table/conntrack.js';
import { ConntrackError } from '../../../lib/base/errors.js';
import {
  collectMetrics, escapeLabelValue, failedNamespace, renderMetrics, type MetricsSnapshot, type NamespaceReading,
} from '../../../lib/metrics/metrics.js';
import { runCommand } from '../../helpers/cli.js';
import { parseExposition, type ExpositionFamily } from '../../helpers/exposition.js';

/** A label value with every character the format makes us escape. */
const AWKWARD = 'C:\\ns "blue"\nline2';

function reading(netns: string, entries: number, extra: Partial<NamespaceReading> = {}): NamespaceReading {
  return {
    netns,
    up: true,
    entries,
    max: 1000,
    counters: { found: 3, invalid: 1, insert: 0, insert_failed: 2, drop: 5, early_drop: 7, error: 0, search_restart: 4, clash_resolve: 1, chaintoolong: 0 },
    unknownCounters: {},
    ...extra,
  };
}

const SNAPSHOT: MetricsSnapshot = {
  buckets: 4096,
  namespaces: [
    reading('', 250),
    reading(AWKWARD, 900, { unknownCounters: { 16: 9 } }),
    failedNamespace('/run/netns/gone', new ConntrackError('ERR_CONNTRACK_NETNS', 'network namespace /run/netns/gone does not exist')),
  ],
};

function family(families: Map<string, ExpositionFamily>, name: string): ExpositionFamily {
  const found = families.get(name);
  if (found === undefined) throw new Error(`no family ${name}; have ${[...families.keys()].join(', ')}`);
  return found;
}

/** The value of the sample of `name` whose labels are exactly `labels`. */
function value(families: Map<string, ExpositionFamily>, name: string, labels: Record<string, string>): number | undefined {
  return family(families, name).samples.find((s) => JSON.stringify(s.labels) === JSON.stringify(labels))?.value;
}

describe('renderMetrics', () => {
  const text = renderMetrics(SNAPSHOT);
  const families = parseExposition(text);

  it('writes valid exposition text: HELP and TYPE for every family, one block per name', () => {
    expect(families.size).toBeGreaterThan(10);
    for (const f of families.values()) {
      expect(f.help, f.name).toMatch(/\S/);
      expect(['gauge', 'counter'], f.name).toContain(f.type);
      expect(f.samples.length, f.name).toBeGreaterThan(0);
      expect(text.split(`# TYPE ${f.name} `).length - 1, f.name).toBe(1);
    }
    // Three namespaces, still one block of conntrack_up.
    expect(family(families, 'conntrack_up').samples).toHaveLength(3);
    expect(text).not.toMatch(/\n\n/);
  });

  it('names counters *_total, and only counters', () => {
    for (const f of families.values()) expect(f.name.endsWith('_total'), f.name).toBe(f.type === 'counter');
    const stats = [...families.keys()].filter((name) => name.startsWith('conntrack_stat_'));
    expect(stats).toEqual(expect.arrayContaining(['conntrack_stat_drop_total', 'conntrack_stat_early_drop_total', 'conntrack_stat_insert_failed_total', 'conntrack_stat_chaintoolong_total']));
    // Only counters the namespaces reported: no zero-filled families for older kernels' names.
    expect(families.has('conntrack_stat_searched_total')).toBe(false);
  });

  it('escapes backslash, double quote and line feed in label values, and they read back unchanged', () => {
    expect(escapeLabelValue(AWKWARD)).toBe('C:\\\\ns \\"blue\\"\\nline2');
    expect(text).toContain(`conntrack_entries{netns="${escapeLabelValue(AWKWARD)}"} 900\n`);
    expect(value(families, 'conntrack_entries', { netns: AWKWARD })).toBe(900);
    expect(value(families, 'conntrack_entries', { netns: '' })).toBe(250);
  });

  it('gives each namespace its numbers', () => {
    expect(value(families, 'conntrack_entries_limit', { netns: AWKWARD })).toBe(1000);
    expect(value(families, 'conntrack_usage_ratio', { netns: AWKWARD })).toBe(0.9);
    expect(value(families, 'conntrack_usage_ratio', { netns: '' })).toBe(0.25);
    expect(value(families, 'conntrack_buckets', { netns: '' })).toBe(4096);
    expect(value(families, 'conntrack_stat_drop_total', { netns: '' })).toBe(5);
    expect(value(families, 'conntrack_stat_early_drop_total', { netns: AWKWARD })).toBe(7);
    expect(value(families, 'conntrack_stat_unknown_total', { netns: AWKWARD, attribute: '16' })).toBe(9);
    expect(family(families, 'conntrack_stat_unknown_total').samples).toHaveLength(1);
  });

  it('reports a failed namespace as up 0 with its error code, and nothing else for it', () => {
    expect(value(families, 'conntrack_up', { netns: '/run/netns/gone' })).toBe(0);
    expect(value(families, 'conntrack_up', { netns: '' })).toBe(1);
    expect(family(families, 'conntrack_scrape_error').samples).toEqual([{ labels: { netns: '/run/netns/gone', code: 'ERR_CONNTRACK_NETNS' }, value: 1 }]);
    for (const f of families.values()) {
      if (f.name === 'conntrack_up' || f.name === 'conntrack_scrape_error') continue;
      expect(f.samples.some((s) => s.labels.netns === '/run/netns/gone'), f.name).toBe(false);
    }
  });

  it('leaves out what it does not know: no limit, no bucket count, no failure', () => {
    const quiet = parseExposition(renderMetrics({ buckets: undefined, namespaces: [reading('', 5, { max: 0 })] }));
    expect(quiet.has('conntrack_usage_ratio')).toBe(false);
    expect(quiet.has('conntrack_buckets')).toBe(false);
    expect(quiet.has('conntrack_scrape_error')).toBe(false);
    expect(value(quiet, 'conntrack_entries_limit', { netns: '' })).toBe(0);
  });

  it('emits node_exporter names, as gauges with the same values, only when asked', () => {
    expect([...families.keys()].some((name) => name.startsWith('node_'))).toBe(false);
    const both = parseExposition(renderMetrics(SNAPSHOT, { nodeExporterNames: true }));
    expect(family(both, 'node_nf_conntrack_entries').type).toBe('gauge');
    expect(value(both, 'node_nf_conntrack_entries', { netns: AWKWARD })).toBe(900);
    expect(value(both, 'node_nf_conntrack_entries_limit', { netns: '' })).toBe(1000);
    expect(value(both, 'node_nf_conntrack_stat_drop', { netns: '' })).toBe(5);
    expect(value(both, 'node_nf_conntrack_stat_search_restart', { netns: AWKWARD })).toBe(4);
    const nodeNames = [...both.keys()].filter((name) => name.startsWith('node_')).sort();
    expect(nodeNames).toEqual([
      'node_nf_conntrack_entries', 'node_nf_conntrack_entries_limit', 'node_nf_conntrack_stat_drop',
      'node_nf_conntrack_stat_early_drop', 'node_nf_conntrack_stat_found', 'node_nf_conntrack_stat_insert',
      'node_nf_conntrack_stat_insert_failed', 'node_nf_conntrack_stat_invalid', 'node_nf_conntrack_stat_search_restart',
    ]);
    for (const name of nodeNames) expect(family(both, name).type, name).toBe('gauge');
  });

  it('refuses two namespaces with one label (they would be duplicate series)', () => {
    expect(() => renderMetrics({ buckets: 1, namespaces: [reading('/a', 1), reading('/a', 2)] })).toThrow(ConntrackError);
  });
});

describe('the test parser is strict', () => {
  const bad: Array<[string, string]> = [
    ['no final line feed', 'a 1'],
    ['bad label escape', 'a{x="\\t"} 1\n'],
    ['unquoted label value', 'a{x=1} 1\n'],
    ['bad value', 'a 1,5\n'],
    ['TYPE after samples', 'a 1\n# TYPE a gauge\n'],
    ['a family split in two', '# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na{x="y"} 2\n'],
    ['duplicate series', 'a{x="1"} 1\na{x="1"} 2\n'],
    ['second HELP', '# HELP a one\n# HELP a two\na 1\n'],
    ['bad metric name', '1a 1\n'],
    ['unknown type', '# TYPE a meter\n'],
  ];
  for (const [why, text] of bad) it(`rejects ${why}`, () => expect(() => parseExposition(text)).toThrow(/exposition/));

  it('accepts the format\'s own example lines', () => {
    const families = parseExposition('# HELP x A \\\\ path\\n.\n# TYPE x counter\nx{method="post",code="200",} 1027 1395066363000\ny +Inf\nz NaN\n');
    expect(families.get('x')?.help).toBe('A \\ path\n.');
    expect(families.get('x')?.samples[0]).toEqual({ labels: { method: 'post', code: '200' }, value: 1027 });
    expect(families.get('y')?.samples[0]?.value).toBe(Infinity);
  });
});

describe('collectMetrics and failedNamespace', () => {
  /** Just enough of a handle for collectMetrics. */
  const fakeHandle = (netns: string | undefined, behaviour: 'ok' | 'fail'): Conntrack => ({
    netns,
    count: async () => {
      if (behaviour === 'fail') throw new ConntrackError('ERR_CONNTRACK_PERMISSION', 'needs CAP_NET_ADMIN');
      return { entries: 12, max: 48 };
    },
    stats: async () => ({ perCpu: [], total: { drop: 3 }, totalUnknown: { 17: 1 } }),
  }) as unknown as Conntrack;

  it('samples every handle; a failing one is up: false with its code, not a rejection', async () => {
    const snapshot = await collectMetrics([fakeHandle(undefined, 'ok'), fakeHandle('/run/netns/x', 'fail')]);
    expect(snapshot.namespaces).toEqual([
      { netns: '', up: true, entries: 12, max: 48, counters: { drop: 3 }, unknownCounters: { 17: 1 } },
      { netns: '/run/netns/x', up: false, errorCode: 'ERR_CONNTRACK_PERMISSION', errorMessage: 'needs CAP_NET_ADMIN' },
    ]);
    expect(snapshot.buckets === undefined || Number.isInteger(snapshot.buckets)).toBe(true);
  });

  it('gives errors without a code one of their own', () => {
    expect(failedNamespace('', new Error('boom'))).toMatchObject({ up: false, errorCode: 'ERR_UNEXPECTED', errorMessage: 'boom' });
    expect(failedNamespace('', Object.assign(new Error('x'), { code: 'EMFILE' })).errorCode).toBe('EMFILE');
  });
});

describe('watch lines', () => {
  const sample = (seconds: number, entries: number, drop: number): WatchSample => ({
    time: new Date(Date.UTC(2026, 10, 28, 5, 0, seconds)),
    at: seconds * 1000,
    entries,
    max: 1000,
    counters: { drop, early_drop: 1, insert_failed: 0 },
  });

  it('has no rate or changes on the first line, then per-second growth and counter rises', () => {
    const first = watchLine(undefined, sample(0, 100, 4));
    expect(first).toEqual({ time: '2026-11-28T05:00:00.000Z', entries: 100, max: 1000, usage: 0.1, entriesPerSecond: null, timeToFullSeconds: null, changes: null });
    const second = watchLine(sample(0, 100, 4), sample(2, 160, 10));
    expect(second.entriesPerSecond).toBe(30);
    expect(second.changes).toEqual({ drop: 6, early_drop: 0, insert_failed: 0 });
    expect(watchLine(sample(2, 160, 10), sample(4, 150, 10)).entriesPerSecond).toBe(-5);
    expect(watchLine(sample(0, 100, 4), sample(2, 160, 10), 1234.56).timeToFullSeconds).toBe(1234.6);
    expect(watchLine(sample(0, 100, 4), sample(2, 160, 10), Infinity).timeToFullSeconds).toBeNull();
  });

  it('formats columns under the header', () => {
    const line = formatWatchLine(watchLine(sample(0, 100, 4), sample(2, 160, 10)));
    expect(line).toHaveLength(WATCH_HEADER.length);
    expect(line.split(/\s+/)).toEqual(['2026-11-28T05:00:02.000Z', '160', '1000', '16.0%', '+30.0', '-', '6', '0', '0']);
    expect(formatWatchLine(watchLine(undefined, sample(0, 1, 0))).split(/\s+/).slice(4)).toEqual(['-', '-', '-', '-', '-']);
    const filling = formatWatchLine(watchLine(sample(0, 100, 4), sample(2, 160, 10), 5400));
    expect(filling).toHaveLength(WATCH_HEADER.length);
    expect(filling.split(/\s+/)[5]).toBe('1.5h');
  });

  it('durations and sparklines', () => {
    expect([0.4, 59, 61, 3599, 3600, 5400, 86_400 * 2.25].map(formatDuration)).toEqual(['0s', '59s', '1m', '60m', '1.0h', '1.5h', '2.3d']);
    expect(sparkline([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])).toBe('▁▂▃▄▅▆▇█');
    expect(sparkline([0.5, 0.5, 0.5])).toBe('▁▁▁');
    expect(sparkline([0.9, 0.1])).toBe('█▁');
  });
});

describe('command lines refused before anything is opened', () => {
  const usageCases: Array<[string, typeof watchCommand, string[], RegExp]> = [
    ['watch --interval 0', watchCommand, ['--interval', '0'], /--interval/],
    ['watch --interval -1', watchCommand, ['--interval', '-1'], /--interval|argument/],
    ['watch --interval abc', watchCommand, ['--interval', 'abc'], /--interval/],
    ['watch --interval 100000', watchCommand, ['--interval', '100000'], /--interval/],
    ['watch --count 0', watchCommand, ['--count', '0'], /--count/],
    ['watch extra', watchCommand, ['extra'], /unexpected argument/],
    ['watch --fail-above 101', watchCommand, ['--fail-above', '101'], /--fail-above/],
    ['watch --fail-above x', watchCommand, ['--fail-above', 'x'], /--fail-above/],
    ['exporter --all-namespaces --netns 1', exporterCommand, ['--all-namespaces', '--netns', '1'], /exclude each other/],
    ['exporter --max-namespaces 5', exporterCommand, ['--max-namespaces', '5'], /--max-namespaces needs --all-namespaces/],
    ['exporter --all-namespaces --max-namespaces 0', exporterCommand, ['--all-namespaces', '--max-namespaces', '0'], /--max-namespaces/],
    ['exporter --all-namespaces --forget-after 0', exporterCommand, ['--all-namespaces', '--forget-after', '0'], /--forget-after/],
    ['exporter --breakdown-interval 0', exporterCommand, ['--breakdown-interval', '0'], /--breakdown-interval/],
    ['exporter --breakdown-by port', exporterCommand, ['--breakdown-by', 'port'], /--breakdown-by: breakdown key must be/],
    ['exporter --breakdown-top 0', exporterCommand, ['--breakdown-top', '0'], /--breakdown-top/],
    ['exporter --breakdown-by off --breakdown-top 3', exporterCommand, ['--breakdown-by', 'off', '--breakdown-top', '3'], /make no sense/],
    ['exporter --listen 9659', exporterCommand, ['--listen', '9659'], /--listen/],
    ['exporter --listen host:70000', exporterCommand, ['--listen', 'localhost:70000'], /--listen/],
    ['exporter --listen ::1:9659', exporterCommand, ['--listen', '::1:9659'], /--listen/],
    ['exporter --bogus', exporterCommand, ['--bogus'], /bogus/],
  ];
  for (const [what, command, argv, message] of usageCases) {
    it(`${what}: exit 2, the reason and the usage on stderr, nothing on stdout`, async () => {
      const result = await runCommand(command, argv);
      expect(result.code).toBe(2);
      expect(result.out).toBe('');
      expect(result.err).toMatch(message);
      expect(result.err).toMatch(/usage: conntrack (watch|exporter)/);
    });
  }

  it('parseListen reads HOST:PORT and [IPV6]:PORT', () => {
    expect(parseListen('127.0.0.1:9659')).toEqual({ host: '127.0.0.1', port: 9659 });
    expect(parseListen('[::1]:0')).toEqual({ host: '::1', port: 0 });
    expect(parseListen('metrics.local:80')).toEqual({ host: 'metrics.local', port: 80 });
    for (const bad of ['', ':9659', '127.0.0.1', '127.0.0.1:', 'a b:1', '[::1]9659']) expect(() => parseListen(bad), bad).toThrow(/--listen/);
  });
});
