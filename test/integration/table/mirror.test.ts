/**
 * ct.mirror() against conntrack -L in a namespace with churn: UDP entries made, expiring and
 * deleted with conntrack -D while the mirror runs; and a forced overflow that makes it resync.
 */
import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Conntrack, type ConntrackEntry, type ConntrackEvent, type EntryFilter, type Mirror, type MirrorChange, type MirrorResync } from '../../../lib/index.js';
import { topCommand } from '../../../lib/cli/top.js';
import { BUILT_LIB, runCommand } from '../../helpers/cli.js';
import { describeIntegration } from '../../helpers/gate.js';
import { ensureRoom, holdGlobalLimits, type GlobalLimitsLock } from '../../helpers/global-lock.js';
import { createNetns, destroyAllNetns, enableTracking, type Netns } from '../../helpers/netns.js';
import { oracleEntries, type OracleEntry } from '../../helpers/oracle.js';
import { requireTool } from '../../helpers/tools.js';
import { fillUdp, openFlows, type FlowRequest } from '../../helpers/traffic.js';

// What events keep current (counters and timeouts move without an event).
function eventKept(e: ConntrackEntry | OracleEntry) {
  return { id: e.id, family: e.family, original: e.original, reply: e.reply, zone: e.zone, mark: e.mark, tcpState: e.tcp?.state };
}

async function threadCount(): Promise<number> {
  const status = await readFile('/proc/self/status', 'utf8');
  return Number(/^Threads:\s+(\d+)/m.exec(status)?.[1]);
}

function keyOf(e: Pick<ConntrackEntry, 'id' | 'zone' | 'original'>): string {
  const t = e.original;
  return `${e.id} ${e.zone ?? 0} ${t.protocol} ${t.src} ${t.dst} ${t.sport ?? ''} ${t.dport ?? ''}`;
}

async function expectEqualsOracle(ns: Netns, mirror: Mirror): Promise<number> {
  // Events trail the kernel by a little: wait until the two agree (or report the difference).
  let oracle: string[] = [];
  let mine: string[] = [];
  for (let i = 0; i < 50; i++) {
    oracle = (await oracleEntries(ns)).map(keyOf).sort();
    mine = mirror.entries().map(keyOf).sort();
    if (oracle.length === mine.length && oracle.every((k, j) => k === mine[j])) break;
    await sleep(100);
  }
  expect(mine).toEqual(oracle);
  expect(mirror.size).toBe(oracle.length);
  // Beyond identity, the compact form gives back what the kernel holds.
  const byKey = new Map(mirror.entries().map((e) => [keyOf(e), eventKept(e)]));
  for (const e of await oracleEntries(ns)) {
    const mineNow = byKey.get(keyOf(e));
    if (mineNow !== undefined) expect(mineNow).toEqual(eventKept(e));
  }
  return oracle.length;
}

/** The overflow test's burst: more than the 65,536 that 6.x hosts with 4 GiB or less allow. */
const BURST = 200_000;

