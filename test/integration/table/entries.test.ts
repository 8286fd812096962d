/**
 * entries(): every field of every entry against conntrack-tools (the oracle), matched by id, on a
 * real table made of real loopback flows; a 100,000-entry table dumped completely; and two
 * namespaces that must not see each other's entries.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Conntrack, type ConntrackEntry } from '../../../lib/index.js';
import { describeIntegration } from '../../helpers/gate.js';
import { ensureRoom, holdGlobalLimits, type GlobalLimitsLock } from '../../helpers/global-lock.js';
import { createNetns, destroyAllNetns, enableTracking, type Netns } from '../../helpers/netns.js';
import { flagsOfStatus } from '../../helpers/kernel-uapi.js';
import {
  ORACLE_STATUS_SELECTIONS, comparable, oracleCount, oracleEntries, oracleIds, oracleStatusIds, type OracleEntry,
} from '../../helpers/oracle.js';
import { entryForFlow, fillUdp, flowOf, openFlows, type OpenFlows } from '../../helpers/traffic.js';
import { requireTool } from '../../helpers/tools.js';

const MARK_PORT = 7100;
const ZONE_PORT = 7200;
const LABEL_PORT = 7300;
const ZONE = 7;
const MARK = 0x2a;
const LABEL = 3;
/** An address whose canonical text needs RFC 5952 zero compression in the middle. */
const ODD_V6 = '2001:db8::1:0:0:1';
const ODD_V6_LONG = '2001:0db8:0000:0000:0001:0000:0000:0001';

async function collect(ct: Conntrack, ...args: Parameters<Conntrack['entries']>): Promise<ConntrackEntry[]> {
  const out: ConntrackEntry[] = [];
  for await (const entry of ct.entries(...args)) out.push(entry);
  return out;
}

function byId<T extends { id: number }>(entries: readonly T[]): Map<number, T> {
  return new Map(entries.map((e) => [e.id, e]));
}

function sortedIds(entries: readonly { id: number }[]): number[] {
  return entries.map((e) => e.id).sort((a, b) => a - b);
}

