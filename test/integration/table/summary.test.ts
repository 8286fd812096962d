/**
 * summarize() and `conntrack top` against the same grouping done on conntrack -L's output, in a
 * namespace with real flows and created entries of both families, marks and zones.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Conntrack, type SummaryGroupKey, type SummaryKey } from '../../../lib/index.js';
import { topCommand } from '../../../lib/cli/top.js';
import { runCommand } from '../../helpers/cli.js';
import { describeIntegration } from '../../helpers/gate.js';
import { createNetns, destroyAllNetns, enableTracking, type Netns } from '../../helpers/netns.js';
import { oracleEntries, type OracleEntry } from '../../helpers/oracle.js';
import { openFlows, type OpenFlows } from '../../helpers/traffic.js';

/** The key of an entry as conntrack -L shows it. */
function oracleKey(e: OracleEntry, by: readonly SummaryKey[]): SummaryGroupKey {
  const all: Record<SummaryKey, unknown> = {
    family: e.family,
    protocol: e.original.protocol,
    tcpState: e.tcp?.state,
    src: e.original.src,
    dst: e.original.dst,
    sport: e.original.sport,
    dport: e.original.dport,
    replySrc: e.reply.src,
    replyDst: e.reply.dst,
    mark: e.mark,
    zone: e.zone,
    assured: e.flags.includes('ASSURED'),
    seenReply: e.flags.includes('SEEN_REPLY'),
    nat: undefined, // conntrack -L does not show NAT status bits: not compared here (see decode.test.ts)
  };
  return Object.fromEntries(by.map((k) => [k, all[k]])) as SummaryGroupKey;
}

function oracleGroups(entries: readonly OracleEntry[], by: readonly SummaryKey[]): Map<string, number> {
  const groups = new Map<string, number>();
  for (const e of entries) {
    const key = JSON.stringify(oracleKey(e, by), by as string[]);
    groups.set(key, (groups.get(key) ?? 0) + 1);
  }
  return groups;
}

describeIntegration('summarize() and conntrack top against conntrack -L', () => {
  let ns: Netns;
  let ct: Conntrack;
  let flows: OpenFlows;
  let oracle: OracleEntry[];

  beforeAll(async () => {
    ns = await createNetns('summary');
    await enableTracking(ns);
    ct = await Conntrack.open({ netns: ns.path });
    flows = await openFlows(ns, [
      { kind: 'tcp-established', family: 4, port: 1883 },
      { kind: 'tcp-established', family: 6, port: 1883 },
      { kind: 'tcp-time-wait', family: 4 },
      { kind: 'udp-reply', family: 4, port: 5353 },
      { kind: 'icmp-echo', family: 6 },
    ]);
    for (let i = 0; i < 40; i++) {
      await ct.create({
        original: { protocol: 'tcp', src: `10.9.0.${(i % 4) + 1}`, dst: '10.9.1.1', sport: 30000 + i, dport: i % 3 ? 1883 : 8883 },
        timeout: 600, mark: i % 2, zone: i % 5 === 0 ? 3 : undefined, tcpState: i % 7 ? 'ESTABLISHED' : 'SYN_SENT',
        flags: i % 2 ? ['SEEN_REPLY', 'ASSURED'] : undefined,
      });
    }
    oracle = await oracleEntries(ns, { labels: false });
  }, 60_000);

  afterAll(async () => {
    await flows?.close();
    await ct?.close();
    await destroyAllNetns();
  });

  const COMBINATIONS: SummaryKey[][] = [
    ['protocol', 'tcpState', 'dport'], ['src', 'dst'], ['family'], ['mark', 'assured'], ['zone'],
    ['replySrc', 'replyDst', 'sport'], ['seenReply', 'protocol'],
  ];
  for (const by of COMBINATIONS) {
    it(`by ${by.join(',')}: the same groups and counts as conntrack -L`, async () => {
      const summary = await ct.summarize(undefined, { by });
      expect(summary.total).toBe(oracle.length);
      const mine = new Map(summary.groups.map((g) => [JSON.stringify(g.key, by as string[]), g.count]));
      expect(Object.fromEntries(mine)).toEqual(Object.fromEntries(oracleGroups(oracle, by)));
      // Largest first.
      const counts = summary.groups.map((g) => g.count);
      expect(counts).toEqual([...counts].sort((a, b) => b - a));
    });
  }

  it('with a filter and top: the largest groups of what the filter selects', async () => {
    const by: SummaryKey[] = ['src'];
    const summary = await ct.summarize({ protocol: 'tcp', dport: 1883 }, { by, top: 2 });
    const selected = oracle.filter((e) => e.original.protocol === 'tcp' && e.original.dport === 1883);
    expect(summary.total).toBe(selected.length);
    const expected = [...oracleGroups(selected, by).values()].sort((a, b) => b - a).slice(0, 2);
    expect(summary.groups.map((g) => g.count)).toEqual(expected);
    expect(summary.groups).toHaveLength(2);
  });

  it('rejects unknown keys and bad options', async () => {
    await expect(ct.summarize(undefined, { by: [] })).rejects.toMatchObject({ code: 'ERR_CONNTRACK_INVALID_ARGUMENT' });
    await expect(ct.summarize(undefined, { by: ['port' as SummaryKey] })).rejects.toMatchObject({ code: 'ERR_CONNTRACK_INVALID_ARGUMENT' });
    await expect(ct.summarize(undefined, { by: ['dport', 'dport'] })).rejects.toMatchObject({ code: 'ERR_CONNTRACK_INVALID_ARGUMENT' });
    await expect(ct.summarize(undefined, { by: ['dport'], top: 0 })).rejects.toMatchObject({ code: 'ERR_CONNTRACK_INVALID_ARGUMENT' });
  });

  it('conntrack top prints the same groups (text and --json), and refuses unknown keys', async () => {
    const json = await runCommand(topCommand, ['--netns', ns.path, '--by', 'dport,tcpState', '-n', '3', '--json']);
    expect(json.code).toBe(0);
    const parsed = JSON.parse(json.out) as { total: number; groups: Array<{ key: SummaryGroupKey; count: number }> };
    const expected = await ct.summarize(undefined, { by: ['dport', 'tcpState'], top: 3 });
    expect(parsed.total).toBe(expected.total);
    expect(parsed.groups).toEqual(expected.groups);
    const text = await runCommand(topCommand, ['--netns', ns.path, '--by', 'dport,tcpState', '-n', '3']);
    const lines = text.out.trim().split('\n');
    expect(lines[0]).toBe(`${expected.total} entries, by dport,tcpState`);
    expect(lines[1]).toMatch(/^count\s+%\s+dport\s+tcpState$/);
    expect(lines.slice(2).map((l) => Number(l.trim().split(/\s+/)[0]))).toEqual(expected.groups.map((g) => g.count));
    const repeated = await runCommand(topCommand, ['--netns', ns.path, '--by', 'family', '--interval', '0.1', '--count', '2', '--json']);
    expect(repeated.code).toBe(0);
    expect(repeated.out.match(/"time": /g)).toHaveLength(2);
    const bad = await runCommand(topCommand, ['--netns', ns.path, '--by', 'port']);
    expect(bad.code).toBe(2);
    expect(bad.err).toContain('unknown key "port"');
  });
}, { tools: ['conntrack'] });
