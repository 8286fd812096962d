/**
 * Error paths against the real kernel: a request the kernel refuses (ERR_CONNTRACK_KERNEL, nothing
 * changed), count() on a kernel without CTA_STATS_GLOBAL_MAX_ENTRIES (before 4.18: procfs in the
 * namespace), every method of a closed handle, close() while events() and stream() run, and
 * `signal` on deleteMatching() and summarize(). conntrack-tools says what the table holds.
 */
import { once } from 'node:events';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { binding } from '../../../lib/binding/native.js';
import { Conntrack, ConntrackError, type ConntrackEvent, type OverflowEvent } from '../../../lib/index.js';
import { countFromGlobalStats } from '../../../lib/table/conntrack.js';
import { describeIntegration } from '../../helpers/gate.js';
import { holdGlobalLimits, type GlobalLimitsLock } from '../../helpers/global-lock.js';
import { createNetns, destroyAllNetns, enableTracking, type Netns } from '../../helpers/netns.js';
import { oracleCount, oracleIds } from '../../helpers/oracle.js';
import { fillUdp } from '../../helpers/traffic.js';

const FILL = 500;
/** CTA_STATS_GLOBAL_ENTRIES and CTA_STATS_GLOBAL_MAX_ENTRIES (nfnetlink_conntrack.h). */
const CTA_STATS_GLOBAL_ENTRIES = 1;
const CTA_STATS_GLOBAL_MAX_ENTRIES = 2;

async function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

function thrownBy(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected a throw');
}

/** One UDP datagram from 127.0.0.1 to 127.0.0.1:port inside `ns`: a new entry, and its event. */
async function datagram(ns: Netns, port: number): Promise<void> {
  await ns.exec(process.execPath, ['-e', `const s = require('dgram').createSocket('udp4'); s.send('x', ${port}, '127.0.0.1', () => s.close())`]);
}