describeIntegration('entries() against conntrack-tools', () => {
  let ns: Netns;
  let flows: OpenFlows;

  beforeAll(async () => {
    ns = await createNetns('entries fields');
    await enableTracking(ns, {
      accounting: true,
      timestamps: true,
      markPort: MARK_PORT,
      mark: MARK,
      zone: { id: ZONE, port: ZONE_PORT },
      labelPort: LABEL_PORT,
      label: LABEL,
    });
    flows = await openFlows(ns, [
      { kind: 'tcp-established', family: 4, port: MARK_PORT },
      { kind: 'tcp-established', family: 4 },
      { kind: 'tcp-time-wait', family: 4 },
      { kind: 'udp-reply', family: 4, port: ZONE_PORT },
      { kind: 'udp-reply', family: 4 },
      { kind: 'udp-oneway', family: 4 },
      { kind: 'tcp-established', family: 6, port: LABEL_PORT },
      { kind: 'tcp-time-wait', family: 6 },
      { kind: 'udp-reply', family: 6 },
      { kind: 'udp-oneway', family: 6, port: MARK_PORT },
      { kind: 'icmp-echo', family: 4 },
      { kind: 'icmp-echo', family: 6 },
    ]);
    // An IPv6 address whose text form is not trivial: ICMPv6 echo to it (and from it).
    await ns.exec(requireTool('ip'), ['-6', 'addr', 'add', `${ODD_V6_LONG}/64`, 'dev', 'lo', 'nodad']);
    await ns.exec(requireTool('ping'), ['-6', '-c', '1', '-W', '2', ODD_V6_LONG]);
  });

  afterAll(async () => {
    await flows?.close();
    await destroyAllNetns();
  });

  it('has the same ids as the oracle and the same value in every field it can show', async () => {
    const oracle = await oracleEntries(ns);
    await using ct = await Conntrack.open({ netns: ns.path });
    const mine = await collect(ct);

    // 12 flows (the TCP ones one entry each) + the extra ICMPv6 echo.
    expect(oracle).toHaveLength(flows.info.length + 1);
    expect(sortedIds(mine)).toEqual(sortedIds(oracle));
    expect(new Set(mine.map((e) => e.id)).size).toBe(mine.length);

    const oracleById = byId(oracle);
    for (const entry of mine) {
      const expected = oracleById.get(entry.id) as OracleEntry;
      expect(comparable(entry), `entry ${entry.id}`).toEqual(comparable(expected));
      // Oracle first, then the library: the timeout can only have gone down, by a second or two.
      expect(entry.timeout, `timeout of ${entry.id}`).toBeDefined();
      expect(Math.abs((entry.timeout ?? 0) - (expected.timeout ?? Infinity)), `timeout of ${entry.id}`).toBeLessThanOrEqual(2);
    }
  });

  it('sets each status flag on the entries conntrack -L selects by it', async () => {
    await using ct = await Conntrack.open({ netns: ns.path });
    const mine = await collect(ct);
    const selected = await oracleStatusIds(ns);
    const withFlag = (flag: string) => new Set(mine.filter((e) => (e.flags as readonly string[]).includes(flag)).map((e) => e.id));
    for (const flag of ['SEEN_REPLY', 'ASSURED', 'EXPECTED', 'FIXED_TIMEOUT', 'OFFLOAD'] as const) {
      expect(withFlag(flag), `${ORACLE_STATUS_SELECTIONS[flag].join(' ')}`).toEqual(selected[flag]);
    }
    // This table has replied and one-way, assured and unassured entries: both sides of each.
    for (const flag of ['SEEN_REPLY', 'ASSURED'] as const) {
      expect(selected[flag].size, flag).toBeGreaterThan(0);
      expect(selected[flag].size, flag).toBeLessThan(mine.length);
    }
    // No NAT here (the FTP-through-NAT test in protocols.test.ts has some).
    expect([selected.SRC_NAT.size, selected.DST_NAT.size, selected.ANY_NAT.size]).toEqual([0, 0, 0]);
    expect(mine.filter((e) => e.flags.includes('SRC_NAT') || e.flags.includes('DST_NAT'))).toEqual([]);
  });

  it('decodes each kind of flow as the kernel made it (addresses, ports, icmp, state, mark, zone, labels)', async () => {
    await using ct = await Conntrack.open({ netns: ns.path });
    const mine = await collect(ct);
    const oracle = await oracleEntries(ns);

    for (const flow of flows.info) {
      const e = entryForFlow(mine, flow);
      expect(e.family).toBe(flow.family === 6 ? 'ipv6' : 'ipv4');
      expect(e.original.protocol).toBe(flow.protocol);
      expect(e.original.protocolNumber).toBe({ tcp: 6, udp: 17, icmp: 1, icmpv6: 58 }[flow.protocol]);
      expect(e.reply.protocolNumber).toBe(e.original.protocolNumber);
      // Every dumped entry is in the hash table: CONFIRMED, and the raw bits agree with the names,
      // bit for bit as the kernel's header numbers them.
      expect(e.flags).toContain('CONFIRMED');
      expect(e.flags).toEqual(flagsOfStatus(e.status));
      expect(e.counters?.original.packets).toBeGreaterThanOrEqual(1);
      expect(typeof e.timestamp?.start).toBe('bigint');
      expect(e.timestamp?.stop).toBeUndefined();
      if (flow.protocol === 'tcp' || flow.protocol === 'udp') {
        expect([e.original.sport, e.original.dport]).toEqual([flow.sport, flow.dport]);
        expect([e.reply.src, e.reply.dst, e.reply.sport, e.reply.dport]).toEqual([flow.dst, flow.src, flow.dport, flow.sport]);
        expect(e.original.icmpType).toBeUndefined();
      } else {
        expect(e.original.sport).toBeUndefined();
        expect(e.original.icmpType).toBe(flow.family === 6 ? 128 : 8);
        expect(e.original.icmpCode).toBe(0);
        expect(e.reply.icmpType).toBe(flow.family === 6 ? 129 : 0);
        expect(e.reply.icmpId).toBe(e.original.icmpId);
        expect(e.original.icmpId).toBe(entryForFlow(oracle, flow).original.icmpId);
      }
    }

    const est = entryForFlow(mine, flowOf(flows.info, 'tcp-established', 4, MARK_PORT));
    expect(est.tcp?.state).toBe('ESTABLISHED');
    expect(est.flags).toEqual(expect.arrayContaining(['SEEN_REPLY', 'ASSURED']));
    expect(est.mark).toBe(MARK);
    for (const family of [4, 6] as const) {
      const tw = entryForFlow(mine, flowOf(flows.info, 'tcp-time-wait', family));
      expect(tw.tcp).toMatchObject({ state: 'TIME_WAIT', stateNumber: 7 });
      const oneWay = entryForFlow(mine, flowOf(flows.info, 'udp-oneway', family));
      expect(oneWay.flags).not.toContain('SEEN_REPLY');
      expect(oneWay.counters?.reply).toEqual({ packets: 0, bytes: 0 });
    }
    expect(entryForFlow(mine, flowOf(flows.info, 'udp-oneway', 6, MARK_PORT)).mark).toBe(MARK);
    const zoned = entryForFlow(mine, flowOf(flows.info, 'udp-reply', 4, ZONE_PORT));
    expect(zoned.zone).toBe(ZONE);
    expect(zoned.flags).toContain('SEEN_REPLY');
    expect(mine.filter((e) => e.zone !== undefined && e.zone !== 0).map((e) => e.id)).toEqual([zoned.id]);
    const labelled = entryForFlow(mine, flowOf(flows.info, 'tcp-established', 6, LABEL_PORT));
    expect(labelled.labels).toEqual([LABEL]);
    expect(labelled.original.src).toBe('::1');
    expect(mine.filter((e) => e.labels !== undefined && e.labels.length > 0).map((e) => e.id)).toEqual([labelled.id]);

    const odd = mine.filter((e) => e.original.dst === ODD_V6);
    expect(odd, `an ICMPv6 entry to ${ODD_V6} in canonical form`).toHaveLength(1);
    expect(odd[0]?.original.protocol).toBe('icmpv6');
  });

  it('entries(), batches() and stream() return the oracle\'s entries, whatever the batch size', async () => {
    await using ct = await Conntrack.open({ netns: ns.path });
    const reference = await oracleEntries(ns);
    // What conntrack -L shows of each entry (the timeout ticks between the dumps: compared above).
    const strip = (list: ReadonlyArray<ConntrackEntry | OracleEntry>) => [...list].sort((a, b) => a.id - b.id).map(comparable);

    for (const batchSize of [1, 3, 1024]) {
      const viaBatches: ConntrackEntry[] = [];
      const iterator = ct.batches(undefined, { batchSize });
      for await (const batch of iterator) {
        expect(batch.length).toBeGreaterThan(0);
        viaBatches.push(...batch);
      }
      expect(strip(viaBatches)).toEqual(strip(reference));
      expect(iterator.counters()).toMatchObject({ entries: reference.length, duplicates: 0, filteredOut: 0 });
      expect(strip(await collect(ct, undefined, { batchSize }))).toEqual(strip(reference));
    }
    const viaStream: ConntrackEntry[] = [];
    for await (const entry of ct.stream()) viaStream.push(entry as ConntrackEntry);
    expect(strip(viaStream)).toEqual(strip(reference));
  });

  // EntriesOptions.batchSize is documented as "entries per batch handed from native code to JS".
  it('batches() hands over at most batchSize entries per batch', async () => {
    await using ct = await Conntrack.open({ netns: ns.path });
    for (const batchSize of [1, 2, 5]) {
      const sizes: number[] = [];
      let total = 0;
      for await (const batch of ct.batches(undefined, { batchSize })) {
        sizes.push(batch.length);
        total += batch.length;
      }
      expect(total).toBe(flows.info.length + 1);
      expect(Math.max(...sizes), `batch sizes ${JSON.stringify(sizes)} with batchSize ${batchSize}`).toBeLessThanOrEqual(batchSize);
    }
  });
}, { tools: ['ping', 'unshare'] });

