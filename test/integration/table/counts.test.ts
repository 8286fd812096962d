/**
 * count(), stats() and expectationStats() against conntrack -C, -S and -S expect, in namespaces
 * whose tables are quiet while they are compared (no flow changes, no expiry).
 */
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Conntrack, type Stats } from '../../../lib/index.js';
import { describeIntegration } from '../../helpers/gate.js';
import { holdGlobalLimits, type GlobalLimitsLock } from '../../helpers/global-lock.js';
import { createNetns, destroyAllNetns, enableTracking, type Netns } from '../../helpers/netns.js';
import { oracleCount, oracleExpectStats, oracleStats, type OracleStats } from '../../helpers/oracle.js';
import { fillUdp, openFlows, type OpenFlows } from '../../helpers/traffic.js';
import { requireTool } from '../../helpers/tools.js';

/** CPUs the kernel keeps conntrack statistics for: the possible ones ("0-1", "0,2-3"). */
function possibleCpus(): number[] {
  const cpus: number[] = [];
  for (const range of readFileSync('/sys/devices/system/cpu/possible', 'utf8').trim().split(',')) {
    const [low, high] = range.split('-').map(Number) as [number, number | undefined];
    for (let cpu = low; cpu <= (high ?? low); cpu++) cpus.push(cpu);
  }
  return cpus;
}

/** The library's per-CPU rows in the oracle's shape (cpu → counter name → value). */
function libraryRows(stats: Stats): Array<{ cpu: number; counters: Record<string, number> }> {
  return stats.perCpu.map((row) => ({ cpu: row.cpu, counters: { ...row.counters } as Record<string, number> }));
}

function oracleRows(stats: OracleStats, prefix = ''): Array<{ cpu: number; counters: Record<string, number> }> {
  return stats.perCpu.map((row) => ({
    cpu: row.cpu,
    counters: Object.fromEntries(Object.entries(row.counters).map(([name, value]) => [name.slice(prefix.length), value])),
  }));
}