describeIntegration('mirror() against conntrack -L', () => {
  let ns: Netns;
  let limits: GlobalLimitsLock | undefined;

  beforeAll(async () => {
    limits = await holdGlobalLimits('exclusive');
    ensureRoom(limits, BURST);
    ns = await createNetns('mirror');
    await enableTracking(ns);
  }, 300_000);

  afterAll(async () => {
    await destroyAllNetns();
    limits?.release();
  });

  it('equals conntrack -L after churn: entries made, expired and deleted', async () => {
    await fillUdp(ns, 500, { port: 9 });
    await using ct = await Conntrack.open({ netns: ns.path });
    await using mirror = await ct.mirror();
    expect(mirror.size).toBe(500);
    // Churn: short-lived entries that expire, long-lived ones, and deletions.
    await fillUdp(ns, 1000, { port: 10, udpTimeout: 2 });
    await fillUdp(ns, 1000, { port: 11, udpTimeout: 600 });
    await ns.exec(requireTool('conntrack'), ['-D', '-p', 'udp', '--dport', '11', '-d', '127.1.0.7']).catch(() => undefined);
    await ns.exec(requireTool('conntrack'), ['-D', '-p', 'udp', '--dport', '10']).catch(() => undefined);
    await fillUdp(ns, 300, { port: 12, udpTimeout: 1 });
    // TCP and the other kinds, both families: some closed (FIN states, TIME_WAIT), some kept open.
    const kinds: FlowRequest[] = [];
    for (const family of [4, 6] as const) {
      for (const kind of ['tcp-established', 'tcp-time-wait', 'udp-reply', 'udp-oneway', 'icmp-echo'] as const) kinds.push({ kind, family });
    }
    const closed = await openFlows(ns, [...kinds, ...kinds]);
    const kept = await openFlows(ns, kinds);
    await closed.close();
    await kept.poke();
    await sleep(3000); // the port 12 entries expire
    const count = await expectEqualsOracle(ns, mirror);
    expect(count).toBeGreaterThan(1000);
    expect(mirror.entries({ protocol: 'tcp' }).length).toBeGreaterThanOrEqual(8);
    // The compact form: at most 200 native bytes per entry, table included (the store's own count).
    expect(mirror.nativeBytes / mirror.size).toBeLessThanOrEqual(200);
    // get() finds an entry by its original tuple; summarize() counts from memory.
    const some = mirror.entries({ protocol: 'udp' })[0] as ConntrackEntry;
    expect(mirror.get({ protocol: 'udp', src: some.original.src, dst: some.original.dst, sport: some.original.sport, dport: some.original.dport })?.id).toBe(some.id);
    expect(mirror.get({ protocol: 'udp', src: '10.9.9.9', dst: '10.9.9.8', sport: 1, dport: 2 })).toBeUndefined();
    const summary = mirror.summarize({ by: ['dport'] });
    const dumped = await ct.summarize(undefined, { by: ['dport'] });
    // Groups of equal count come in no set order.
    const sorted = (groups: typeof summary.groups) => [...groups].sort((a, b) => b.count - a.count || String(a.key.dport).localeCompare(String(b.key.dport)));
    expect(sorted(summary.groups)).toEqual(sorted(dumped.groups));
    expect(mirror.resyncs).toBe(0);
    await kept.close();
  }, 120_000);

  it('keeps its live summaries equal to a dump through churn, and an entry\'s state through updates that do not carry it', async () => {
    await ns.exec(requireTool('conntrack'), ['-F']);
    await fillUdp(ns, 200, { port: 20 });
    await using ct = await Conntrack.open({ netns: ns.path });
    await using mirror = await ct.mirror(undefined, { resyncInterval: 0 });
    const questions = [
      { by: ['protocol', 'tcpState'] as const },
      { by: ['dport'] as const, filter: { protocol: 'udp' as const } },
      { by: ['mark', 'assured'] as const },
      { by: ['dst', 'zone', 'family'] as const },
      { by: ['src', 'sport', 'replySrc', 'replyDst', 'nat', 'seenReply'] as const },
    ];
    for (const q of questions) mirror.summarize(q);
    expect(mirror.counters().liveSummaries).toBe(questions.length);
    // Churn: entries made, expiring and deleted; TCP connections opened and closed; marks set by a
    // packet rule and through netlink.
    const kinds: FlowRequest[] = [];
    for (const family of [4, 6] as const) {
      for (const kind of ['tcp-established', 'tcp-time-wait', 'udp-reply', 'icmp-echo'] as const) kinds.push({ kind, family });
    }
    const closed = await openFlows(ns, kinds);
    const kept = await openFlows(ns, kinds);
    await fillUdp(ns, 300, { port: 21, udpTimeout: 1 });
    await fillUdp(ns, 300, { port: 22, udpTimeout: 600 });
    // (Deleting an entry made before the mirror would report no destroy: nf_conntrack_events = 2.)
    await ns.exec(requireTool('conntrack'), ['-D', '-p', 'udp', '--dport', '22', '-d', '127.1.0.7']);
    await closed.close();
    const marked = async (filter: EntryFilter, mark: number) => {
      const targets: ConntrackEntry[] = [];
      for await (const e of ct.entries(filter)) targets.push(e);
      const result = await ct.updateMany(targets.map((target) => ({ target, changes: { mark } })));
      return result.succeeded;
    };
    // A packet rule sets the mark of the kept TCP connections: the kernel reports it in an update
    // event without their state (which did not change). An update through netlink (updateMany,
    // conntrack -U) would carry the state along.
    await ns.nft('table inet ctt_mark {\n chain out {\n type filter hook output priority 0;\n meta l4proto tcp ct state established ct mark set 7\n }\n}\n');
    await kept.poke();
    expect(await marked({ protocol: 'udp', dport: 22 }, 9)).toBe(299);
    await sleep(2500); // the port 21 entries expire
    // Tuples, marks and TCP states as the kernel holds them (a mark update kept the state).
    await expectEqualsOracle(ns, mirror);
    expect(mirror.entries({ protocol: 'tcp', mark: 7 }).filter((e) => e.tcp?.state === 'ESTABLISHED').length).toBeGreaterThanOrEqual(2);
    // The same questions asked again come from the kept counts: equal to a dump's.
    const sorted = (groups: Array<{ key: object; count: number }>) => groups.map((g) => JSON.stringify([g.key, g.count])).sort();
    for (const q of questions) {
      const live = mirror.summarize(q);
      const dumped = await ct.summarize(q.filter, { by: q.by });
      expect({ by: q.by, total: live.total, groups: sorted(live.groups) }).toEqual({ by: q.by, total: dumped.total, groups: sorted(dumped.groups) });
    }
    expect(mirror.counters().liveSummaries).toBe(questions.length);
    // `top` keeps the largest groups (ties in any order) and the total of all of them.
    const top = mirror.summarize({ by: ['dst', 'zone', 'family'], top: 3 });
    const all = await ct.summarize(undefined, { by: ['dst', 'zone', 'family'] });
    expect(top.total).toBe(all.total);
    expect(top.groups.map((g) => g.count)).toEqual(all.groups.slice(0, 3).map((g) => g.count));
    expect(mirror.resyncs).toBe(0);
    await ns.nft('delete table inet ctt_mark');
    await kept.close();
  }, 120_000);

  it('keeps a group\'s key object across answers while the group lives, and never gives it to the group that takes its place', async () => {
    await ns.exec(requireTool('conntrack'), ['-F']);
    await using ct = await Conntrack.open({ netns: ns.path });
    await using mirror = await ct.mirror(undefined, { resyncInterval: 0 });
    // Made after the mirror, so their destroys are reported (nf_conntrack_events = 2).
    await fillUdp(ns, 5, { port: 30 });
    await fillUdp(ns, 3, { port: 31 });
    for (let i = 0; i < 50 && mirror.size < 8; i++) await sleep(50);
    const by = ['dport'] as const;
    const first = mirror.summarize({ by });
    const again = mirror.summarize({ by });
    const keyOfPort = (s: typeof first, port: number) => s.groups.find((g) => g.key.dport === port)?.key;
    expect(again.groups.map((g) => [g.key.dport, g.count])).toEqual([[30, 5], [31, 3]]);
    expect(keyOfPort(again, 30)).toBe(keyOfPort(first, 30));
    expect(Object.isFrozen(keyOfPort(again, 30))).toBe(true);
    expect(again.groups[0]).not.toBe(first.groups[0]); // the groups are each answer's own
    // Port 30's group leaves; port 32's comes, in the place (the id) port 30's had.
    await ns.exec(requireTool('conntrack'), ['-D', '-p', 'udp', '--dport', '30']);
    for (let i = 0; i < 50 && mirror.size > 3; i++) await sleep(50);
    await fillUdp(ns, 4, { port: 32 });
    for (let i = 0; i < 50 && mirror.size < 7; i++) await sleep(50);
    const after = mirror.summarize({ by });
    expect(after.groups.map((g) => [g.key.dport, g.count])).toEqual([[32, 4], [31, 3]]);
    expect(keyOfPort(after, 31)).toBe(keyOfPort(first, 31));
    expect(keyOfPort(after, 32)).not.toBe(keyOfPort(first, 30));
    const dumped = await ct.summarize(undefined, { by });
    expect(after.groups).toEqual(dumped.groups);
  });

  it('answers a grouping it dropped (it outgrew 100,000 groups) and made again without a key from before', async () => {
    await ns.exec(requireTool('conntrack'), ['-F']);
    await using ct = await Conntrack.open({ netns: ns.path });
    await using mirror = await ct.mirror(undefined, { resyncInterval: 0 });
    const by = ['dst', 'sport'] as const;
    await fillUdp(ns, 30, { port: 40 });
    for (let i = 0; i < 50 && mirror.size < 30; i++) await sleep(50);
    expect(mirror.summarize({ by }).groups).toHaveLength(30);
    expect(mirror.counters().liveSummaries).toBe(1);
    // 100,010 entries of distinct (destination, source port): the kept grouping outgrows the limit
    // and is dropped, while this process still holds the keys of its first answer.
    await fillUdp(ns, 100_010, { port: 41 });
    for (let i = 0; i < 200 && mirror.size < 100_040; i++) await sleep(50);
    expect(mirror.size).toBe(100_040);
    expect(mirror.counters().liveSummaries).toBe(0);
    await ns.exec(requireTool('conntrack'), ['-D', '-p', 'udp', '--dport', '41']);
    await fillUdp(ns, 20, { port: 42 });
    for (let i = 0; i < 200 && mirror.size !== 50; i++) await sleep(50);
    expect(mirror.size).toBe(50);
    // Made again, the grouping numbers its groups afresh: the keys held from before must not count.
    const live = mirror.summarize({ by });
    expect(mirror.counters().liveSummaries).toBe(1);
    const dumped = await ct.summarize(undefined, { by });
    const sorted = (groups: Array<{ key: object; count: number }>) => groups.map((g) => JSON.stringify([g.key, g.count])).sort();
    expect(live.groups.every((g) => g.key.dst !== undefined && g.key.sport !== undefined)).toBe(true);
    expect(sorted(live.groups)).toEqual(sorted(dumped.groups));
  }, 180_000);

  it('tells apart the same tuple in two zones: get() by zone, entries and summaries by zone', async () => {
    await ns.exec(requireTool('conntrack'), ['-F']);
    await using ct = await Conntrack.open({ netns: ns.path });
    await using mirror = await ct.mirror(undefined, { resyncInterval: 0 });
    const tuple = { protocol: 'udp' as const, src: '10.20.0.1', dst: '10.20.0.2', sport: 4000, dport: 53 };
    await ct.create({ original: tuple, timeout: 300, zone: 0, mark: 1 });
    await ct.create({ original: tuple, timeout: 300, zone: 7, mark: 2 });
    await ct.create({ original: { ...tuple, sport: 4001 }, timeout: 300, zone: 65535, mark: 3 });
    for (let i = 0; i < 50 && mirror.size < 3; i++) await sleep(50);
    expect(mirror.get({ ...tuple, zone: 7 })).toMatchObject({ zone: 7, mark: 2 });
    expect(mirror.get(tuple)?.mark).toBe(1); // zone omitted: the default zone 0
    expect(mirror.get({ ...tuple, sport: 4001, zone: 65535 })?.mark).toBe(3);
    expect(mirror.get({ ...tuple, sport: 4001 })).toBeUndefined();
    expect(mirror.get({ ...tuple, zone: 8 })).toBeUndefined();
    expect(mirror.entries({ zone: 7 }).map((e) => e.mark)).toEqual([2]);
    const byZone = mirror.summarize({ by: ['zone'] }).groups.map((g) => [g.key.zone ?? 0, g.count]).sort((a, b) => (a[0] as number) - (b[0] as number));
    expect(byZone).toEqual([[0, 1], [7, 1], [65535, 1]]);
    // And what the kernel holds, zone for zone.
    await expectEqualsOracle(ns, mirror);
  });

  it(`overflows in a burst of ${BURST.toLocaleString('en')} entries, resyncs by itself, says so, and equals conntrack -L again`, async () => {
    await ns.exec(requireTool('conntrack'), ['-F']);
    await using ct = await Conntrack.open({ netns: ns.path });
    await using mirror = await ct.mirror(undefined, { receiveBufferBytes: 4096, maxReceiveBufferBytes: 4096, resyncInterval: 0 });
    const resynced: MirrorResync[] = [];
    const watching = (async () => {
      for await (const item of mirror) if (item.type === 'resync') resynced.push(item);
    })();
    await fillUdp(ns, BURST, { port: 20 });
    for (let i = 0; i < 300 && (mirror.resyncs === 0 || mirror.counters().overflows === 0); i++) await sleep(100);
    expect(mirror.counters().overflows).toBeGreaterThan(0);
    expect(mirror.resyncs).toBeGreaterThan(0);
    expect(mirror.lastResync).toBeInstanceOf(Date);
    const count = await expectEqualsOracle(ns, mirror);
    expect(count).toBe(BURST);
    expect(resynced.length).toBe(mirror.resyncs);
    expect(resynced[0]?.reason).toBe('overflow');
    // What the resyncs brought back: the entries whose events were lost.
    expect(resynced.reduce((sum, r) => sum + r.added, 0)).toBeGreaterThan(0);
    mirror.close();
    await watching;
    expect(() => mirror.size).toThrow(expect.objectContaining({ code: 'ERR_CONNTRACK_CLOSED' }));
  }, 180_000);

  it('yields new, update and destroy changes as they happen', async () => {
    await ns.exec(requireTool('conntrack'), ['-F']);
    await using ct = await Conntrack.open({ netns: ns.path });
    await using mirror = await ct.mirror(undefined, { resyncInterval: 0 });
    const changes: MirrorChange[] = [];
    const watching = (async () => {
      for await (const item of mirror) changes.push(item);
    })();
    await sleep(50); // the iteration has started: changes are kept from here
    const flows = await openFlows(ns, [{ kind: 'tcp-established', family: 4 }, { kind: 'udp-reply', family: 6 }]);
    const tcp = flows.info[0]!;
    await flows.close();
    await ns.exec(requireTool('conntrack'), ['-D', '-p', 'tcp', '--dport', String(tcp.dport)]);
    const isTcpFlow = (c: MirrorChange): c is ConntrackEvent => c.type !== 'resync' && c.type !== 'lagged' && c.entry.original.protocol === 'tcp' && c.entry.original.dport === tcp.dport;
    for (let i = 0; i < 50 && !changes.some((c) => isTcpFlow(c) && c.type === 'destroy'); i++) await sleep(100);
    const tcpChanges = changes.filter(isTcpFlow);
    expect(tcpChanges[0]?.type).toBe('new');
    expect(tcpChanges.some((c) => c.type === 'update' && c.entry.tcp?.state === 'ESTABLISHED')).toBe(true);
    expect(tcpChanges.at(-1)?.type).toBe('destroy');
    expect(new Set(tcpChanges.map((c) => c.entry.id)).size).toBe(1);
    expect(changes.some((c) => c.type !== 'resync' && c.type !== 'lagged' && c.entry.original.protocol === 'udp' && c.type === 'new')).toBe(true);
    // After the destroy the mirror no longer holds it.
    expect(mirror.get({ protocol: 'tcp', src: tcp.src, dst: tcp.dst, sport: tcp.sport, dport: tcp.dport })).toBeUndefined();
    mirror.close();
    await watching;
  }, 60_000);

  it('drops entries older than the mirror, whose destroy the kernel never reports, at the periodic resync', async () => {
    await ns.exec(requireTool('conntrack'), ['-F']);
    // 2: an entry gets the event cache only when a listener exists as it is made.
    await ns.sysctl('net.netfilter.nf_conntrack_events', 2);
    await fillUdp(ns, 100, { port: 30 });
    await using ct = await Conntrack.open({ netns: ns.path });
    await using periodic = await ct.mirror(undefined, { resyncInterval: 1000 });
    await using eventsOnly = await ct.mirror(undefined, { resyncInterval: 0 });
    const resynced: MirrorResync[] = [];
    const watching = (async () => {
      for await (const item of periodic) if (item.type === 'resync') resynced.push(item);
    })();
    expect(periodic.size).toBe(100);
    await ns.exec(requireTool('conntrack'), ['-D', '-p', 'udp', '--dport', '30']);
    for (let i = 0; i < 50 && periodic.size > 0; i++) await sleep(100);
    expect(periodic.size).toBe(0);
    expect(resynced.filter((r) => r.reason === 'interval').reduce((sum, r) => sum + r.removed, 0)).toBe(100);
    // Without it, the deletions went unreported: what the kernel did, and why the default exists.
    expect(eventsOnly.size).toBe(100);
    periodic.close();
    await watching;
  }, 60_000);

  it('conntrack top --live counts from a mirror what conntrack -L shows', async () => {
    await ns.exec(requireTool('conntrack'), ['-F']);
    await fillUdp(ns, 300, { port: 40 });
    await fillUdp(ns, 200, { port: 41 });
    const result = await runCommand(topCommand, ['--netns', ns.path, '--live', '--by', 'dport', '--interval', '0.1', '--count', '2', '--json']);
    expect(result.code, result.err).toBe(0);
    const refreshes = result.out.trim().split(/\n(?=\{)/).map((line) => JSON.parse(line) as { total: number; resyncs: number; groups: Array<{ key: { dport?: number }; count: number }> });
    expect(refreshes).toHaveLength(2);
    const byPort = new Map<number, number>();
    for (const e of await oracleEntries(ns)) byPort.set(e.original.dport ?? 0, (byPort.get(e.original.dport ?? 0) ?? 0) + 1);
    for (const refresh of refreshes) {
      expect(refresh.total).toBe(500);
      expect(refresh.resyncs).toBe(0);
      expect(refresh.groups.map((g) => [g.key.dport, g.count])).toEqual([...byPort].sort((a, b) => b[1] - a[1]));
    }
  }, 60_000);

  it('closes without leaking threads or sockets', async () => {
    const fds = (await readdir('/proc/self/fd')).length;
    const threads = await threadCount();
    await using ct = await Conntrack.open({ netns: ns.path });
    for (const resyncInterval of [-1, 1.5, 2 ** 31]) {
      await expect(ct.mirror(undefined, { resyncInterval })).rejects.toMatchObject({ code: 'ERR_CONNTRACK_INVALID_ARGUMENT' });
    }
    for (let i = 0; i < 5; i++) {
      const mirror = await ct.mirror(undefined, { resyncInterval: 100 });
      const watching = (async () => {
        for await (const item of mirror) void item;
      })();
      await sleep(150);
      mirror.close();
      await watching;
    }
    await ct.close();
    expect((await readdir('/proc/self/fd')).length).toBe(fds);
    expect(await threadCount()).toBe(threads);
  }, 60_000);

  it('lets a process wait for the fill and end with a mirror still open', async () => {
    // Nothing but the mirror keeps this process alive: it must wait for the fill, print, and exit cleanly.
    const script = `const { Conntrack } = await import(${JSON.stringify(join(BUILT_LIB, 'index.js'))});
      const ct = await Conntrack.open({ netns: ${JSON.stringify(ns.path)} });
      const mirror = await ct.mirror();
      console.log(mirror.size);`;
    const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { timeout: 30_000 });
    expect(Number(stdout.trim())).toBe(await oracleEntries(ns).then((all) => all.length));
  }, 60_000);
});
