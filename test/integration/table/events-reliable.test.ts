/**
 * events() when the reader falls behind: the receive buffer grows on each overflow (up to its
 * cap), and with `reliable: true` the kernel holds back what it cannot deliver instead of
 * dropping it. Bursts come from fillUdp (UNREPLIED UDP entries) and `conntrack -F`.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Conntrack, type ConntrackEvent, type EntryIterator, type OverflowEvent } from '../../../lib/index.js';
import { describeIntegration } from '../../helpers/gate.js';
import { createNetns, destroyAllNetns, enableTracking, type Netns } from '../../helpers/netns.js';
import { requireTool } from '../../helpers/tools.js';
import { fillUdp } from '../../helpers/traffic.js';

type Item = ConntrackEvent | OverflowEvent;
const PROBE_PORT = 7;
const FILL_PORT = 9;

async function udpDatagram(ns: Netns, port: number): Promise<void> {
  await ns.exec(process.execPath, ['-e',
    `const s = require('dgram').createSocket('udp4'); s.send('x', ${port}, '127.0.0.1', () => s.close())`]);
}

/** Sends probes until every iterator has yielded its first item (so all are subscribed). */
async function waitSubscribed(ns: Netns, iterators: Array<EntryIterator<Item>>, destroy = false): Promise<Array<Promise<IteratorResult<Item>>>> {
  const firsts = iterators.map((it) => it.next());
  const all = Promise.all(firsts);
  for (let attempt = 0; ; attempt++) {
    if (attempt > 100) throw new Error('a subscription never saw a probe');
    await udpDatagram(ns, PROBE_PORT);
    // A destroy-only subscription sees the probe when it is deleted.
    if (destroy) await ns.exec(requireTool('conntrack'), ['-D', '-p', 'udp', '--dport', String(PROBE_PORT)]).catch(() => undefined);
    if (await Promise.race([all.then(() => true), sleep(50).then(() => false)])) return firsts;
  }
}

/** Reads until nothing comes for `quietMs`; `pending` is the read still in flight. */
async function drain(iterator: EntryIterator<Item>, first: Promise<IteratorResult<Item>>, quietMs = 1000) {
  const items: Item[] = [];
  let pending = first;
  for (;;) {
    const next = await Promise.race([pending, sleep(quietMs).then(() => null)]);
    if (next === null || next.done) return { items, pending };
    items.push(next.value);
    pending = iterator.next();
  }
}