describeIntegration('count() and stats() against conntrack-tools', () => {
  let limits: GlobalLimitsLock | undefined;
  let ns: Netns;
  let flows: OpenFlows;

  beforeAll(async () => {
    // Compared with nf_conntrack_max below: nobody may change it meanwhile.
    limits = await holdGlobalLimits('shared');
    ns = await createNetns('counts');
    await enableTracking(ns);
    flows = await openFlows(ns, [
      { kind: 'tcp-established', family: 4 },
      { kind: 'tcp-established', family: 6 },
      { kind: 'tcp-time-wait', family: 4 },
      { kind: 'udp-reply', family: 4 },
      { kind: 'udp-oneway', family: 6 },
      { kind: 'icmp-echo', family: 4 },
    ]);
    // 1,000 more: a count that is not a coincidence.
    await fillUdp(ns, 1_000);
  });

  afterAll(async () => {
    await flows?.close();
    await destroyAllNetns();
    limits?.release();
  });

  it('count() equals conntrack -C, and max equals nf_conntrack_max', async () => {
    await using ct = await Conntrack.open({ netns: ns.path });
    const before = await oracleCount(ns);
    const count = await ct.count();
    const after = await oracleCount(ns);
    expect(before).toBe(after); // the table was quiet: the comparison is exact
    expect(before).toBe(flows.info.length + 1_000);
    expect(count.entries).toBe(before);
    // The limit is global: the host's procfs and the namespace's view agree, and so must count().
    const hostMax = Number(readFileSync('/proc/sys/net/netfilter/nf_conntrack_max', 'utf8'));
    expect(count.max).toBe(hostMax);
    expect(Number(await ns.sysctl('net.netfilter.nf_conntrack_max'))).toBe(hostMax);
    expect(Number(await ns.sysctl('net.netfilter.nf_conntrack_count'))).toBe(count.entries);
  });

  it('count() of an untracked, empty namespace is 0', async () => {
    const empty = await createNetns('counts empty');
    await using ct = await Conntrack.open({ netns: empty.path });
    expect((await ct.count()).entries).toBe(0);
    expect(await oracleCount(empty)).toBe(0);
    await empty.destroy();
  });

  it('stats() per CPU equals conntrack -S while idle', async () => {
    await using ct = await Conntrack.open({ netns: ns.path });
    // Three reads; the table is idle, so nothing may move between them. If something did (it
    // should not: nothing runs in the namespace), the names and CPUs must still agree exactly.
    const first = await ct.stats();
    const oracle = await oracleStats(ns);
    const last = await ct.stats();
    expect(libraryRows(last)).toEqual(libraryRows(first));

    const cpus = possibleCpus();
    expect(first.perCpu.map((row) => row.cpu)).toEqual(cpus);
    expect(oracle.perCpu.map((row) => row.cpu)).toEqual(cpus);
    for (const [i, row] of first.perCpu.entries()) {
      expect(Object.keys(row.counters).sort()).toEqual(Object.keys(oracle.perCpu[i]?.counters ?? {}).sort());
      expect(row.unknown).toEqual({});
    }
    expect(libraryRows(first)).toEqual(oracleRows(oracle));
    // A steady state without drops or failed inserts, and the total is the sum.
    expect(first.total.drop).toBe(0);
    expect(first.total.insert_failed).toBe(0);
    expect(first.total).toEqual(oracle.total);
    expect(first.totalUnknown).toEqual({});
  });

  it('stats() sees counters move (an INVALID packet) and still equals conntrack -S after', async () => {
    await using ct = await Conntrack.open({ netns: ns.path });
    const before = await ct.stats();
    // A TCP ACK that belongs to no connection, with mid-stream pickup off, is INVALID. Node has
    // no raw sockets: python3 (which node-gyp needs anyway) sends it.
    await ns.sysctl('net.netfilter.nf_conntrack_tcp_loose', 0);
    await ns.exec(requireTool('python3'), ['-c', [
      'import socket, struct',
      's = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)',
      "s.sendto(struct.pack('!HHIIBBHHH', 4444, 5555, 1, 1, 5 << 4, 0x10, 1000, 0, 0), ('127.0.0.1', 0))",
    ].join('\n')]);
    const after = await ct.stats();
    const oracle = await oracleStats(ns);
    expect(after.total.invalid ?? 0).toBeGreaterThan(before.total.invalid ?? 0);
    expect(libraryRows(after)).toEqual(oracleRows(oracle));
    expect(after.total).toEqual(oracle.total);
    expect(Object.keys(after.total).sort()).toEqual(Object.keys(before.total).sort());
  });

  it('expectationStats() per CPU equals conntrack -S expect', async () => {
    await using ct = await Conntrack.open({ netns: ns.path });
    const mine = await ct.expectationStats();
    const oracle = await oracleExpectStats(ns);
    expect(mine.perCpu.map((row) => row.cpu)).toEqual(possibleCpus());
    // The tool prints expect_new, expect_create, expect_delete; the library names them new, create, delete.
    expect(libraryRows(mine as unknown as Stats)).toEqual(oracleRows(oracle, 'expect_'));
    for (const row of mine.perCpu) {
      expect(Object.keys(row.counters).sort()).toEqual(['create', 'delete', 'new']);
      expect(row.unknown).toEqual({});
    }
    expect(mine.total).toEqual({ new: 0, create: 0, delete: 0 }); // no helper, no expectation
  });

  it('count() and stats() are per namespace: another namespace reads its own', async () => {
    const other = await createNetns('counts other');
    await enableTracking(other);
    const otherFlows = await openFlows(other, [{ kind: 'udp-oneway', family: 4 }]);
    try {
      await using mine = await Conntrack.open({ netns: ns.path });
      await using theirs = await Conntrack.open({ netns: other.path });
      expect((await theirs.count()).entries).toBe(1);
      expect((await theirs.count()).entries).toBe(await oracleCount(other));
      expect((await mine.count()).entries).toBe(await oracleCount(ns));
      const theirStats = await theirs.stats();
      expect(libraryRows(theirStats)).toEqual(oracleRows(await oracleStats(other)));
      // The INVALID packets of the test before were counted in ns only.
      expect(theirStats.total.invalid).toBe(0);
    } finally {
      await otherFlows.close();
      await other.destroy();
    }
  });
}, { tools: ['ping', 'python3'] });