describeIntegration('error paths', () => {
  let ns: Netns;
  let limits: GlobalLimitsLock | undefined;

  beforeAll(async () => {
    // count() is compared with nf_conntrack_max: nobody may change it meanwhile.
    limits = await holdGlobalLimits('shared');
    ns = await createNetns('errors');
    await enableTracking(ns);
    await fillUdp(ns, FILL);
  }, 120_000);

  afterAll(async () => {
    await destroyAllNetns();
    limits?.release();
  });

  it('a create() the kernel refuses is ERR_CONNTRACK_KERNEL with its errno, and creates nothing', async () => {
    await using ct = await Conntrack.open({ netns: ns.path });
    const before = await oracleCount(ns);
    // ctnetlink_change_status(): EXPECTED is the kernel's to set (only a helper's expectation makes
    // such an entry): EBUSY.
    const err = await rejectionOf(ct.create({
      original: { protocol: 'tcp', src: '10.3.0.1', dst: '10.3.0.2', sport: 1000, dport: 2000 }, timeout: 100, flags: ['EXPECTED'],
    }));
    expect(err).toBeInstanceOf(ConntrackError);
    expect(err).toMatchObject({ code: 'ERR_CONNTRACK_KERNEL', errno: 16, syscall: 'ctnetlink request' });
    expect((err as Error).message).toContain(ns.path);
    expect((err as Error).message).toMatch(/busy/i);
    expect(await oracleCount(ns)).toBe(before);
  });

  it('count() from a GET_STATS reply without CTA_STATS_GLOBAL_MAX_ENTRIES (before 4.18) reads procfs in the namespace', async () => {
    // This kernel's real reply, as the handle gets it, then as an older kernel would send it.
    const handle = await binding().open(ns.path);
    let pairs: number[];
    try {
      pairs = [...await handle.globalStats()];
    } finally {
      handle.close();
    }
    const types = pairs.filter((_, i) => i % 2 === 0);
    expect(types).toContain(CTA_STATS_GLOBAL_ENTRIES);
    expect(types).toContain(CTA_STATS_GLOBAL_MAX_ENTRIES);
    const without = (type: number) => pairs.flatMap((value, i) => (i % 2 === 0 && (value === type) ? [] : i % 2 === 1 && pairs[i - 1] === type ? [] : [value]));
    const max = limits?.readMax();
    const expected = { entries: await oracleCount(ns), max };
    expect(expected.entries).toBe(FILL);

    const noMax = without(CTA_STATS_GLOBAL_MAX_ENTRIES);
    expect(noMax.length).toBe(pairs.length - 2);
    expect(await countFromGlobalStats(noMax, noMax.length, ns.path)).toEqual(expected);
    // With neither, the count comes from the namespace's procfs too: not this process's (the host's).
    expect(await countFromGlobalStats([], 0, ns.path)).toEqual(expected);
    // And the reply as it is needs no procfs at all.
    expect(await countFromGlobalStats(pairs, pairs.length, ns.path)).toEqual(expected);
  });

  it('every method of a closed handle rejects (or throws, for iterators) ERR_CONNTRACK_CLOSED', async () => {
    const ct = await Conntrack.open({ netns: ns.path });
    await ct.close();
    const tuple = { protocol: 'udp', src: '10.3.0.1', dst: '10.3.0.2', sport: 1, dport: 2 } as const;
    const promises: Array<[string, () => Promise<unknown>]> = [
      ['count', () => ct.count()],
      ['stats', () => ct.stats()],
      ['expectationStats', () => ct.expectationStats()],
      ['get', () => ct.get(tuple)],
      ['create', () => ct.create({ original: tuple, timeout: 10 })],
      ['update', () => ct.update(tuple, { mark: 1 })],
      ['delete', () => ct.delete(tuple)],
      ['deleteMatching', () => ct.deleteMatching({ protocol: 'udp' })],
      ['flush', () => ct.flush()],
      ['summarize', () => ct.summarize(undefined, { by: ['protocol'] })],
    ];
    for (const [name, call] of promises) {
      expect(await rejectionOf(call()), name).toMatchObject({ name: 'ConntrackError', code: 'ERR_CONNTRACK_CLOSED' });
    }
    for (const [name, start] of [
      ['entries', () => ct.entries()],
      ['batches', () => ct.batches()],
      ['stream', () => ct.stream()],
      ['events', () => ct.events()],
    ] as Array<[string, () => unknown]>) {
      expect(thrownBy(start), name).toMatchObject({ name: 'ConntrackError', code: 'ERR_CONNTRACK_CLOSED' });
    }
    // Nothing reached the kernel: the table is as it was.
    expect(await oracleCount(ns)).toBe(FILL);
  });

  it('close() during events() ends the iteration with ERR_CONNTRACK_CLOSED', async () => {
    const ct = await Conntrack.open({ netns: ns.path });
    const iterator = ct.events({ protocol: 'udp' });
    const seen: Array<ConntrackEvent | OverflowEvent> = [];
    const ended = (async () => {
      try {
        for await (const event of iterator) seen.push(event);
        return undefined;
      } catch (err) {
        return err;
      }
    })();
    // Subscribed once an event of ours arrives.
    for (let port = 40_000; seen.length === 0; port++) {
      if (port > 40_100) throw new Error('the subscription never saw an event');
      await datagram(ns, port);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await ct.close();
    expect(await ended).toMatchObject({ name: 'ConntrackError', code: 'ERR_CONNTRACK_CLOSED' });
    await expect(iterator.next()).rejects.toMatchObject({ code: 'ERR_CONNTRACK_CLOSED' });
  });

  it('close() during stream() destroys the stream with ERR_CONNTRACK_CLOSED', async () => {
    const ct = await Conntrack.open({ netns: ns.path });
    const stream = ct.stream(undefined, { batchSize: 16 });
    const errored = once(stream, 'error');
    let received = 0;
    stream.on('data', () => {
      if (++received === 1) stream.pause();
    });
    await new Promise<void>((resolve) => stream.once('data', () => resolve()));
    await ct.close();
    stream.resume();
    const [err] = await errored;
    expect(err).toMatchObject({ name: 'ConntrackError', code: 'ERR_CONNTRACK_CLOSED' });
    expect(stream.destroyed).toBe(true);
    expect(received).toBeLessThan(FILL);
  });

  it('deleteMatching() with an aborted signal deletes nothing; one aborted at once stops; both reject with an AbortError', async () => {
    await using ct = await Conntrack.open({ netns: ns.path });
    const before = await oracleCount(ns);
    const selected = await oracleIds(ns, { filter: ['-p', 'udp', '--dport', '9'] });
    expect(selected).toHaveLength(FILL);
    const early = new AbortController();
    early.abort(new Error('not now'));
    expect(await rejectionOf(ct.deleteMatching({ protocol: 'udp', dport: 9 }, { signal: early.signal })))
      .toMatchObject({ name: 'AbortError', code: 'ABORT_ERR', cause: early.signal.reason });
    expect((await oracleIds(ns, { filter: ['-p', 'udp', '--dport', '9'] })).sort()).toEqual([...selected].sort());
    // Aborted right after it started: the native pass may have deleted some already (it runs on
    // its own threads from the start), and stops; nothing outside the filter goes.
    const late = new AbortController();
    const pending = ct.deleteMatching({ protocol: 'udp', dport: 9 }, { signal: late.signal });
    late.abort();
    expect(await rejectionOf(pending)).toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
    const left = await oracleIds(ns, { filter: ['-p', 'udp', '--dport', '9'] });
    expect(left.every((id) => selected.includes(id))).toBe(true);
    expect(await oracleCount(ns)).toBe(before - (selected.length - left.length));
    // The handle still works, and the same call without a signal deletes what conntrack -D would.
    const inRange = (await oracleIds(ns, { filter: ['-p', 'udp', '--dport', '9', '-d', '127.1.0.0/24'] })).length;
    expect(await ct.deleteMatching({ protocol: 'udp', dport: 9, dst: '127.1.0.0/24' })).toMatchObject({ deleted: inRange, failed: 0 });
    expect(await oracleIds(ns, { filter: ['-p', 'udp', '--dport', '9', '-d', '127.1.0.0/24'] })).toEqual([]);
  });

  it('summarize() with an aborted signal, or one aborted at once, rejects with an AbortError', async () => {
    await using ct = await Conntrack.open({ netns: ns.path });
    const early = new AbortController();
    early.abort();
    expect(await rejectionOf(ct.summarize(undefined, { by: ['protocol'], signal: early.signal }))).toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
    const late = new AbortController();
    const pending = ct.summarize(undefined, { by: ['protocol'], signal: late.signal });
    late.abort();
    expect(await rejectionOf(pending)).toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
    // Not aborted: the handle still summarizes.
    expect((await ct.summarize(undefined, { by: ['protocol'] })).total).toBe(await oracleCount(ns));
  });
}, { tools: ['conntrack'] });
