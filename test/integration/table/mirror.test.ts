/**
 * ct.mirror() against conntrack -L in a namespace with churn: UDP entries made, expiring and
 * deleted with conntrack -D while the mirror runs; and a forced overflow that makes it resync.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Conntrack, type ConntrackEntry, type Mirror, type MirrorResync } from '../../../lib/index.js';
import { describeIntegration } from '../../helpers/gate.js';
import { createNetns, destroyAllNetns, enableTracking, type Netns } from '../../helpers/netns.js';
import { oracleEntries } from '../../helpers/oracle.js';
import { requireTool } from '../../helpers/tools.js';
import { fillUdp } from '../../helpers/traffic.js';

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
  return oracle.length;
}

describeIntegration('mirror() against conntrack -L', () => {
  let ns: Netns;

  beforeAll(async () => {
    ns = await createNetns('mirror');
    await enableTracking(ns);
  });

  afterAll(destroyAllNetns);

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
    await sleep(3000); // the port 12 entries expire
    const count = await expectEqualsOracle(ns, mirror);
    expect(count).toBeGreaterThan(1000);
    // get() finds an entry by its original tuple; summarize() counts from memory.
    const some = mirror.entries({ protocol: 'udp' })[0] as ConntrackEntry;
    expect(mirror.get({ protocol: 'udp', src: some.original.src, dst: some.original.dst, sport: some.original.sport, dport: some.original.dport })?.id).toBe(some.id);
    expect(mirror.get({ protocol: 'udp', src: '10.9.9.9', dst: '10.9.9.8', sport: 1, dport: 2 })).toBeUndefined();
    const summary = mirror.summarize({ by: ['dport'] });
    const dumped = await ct.summarize(undefined, { by: ['dport'] });
    expect(summary.groups).toEqual(dumped.groups);
    expect(mirror.resyncs).toBe(0);
  }, 120_000);

  it('overflows, resyncs by itself, says so, and equals conntrack -L again', async () => {
    await ns.exec(requireTool('conntrack'), ['-F']);
    await using ct = await Conntrack.open({ netns: ns.path });
    await using mirror = await ct.mirror(undefined, { receiveBufferBytes: 4096, maxReceiveBufferBytes: 4096 });
    const resynced: MirrorResync[] = [];
    const watching = (async () => {
      for await (const item of mirror) resynced.push(item);
    })();
    await fillUdp(ns, 20_000, { port: 20 });
    for (let i = 0; i < 100 && (mirror.resyncs === 0 || mirror.counters().overflows === 0); i++) await sleep(100);
    expect(mirror.counters().overflows).toBeGreaterThan(0);
    expect(mirror.resyncs).toBeGreaterThan(0);
    expect(mirror.lastResync).toBeInstanceOf(Date);
    const count = await expectEqualsOracle(ns, mirror);
    expect(count).toBe(20_000);
    expect(resynced.length).toBe(mirror.resyncs);
    expect(resynced[0]?.type).toBe('resync');
    mirror.close();
    await watching;
    expect(() => mirror.size).toThrow(expect.objectContaining({ code: 'ERR_CONNTRACK_CLOSED' }));
  }, 180_000);
});
