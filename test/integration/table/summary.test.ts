/**
 * summarize() and `conntrack top` against the same grouping done on conntrack -L's output, in a
 * namespace with real flows and created entries of both families, marks and zones; the `nat` key
 * in a namespace where FTP goes through SNAT and DNAT.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Conntrack, type SummaryGroupKey, type SummaryKey } from '../../../lib/index.js';
import { topCommand } from '../../../lib/cli/top.js';
import { runCommand } from '../../helpers/cli.js';
import { describeIntegration } from '../../helpers/gate.js';
import { FTP_NAT_LONGER, runFtpThroughNat, type FtpNatRun } from '../../helpers/ftp.js';
import { createNetns, destroyAllNetns, enableTracking, type Netns } from '../../helpers/netns.js';
import { oracleEntries, oracleIds, type OracleEntry } from '../../helpers/oracle.js';
import { openFlows, type OpenFlows } from '../../helpers/traffic.js';

/**
 * The key of an entry as conntrack -L shows it. `natIds`: the entries `conntrack -L -j` (any NAT)
 * selects; the listing itself does not show NAT.
 */
function oracleKey(e: OracleEntry, by: readonly SummaryKey[], natIds: ReadonlySet<number>): SummaryGroupKey {
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
    nat: natIds.has(e.id),
  };
  return Object.fromEntries(by.map((k) => [k, all[k]])) as SummaryGroupKey;
}

function oracleGroups(entries: readonly OracleEntry[], by: readonly SummaryKey[], natIds: ReadonlySet<number> = new Set()): Map<string, number> {
  const groups = new Map<string, number>();
  for (const e of entries) {
    const key = JSON.stringify(oracleKey(e, by, natIds), by as string[]);
    groups.set(key, (groups.get(key) ?? 0) + 1);
  }
  return groups;
}