describeIntegration('a 100,000-entry table', () => {
  const N = 100_000;
  let ns: Netns;
  let limits: GlobalLimitsLock | undefined;

  beforeAll(async () => {
    // 6.x kernels on machines with 4 GiB or less default to 65,536: make room under the lock.
    limits = await holdGlobalLimits('exclusive');
    ensureRoom(limits, N);
    ns = await createNetns('entries big');
    await enableTracking(ns);
    expect(await fillUdp(ns, N)).toEqual({ sent: N });
  }, 300_000);

  afterAll(async () => {
    await destroyAllNetns();
    limits?.release();
  });

  /** Entry ids are 32-bit hashes: in 100,000 entries two may share one, so ids are compared as
   * multisets and uniqueness is checked on the original tuple, which the kernel keeps unique. */
  const tupleKey = (e: ConntrackEntry) =>
    `${e.zone ?? 0} ${e.original.protocolNumber} ${e.original.src} ${e.original.sport} ${e.original.dst} ${e.original.dport}`;

  it('is dumped completely: the oracle ids, no duplicates, counters say so', async () => {
    // The table must be quiet for an exact comparison: it is (no traffic, 600 s UDP timeout).
    expect(await oracleCount(ns)).toBe(N);
    const expected = (await oracleIds(ns)).sort((a, b) => a - b);
    expect(expected).toHaveLength(N);

    await using ct = await Conntrack.open({ netns: ns.path });
    const viaBatches: number[] = [];
    const tuples = new Set<string>();
    const batches = ct.batches(undefined, { batchSize: 4096 });
    for await (const batch of batches) {
      for (const e of batch) {
        viaBatches.push(e.id);
        tuples.add(tupleKey(e));
      }
    }
    expect(tuples.size).toBe(N);
    expect(viaBatches.sort((a, b) => a - b)).toEqual(expected);
    expect(batches.counters()).toMatchObject({ entries: N, duplicates: 0, filteredOut: 0 });
    expect(batches.counters().messages).toBeGreaterThanOrEqual(N);

    const viaEntries: number[] = [];
    tuples.clear();
    const entries = ct.entries();
    let udpTo9 = 0;
    for await (const e of entries) {
      viaEntries.push(e.id);
      tuples.add(tupleKey(e));
      if (e.original.protocol === 'udp' && e.original.dport === 9 && !e.flags.includes('SEEN_REPLY')) udpTo9++;
    }
    expect(udpTo9).toBe(N);
    expect(tuples.size).toBe(N);
    expect(viaEntries.sort((a, b) => a - b)).toEqual(expected);
    expect(entries.counters()).toMatchObject({ entries: N, duplicates: 0 });
    expect((await ct.count()).entries).toBe(N);
  }, 300_000);
});