describeIntegration('events() under bursts: buffer growth and reliable delivery', () => {
  let ns: Netns;

  beforeAll(async () => {
    ns = await createNetns('events reliable');
    await enableTracking(ns);
  });

  afterAll(destroyAllNetns);

  it('grows the receive buffer on each overflow up to the cap, reports each growth, and then keeps up', async () => {
    await using ct = await Conntrack.open({ netns: ns.path });
    const growing = ct.events({ protocol: 'udp' }, { types: ['new'], receiveBufferBytes: 4096, maxReceiveBufferBytes: 1 << 20 });
    const fixed = ct.events({ protocol: 'udp' }, { types: ['new'], receiveBufferBytes: 4096, maxReceiveBufferBytes: 4096 });
    let [firstGrowing, firstFixed] = await waitSubscribed(ns, [growing, fixed]);
    const initial = growing.counters().receiveBufferBytes ?? 0;
    expect(initial).toBeGreaterThan(0);
    // Growth answers an overflow, so it helps the bursts after it: burst until one gets through.
    const BURST = 1000;
    const sizes: number[] = [];
    let lastGrowing: Item[] = [];
    let lastFixed: Item[] = [];
    for (let burst = 0; burst < 12; burst++) {
      const port = 1000 + burst;
      await fillUdp(ns, BURST, { port });
      const fromGrowing = await drain(growing, firstGrowing as Promise<IteratorResult<Item>>, 500);
      const fromFixed = await drain(fixed, firstFixed as Promise<IteratorResult<Item>>, 500);
      lastGrowing = fromGrowing.items;
      lastFixed = fromFixed.items;
      firstGrowing = fromGrowing.pending;
      firstFixed = fromFixed.pending;
      const overflows = lastGrowing.filter((e): e is OverflowEvent => e.type === 'overflow');
      sizes.push(...overflows.map((o) => o.receiveBufferBytes));
      const news = lastGrowing.filter((e) => e.type === 'new' && e.entry.original.dport === port).length;
      if (overflows.length === 0 && news === BURST) break;
    }
    const counters = growing.counters();
    // It kept up in the end: the last burst came whole, while the capped subscription lost part of it.
    expect(lastGrowing.some((e) => e.type === 'overflow')).toBe(false);
    expect(lastFixed.some((e) => e.type === 'overflow')).toBe(true);
    expect(counters.bufferGrowths).toBeGreaterThan(0);
    expect(counters.bufferGrowths).toBeLessThanOrEqual(8); // 4 KiB doubled up to 1 MiB
    expect(counters.receiveBufferBytes).toBeGreaterThan(initial);
    expect(counters.receiveBufferBytes).toBeLessThanOrEqual(2 << 20); // the kernel doubles what is asked
    // Every overflow item says the size after it; the sizes never shrink.
    expect(sizes[0]).toBeGreaterThan(initial);
    expect([...sizes].sort((a, b) => a - b)).toEqual(sizes);
    expect(fixed.counters().bufferGrowths).toBe(0);
    expect(fixed.counters().receiveBufferBytes).toBe(initial);
    await growing.return?.();
    await fixed.return?.();
  }, 240_000);

  it('reliable: true loses no destroy event in a burst that overflows the plain subscription', async () => {
    const burstNs = await createNetns('events reliable burst');
    await enableTracking(burstNs);
    const ns = burstNs;
    await using ct = await Conntrack.open({ netns: ns.path });
    const plain = ct.events({ protocol: 'udp' }, { types: ['destroy'], receiveBufferBytes: 4096, maxReceiveBufferBytes: 4096 });
    const reliable = ct.events({ protocol: 'udp' }, { types: ['destroy'], receiveBufferBytes: 4096, reliable: true });
    const [firstPlain, firstReliable] = await waitSubscribed(ns, [plain, reliable], true);
    // Made while subscribed: with nf_conntrack_events = 2 (the default) the kernel gives an entry
    // its event cache only when a listener exists as it is created; older entries report nothing.
    await fillUdp(ns, 5000, { port: FILL_PORT });
    // The oracle: what the flush will destroy.
    const FILL = (await ns.exec(requireTool('conntrack'), ['-L', '-p', 'udp', '--dport', String(FILL_PORT)])).stdout
      .split('\n').filter((line) => line.trim() !== '').length;
    expect(FILL).toBeGreaterThan(4000);

    // Nobody reads: the flush's destroy events overrun both 4 KiB buffers.
    await ns.exec(requireTool('conntrack'), ['-F']);
    // What the kernel did instead of losing the reliable reader's events: the entries left the
    // table (conntrack -L lists none) but still exist and count against the limit, held until
    // their destroy events are delivered (the kernel retries as the reader makes room).
    const listed = (await ns.exec(requireTool('conntrack'), ['-L'])).stdout.trim();
    expect(listed).toBe('');
    const heldCount = Number(await ns.sysctl('net.netfilter.nf_conntrack_count'));
    expect(heldCount).toBeGreaterThan(FILL / 2);

    const fromReliable = (await drain(reliable, firstReliable as Promise<IteratorResult<Item>>, 2000)).items;
    const fromPlain = (await drain(plain, firstPlain as Promise<IteratorResult<Item>>, 500)).items;
    const destroyed = (items: Item[]) => new Set(items
      .filter((e): e is ConntrackEvent => e.type === 'destroy' && e.entry.original.dport === FILL_PORT)
      .map((e) => e.entry.id));

    expect(fromPlain.some((e) => e.type === 'overflow')).toBe(true);
    expect(fromReliable.some((e) => e.type === 'overflow')).toBe(false);
    expect(reliable.counters().overflows).toBe(0);
    expect(destroyed(fromReliable).size).toBe(FILL);
    expect(destroyed(fromPlain).size).toBeLessThan(FILL);
    // Once delivered, the held entries are freed.
    for (let i = 0; i < 100 && Number(await ns.sysctl('net.netfilter.nf_conntrack_count')) > 0; i++) await sleep(50);
    expect(Number(await ns.sysctl('net.netfilter.nf_conntrack_count'))).toBe(0);
    console.log(`reliable burst: ${FILL} destroys delivered, ${heldCount} entries held (nf_conntrack_count) right after the flush; `
      + `plain subscription: ${destroyed(fromPlain).size} destroys, ${plain.counters().overflows} overflows`);
    await plain.return?.();
    await reliable.return?.();
  }, 120_000);
});