describeIntegration('summarize() and conntrack top against conntrack -L', () => {
  let ns: Netns;
  let ct: Conntrack;
  let flows: OpenFlows;
  let oracle: OracleEntry[];
  let natIds: Set<number>;

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
    natIds = new Set(await oracleIds(ns, { filter: ['-j'] }));
  }, 60_000);

  afterAll(async () => {
    await flows?.close();
    await ct?.close();
    await destroyAllNetns();
  });

  const COMBINATIONS: SummaryKey[][] = [
    ['protocol', 'tcpState', 'dport'], ['src', 'dst'], ['family'], ['mark', 'assured'], ['zone'],
    ['replySrc', 'replyDst', 'sport'], ['seenReply', 'protocol'], ['nat', 'family'],
  ];
  for (const by of COMBINATIONS) {
    it(`by ${by.join(',')}: the same groups and counts as conntrack -L`, async () => {
      const summary = await ct.summarize(undefined, { by });
      expect(summary.total).toBe(oracle.length);
      const mine = new Map(summary.groups.map((g) => [JSON.stringify(g.key, by as string[]), g.count]));
      expect(Object.fromEntries(mine)).toEqual(Object.fromEntries(oracleGroups(oracle, by, natIds)));
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

  it('conntrack top prints the groups conntrack -L makes (text and --json), and refuses unknown keys', async () => {
    const by: SummaryKey[] = ['dport', 'tcpState'];
    const expected = oracleGroups(oracle, by);
    const largest = [...expected.values()].sort((a, b) => b - a).slice(0, 3);
    const json = await runCommand(topCommand, ['--netns', ns.path, '--by', 'dport,tcpState', '-n', '3', '--json']);
    expect(json.code, json.err).toBe(0);
    const parsed = JSON.parse(json.out) as { total: number; groups: Array<{ key: SummaryGroupKey; count: number }> };
    expect(parsed.total).toBe(oracle.length);
    // The three largest groups (any of a tie at the cut), each with the oracle's count for its key.
    expect(parsed.groups.map((g) => g.count)).toEqual(largest);
    for (const group of parsed.groups) {
      expect(expected.get(JSON.stringify(group.key, by as string[])), JSON.stringify(group.key)).toBe(group.count);
    }
    const text = await runCommand(topCommand, ['--netns', ns.path, '--by', 'dport,tcpState', '-n', '3']);
    const lines = text.out.trim().split('\n');
    expect(lines[0]).toBe(`${oracle.length} entries, by dport,tcpState`);
    expect(lines[1]).toMatch(/^count\s+%\s+dport\s+tcpState$/);
    const rows = lines.slice(2).map((l) => l.trim().split(/\s+/));
    expect(rows.map((r) => Number(r[0]))).toEqual(largest);
    for (const [count, percent, dport, tcpState] of rows) {
      const key = { dport: dport === '-' ? undefined : Number(dport), tcpState: tcpState === '-' ? undefined : tcpState };
      expect(expected.get(JSON.stringify(key, by as string[])), `${dport} ${tcpState}`).toBe(Number(count));
      expect(percent).toBe(`${((Number(count) / oracle.length) * 100).toFixed(1)}%`);
    }
    const repeated = await runCommand(topCommand, ['--netns', ns.path, '--by', 'family', '--interval', '0.1', '--count', '2', '--json']);
    expect(repeated.code).toBe(0);
    const refreshes = repeated.out.trim().split(/\n(?=\{)/).map((chunk) => JSON.parse(chunk) as { total: number; groups: Array<{ key: SummaryGroupKey; count: number }> });
    expect(refreshes).toHaveLength(2);
    for (const refresh of refreshes) {
      expect(Object.fromEntries(refresh.groups.map((g) => [JSON.stringify(g.key, ['family']), g.count])))
        .toEqual(Object.fromEntries(oracleGroups(oracle, ['family'])));
    }
    const bad = await runCommand(topCommand, ['--netns', ns.path, '--by', 'port']);
    expect(bad.code).toBe(2);
    expect(bad.err).toContain('unknown key "port"');
  });
}, { tools: ['conntrack'] });

describeIntegration('summarize() by nat, where FTP goes through SNAT and DNAT', () => {
  let ns: Netns;
  let run: FtpNatRun;
  let flows: OpenFlows;

  beforeAll(async () => {
    ns = await createNetns('summary nat');
    await enableTracking(ns);
    // Entries without NAT beside the NATed FTP control and data connections.
    flows = await openFlows(ns, [{ kind: 'tcp-established', family: 4 }, { kind: 'udp-oneway', family: 6 }]);
    run = await runFtpThroughNat(ns, FTP_NAT_LONGER);
  }, 60_000);

  afterAll(async () => {
    await run?.ftp.close();
    await flows?.close();
    await destroyAllNetns();
  });

  it('counts as NATed exactly the entries conntrack -L -j selects', async () => {
    const oracle = await oracleEntries(ns, { labels: false });
    const natIds = new Set(await oracleIds(ns, { filter: ['-j'] }));
    // The control connection and both data connections; the two plain flows are not NATed.
    expect(natIds.size).toBe(3);
    expect(oracle.length).toBe(5);
    await using ct = await Conntrack.open({ netns: ns.path });
    for (const by of [['nat'], ['nat', 'protocol', 'dport']] as SummaryKey[][]) {
      const summary = await ct.summarize(undefined, { by });
      expect(summary.total).toBe(oracle.length);
      const mine = Object.fromEntries(summary.groups.map((g) => [JSON.stringify(g.key, by as string[]), g.count]));
      expect(mine, by.join(',')).toEqual(Object.fromEntries(oracleGroups(oracle, by, natIds)));
    }
    const onlyNat = await ct.summarize(undefined, { by: ['nat'] });
    expect(onlyNat.groups.find((g) => g.key.nat === true)?.count).toBe(3);
  });
}, { tools: ['conntrack', 'python3'] });