describeIntegration('namespace isolation', () => {
  afterAll(destroyAllNetns);

  it("two namespaces do not see each other's entries, in either direction", async () => {
    const a = await createNetns('entries iso a');
    const b = await createNetns('entries iso b');
    await enableTracking(a);
    await enableTracking(b);
    // Same server port in both: only the namespace tells the entries apart.
    const flowsA = await openFlows(a, [{ kind: 'tcp-established', family: 4, port: 7400 }, { kind: 'udp-oneway', family: 6 }]);
    const flowsB = await openFlows(b, [{ kind: 'tcp-established', family: 4, port: 7400 }, { kind: 'udp-reply', family: 4 }, { kind: 'tcp-time-wait', family: 6 }]);
    try {
      await using ctA = await Conntrack.open({ netns: a.path });
      await using ctB = await Conntrack.open({ netns: b.path });
      const [mineA, mineB, oracleA, oracleB] = await Promise.all([collect(ctA), collect(ctB), oracleEntries(a, { labels: false }), oracleEntries(b, { labels: false })]);

      expect(sortedIds(mineA)).toEqual(sortedIds(oracleA));
      expect(sortedIds(mineB)).toEqual(sortedIds(oracleB));
      expect(mineA).toHaveLength(2);
      expect(mineB).toHaveLength(3);
      for (const flow of flowsA.info) entryForFlow(mineA, flow);
      for (const flow of flowsB.info) entryForFlow(mineB, flow);
      const idsA = new Set(mineA.map((e) => e.id));
      expect(mineB.filter((e) => idsA.has(e.id))).toEqual([]);
      // Neither side has the other's flows (by source port, which differs per connection).
      const key = (e: ConntrackEntry) => `${e.original.protocol} ${e.original.src} ${e.original.sport} ${e.original.dport}`;
      const keysA = new Set(mineA.map(key));
      expect(mineB.filter((e) => keysA.has(key(e)))).toEqual([]);
      expect((await ctA.count()).entries).toBe(2);
      expect((await ctB.count()).entries).toBe(3);
    } finally {
      await Promise.all([flowsA.close(), flowsB.close()]);
    }
  });
});
