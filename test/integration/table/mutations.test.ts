/**
 * get(), create(), update(), delete(), deleteMatching() and flush() against conntrack-tools in a
 * throwaway namespace: what the library writes, the tool reads back (and the other way round),
 * bad input changes nothing, and the event stream reports each change.
 */
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { Conntrack, ConntrackError, type ConntrackEntry, type ConntrackEvent, type NewEntry, type OverflowEvent, type TupleSpec } from '../../../lib/index.js';
import { describeIntegration } from '../../helpers/gate.js';
import { createNetns, destroyAllNetns, enableTracking, type Netns } from '../../helpers/netns.js';
import { oracleCount, oracleEntries, type OracleEntry } from '../../helpers/oracle.js';
import { requireTool } from '../../helpers/tools.js';
import { runCommand } from '../../helpers/cli.js';
import { deleteCommand, flushCommand } from '../../../lib/cli/changes.js';
import { entryForFlow, openFlows } from '../../helpers/traffic.js';

const TCP: TupleSpec = { protocol: 'tcp', src: '10.1.0.1', dst: '10.1.0.2', sport: 40001, dport: 1883 };
const UDP6: TupleSpec = { protocol: 'udp', src: '2001:db8::1', dst: '2001:db8::2', sport: 5353, dport: 53 };
const ICMP: TupleSpec = { protocol: 'icmp', src: '10.1.0.1', dst: '10.1.0.3', icmpType: 8, icmpCode: 0, icmpId: 4242 };

function byTuple(entries: readonly OracleEntry[], t: TupleSpec): OracleEntry | undefined {
  return entries.find((e) => e.original.src === t.src && e.original.dst === t.dst &&
    e.original.sport === t.sport && e.original.dport === t.dport && e.original.icmpId === t.icmpId);
}

async function expectCode(promise: Promise<unknown>, code: string): Promise<ConntrackError> {
  const err = await promise.then(() => undefined, (e: unknown) => e);
  expect(err, `expected ${code}`).toBeInstanceOf(ConntrackError);
  expect((err as ConntrackError).code, (err as Error).message).toBe(code);
  return err as ConntrackError;
}

describeIntegration('changing the table: create, get, update, delete, flush', () => {
  let ns: Netns;
  let ct: Conntrack;

  beforeAll(async () => {
    ns = await createNetns('mutations');
    await enableTracking(ns);
    ct = await Conntrack.open({ netns: ns.path });
  });

  afterEach(async () => {
    await ct.flush();
  });

  afterAll(async () => {
    await ct?.close();
    await destroyAllNetns();
  });

  it('create() makes the entries conntrack -L shows: tuples, mirrored replies, timeout, mark, zone, TCP state, flags', async () => {
    const created: NewEntry[] = [
      { original: TCP, timeout: 300, mark: 7, tcpState: 'SYN_RECV', flags: ['SEEN_REPLY', 'ASSURED'] },
      { original: UDP6, timeout: 120, zone: 5 },
      { original: ICMP, timeout: 30 },
    ];
    for (const entry of created) await ct.create(entry);
    const oracle = await oracleEntries(ns, { labels: false });
    expect(oracle).toHaveLength(3);

    const tcp = byTuple(oracle, TCP);
    expect(tcp?.original).toMatchObject({ protocol: 'tcp', src: TCP.src, dst: TCP.dst, sport: 40001, dport: 1883 });
    expect(tcp?.reply).toMatchObject({ src: TCP.dst, dst: TCP.src, sport: 1883, dport: 40001 });
    expect(tcp?.tcp?.state).toBe('SYN_RECV');
    expect(tcp?.mark).toBe(7);
    expect(tcp?.flags).toEqual(expect.arrayContaining(['SEEN_REPLY', 'ASSURED']));
    expect(tcp?.timeout).toBeGreaterThan(295);
    expect(tcp?.timeout).toBeLessThanOrEqual(300);

    const udp = byTuple(oracle, UDP6);
    expect(udp?.family).toBe('ipv6');
    expect(udp?.reply).toMatchObject({ src: UDP6.dst, dst: UDP6.src, sport: 53, dport: 5353 });
    expect(udp?.zone).toBe(5);
    expect(udp?.flags).not.toContain('SEEN_REPLY');

    // An echo request's reply direction is an echo reply with the same id.
    const icmp = byTuple(oracle, ICMP);
    expect(icmp?.reply).toMatchObject({ src: ICMP.dst, dst: ICMP.src, icmpType: 0, icmpCode: 0, icmpId: 4242 });

    // get() finds each by its tuple (and zone) and agrees with the tool on the id.
    expect((await ct.get(TCP))?.id).toBe(tcp?.id);
    expect((await ct.get({ ...UDP6, zone: 5 }))?.id).toBe(udp?.id);
    expect(await ct.get(UDP6), 'zone 0 is another table').toBeUndefined();
    expect((await ct.get(ICMP))?.id).toBe(icmp?.id);
  });

  it('create() of a taken tuple is ERR_CONNTRACK_EXISTS and leaves the entry as it was', async () => {
    await ct.create({ original: TCP, timeout: 300, mark: 1 });
    const before = byTuple(await oracleEntries(ns, { labels: false }), TCP);
    await expectCode(ct.create({ original: TCP, timeout: 10, mark: 2 }), 'ERR_CONNTRACK_EXISTS');
    const after = byTuple(await oracleEntries(ns, { labels: false }), TCP);
    expect(after?.id).toBe(before?.id);
    expect(after?.mark).toBe(1);
  });

  it('update() changes mark and timeout as conntrack -L then shows; false for no such entry', async () => {
    await ct.create({ original: TCP, timeout: 100, mark: 1 });
    expect(await ct.update(TCP, { mark: 0xdeadbeef, timeout: 5000 })).toBe(true);
    const entry = byTuple(await oracleEntries(ns, { labels: false }), TCP);
    expect(entry?.mark).toBe(0xdeadbeef);
    expect(entry?.timeout).toBeGreaterThan(4990);
    expect(await ct.update({ ...TCP, sport: 40002 }, { mark: 1 })).toBe(false);
  });

  it('delete() by tuple removes the entry; again, it is false', async () => {
    await ct.create({ original: TCP, timeout: 100 });
    await ct.create({ original: UDP6, timeout: 100 });
    expect(await ct.delete(TCP)).toBe(true);
    expect(await ct.delete(TCP)).toBe(false);
    const left = await oracleEntries(ns, { labels: false });
    expect(left.map((e) => e.original.protocol)).toEqual(['udp']);
  });

  it('delete() of an entry object checks its id: an entry with another id under that tuple stays', async () => {
    await ct.create({ original: TCP, timeout: 100 });
    const entry = await ct.get(TCP) as ConntrackEntry;
    // Ids come from the entry's memory address and tuple, so a recreated entry may get the
    // same one: a different id is made here instead.
    const other = { ...entry, id: (entry.id + 1) >>> 0 };
    expect(await ct.delete(other)).toBe(false);
    expect((await oracleEntries(ns, { labels: false })).map((e) => e.id)).toEqual([entry.id]);
    expect(await ct.delete(entry)).toBe(true);
    expect(await oracleCount(ns)).toBe(0);
  });

  it('deleteMatching() deletes what the filter selects, as conntrack -D with the same filter would', async () => {
    for (let port = 1; port <= 20; port++) {
      await ct.create({ original: { ...TCP, sport: 41000 + port }, timeout: 300, mark: port % 2 });
    }
    await ct.create({ original: UDP6, timeout: 300, mark: 1 });
    const expected = (await oracleEntries(ns, { labels: false, filter: ['-p', 'tcp', '--mark', '1'] })).map((e) => e.id);
    expect(expected).toHaveLength(10);
    expect(await ct.deleteMatching({ protocol: 'tcp', mark: { value: 1, mask: 0xffffffff } })).toMatchObject({ deleted: 10, matched: 10, alreadyGone: 0, failed: 0 });
    const left = await oracleEntries(ns, { labels: false });
    expect(left).toHaveLength(11);
    expect(left.some((e) => expected.includes(e.id))).toBe(false);
    await expectCode(ct.deleteMatching({}), 'ERR_CONNTRACK_INVALID_ARGUMENT');
  });

  it('flush() empties the namespace, or one family of it', async () => {
    await ct.create({ original: TCP, timeout: 100 });
    await ct.create({ original: UDP6, timeout: 100 });
    await ct.flush({ family: 'ipv6' });
    expect((await oracleEntries(ns, { labels: false })).map((e) => e.family)).toEqual(['ipv4']);
    await ct.flush();
    expect(await oracleCount(ns)).toBe(0);
  });

  it('works on real flows: get() of a live connection, delete() of it as the tool sees', async () => {
    const flows = await openFlows(ns, [{ kind: 'tcp-established', family: 4, port: 8100 }]);
    try {
      const flow = flows.info[0];
      if (flow === undefined) throw new Error('no flow');
      const oracle = entryForFlow(await oracleEntries(ns, { labels: false }), flow);
      const tuple: TupleSpec = { protocol: 'tcp', src: flow.src, dst: flow.dst, sport: flow.sport, dport: flow.dport };
      const entry = await ct.get(tuple);
      expect(entry?.id).toBe(oracle.id);
      expect(entry?.tcp?.state).toBe('ESTABLISHED');
      expect(await ct.delete(tuple)).toBe(true);
      expect((await oracleEntries(ns, { labels: false })).some((e) => e.id === oracle.id)).toBe(false);
    } finally {
      await flows.close();
    }
  });

  it('reads back what conntrack -I made, and deletes what the tool shows', async () => {
    await ns.exec(requireTool('conntrack'), ['-I', '-p', 'udp', '-s', '10.2.0.1', '-d', '10.2.0.2', '--sport', '7000', '--dport', '7001', '-t', '120', '-m', '99']);
    const tuple: TupleSpec = { protocol: 'udp', src: '10.2.0.1', dst: '10.2.0.2', sport: 7000, dport: 7001 };
    const entry = await ct.get(tuple);
    expect(entry?.mark).toBe(99);
    expect(entry?.reply).toMatchObject({ src: '10.2.0.2', dst: '10.2.0.1', sport: 7001, dport: 7000 });
    expect(entry?.id).toBe(byTuple(await oracleEntries(ns, { labels: false }), tuple)?.id);
    expect(await ct.delete(tuple)).toBe(true);
    expect(await oracleCount(ns)).toBe(0);
  });

  it('create({ reply }) alone makes the entry whose reply is that tuple, as conntrack -I -r -q does; get, update and delete find it by { reply }', async () => {
    const reply: TupleSpec = { protocol: 'tcp', src: '10.3.0.2', dst: '10.3.0.1', sport: 11, dport: 21 };
    await ct.create({ reply, timeout: 300, tcpState: 'LISTEN' as 'SYN_SENT2', flags: ['SEEN_REPLY'] }); // text from a user: typed names stay the kernel's
    // conntrack-tools makes the same entry from its reply tuple in another zone: both must agree.
    await ns.exec(requireTool('conntrack'), ['-I', '-r', '10.3.0.2', '-q', '10.3.0.1', '-p', 'tcp', '--reply-port-src', '11', '--reply-port-dst', '21', '--state', 'LISTEN', '-u', 'SEEN_REPLY', '-t', '300', '--zone', '4']);
    const oracle = await oracleEntries(ns, { labels: false });
    expect(oracle).toHaveLength(2);
    const [mine, theirs] = [oracle.find((e) => e.zone === undefined), oracle.find((e) => e.zone === 4)];
    expect(mine?.original).toMatchObject({ src: '10.3.0.1', dst: '10.3.0.2', sport: 21, dport: 11 });
    expect(mine?.reply).toMatchObject({ src: '10.3.0.2', dst: '10.3.0.1', sport: 11, dport: 21 });
    expect(mine?.original).toEqual(theirs?.original);
    expect(mine?.reply).toEqual(theirs?.reply);
    // LISTEN is conntrack-tools' name for the kernel's state 9.
    expect(mine?.tcp?.state).toBe('SYN_SENT2');

    const found = await ct.get({ reply });
    expect(found?.id).toBe(mine?.id);
    expect((await ct.get({ reply, zone: 4 }))?.id).toBe(theirs?.id);
    expect(await ct.update({ reply }, { mark: 12 })).toBe(true);
    // The same tuple is in zone 0 (ours) and zone 4 (conntrack-tools'): only zone 0's changed.
    const marks = (await oracleEntries(ns, { labels: false })).map((e) => [e.zone ?? 0, e.mark]).sort();
    expect(marks).toEqual([[0, 12], [4, 0]]);
    expect(await ct.delete({ reply })).toBe(true);
    expect(await ct.delete({ reply })).toBe(false);
    expect((await oracleEntries(ns, { labels: false })).map((e) => e.zone)).toEqual([4]);
  });

  it('create({ reply }) of an ICMP echo reply makes the echo request entry; LISTEN filters as SYN_SENT2', async () => {
    await ct.create({ reply: { protocol: 'icmp', src: '10.3.0.9', dst: '10.3.0.8', icmpType: 0, icmpCode: 0, icmpId: 77 }, timeout: 60 });
    await ct.create({ original: TCP, timeout: 60, tcpState: 'LISTEN' as 'SYN_SENT2' });
    const oracle = await oracleEntries(ns, { labels: false });
    const icmp = oracle.find((e) => e.original.protocol === 'icmp');
    expect(icmp?.original).toMatchObject({ src: '10.3.0.8', dst: '10.3.0.9', icmpType: 8, icmpCode: 0, icmpId: 77 });
    const listening: ConntrackEntry[] = [];
    for await (const e of ct.entries({ tcpState: 'LISTEN' as 'SYN_SENT2' })) listening.push(e);
    expect(listening.map((e) => e.id)).toEqual(oracle.filter((e) => e.tcp?.state === 'SYN_SENT2').map((e) => e.id));
    expect(listening).toHaveLength(1);
    await expectCode(ct.create({ reply: { protocol: 'icmp', src: '10.3.0.9', dst: '10.3.0.8', icmpType: 8, icmpCode: 0, icmpId: 1 }, timeout: 60 }), 'ERR_CONNTRACK_INVALID_ARGUMENT');
    await expectCode(ct.create({ timeout: 60 } as unknown as NewEntry), 'ERR_CONNTRACK_INVALID_ARGUMENT');
  });

  it('bad input is ERR_CONNTRACK_INVALID_ARGUMENT and creates nothing', async () => {
    const bad: unknown[] = [
      { original: { ...TCP, src: '10.1.0.300' }, timeout: 10 },
      { original: { ...TCP, dst: '2001:db8::2' }, timeout: 10 },
      { original: { ...TCP, sport: undefined }, timeout: 10 },
      { original: { ...TCP, dport: 70000 }, timeout: 10 },
      { original: { ...TCP, protocol: 'carrier-pigeon' }, timeout: 10 },
      { original: TCP, timeout: 0 },
      { original: TCP },
      { original: TCP, timeout: 10, mark: -1 },
      { original: TCP, timeout: 10, tcpState: 'DANCING' },
      { original: UDP6, timeout: 10, tcpState: 'ESTABLISHED' },
      { original: TCP, timeout: 10, flags: ['FAST'] },
      { original: { ...ICMP, icmpType: 3 }, timeout: 10 },
      { original: { ...ICMP, protocol: 'icmpv6' }, timeout: 10 },
      null,
    ];
    for (const entry of bad) await expectCode(ct.create(entry as NewEntry), 'ERR_CONNTRACK_INVALID_ARGUMENT');
    await expectCode(ct.update(TCP, {}), 'ERR_CONNTRACK_INVALID_ARGUMENT');
    await expectCode(ct.get({ ...TCP, src: 'localhost' }), 'ERR_CONNTRACK_INVALID_ARGUMENT');
    await expectCode(ct.flush({ family: 'ipx' as never }), 'ERR_CONNTRACK_INVALID_ARGUMENT');
    expect(await oracleCount(ns)).toBe(0);
  });

  it('conntrack delete [filters] and conntrack flush, as conntrack -D and -F', async () => {
    for (let port = 1; port <= 4; port++) await ct.create({ original: { ...TCP, sport: 43000 + port }, timeout: 100 });
    await ct.create({ original: UDP6, timeout: 100 });
    const deleted = await runCommand(deleteCommand, ['--netns', ns.path, '-p', 'tcp', '--sport', '43001-43002', '--json']);
    expect(deleted).toMatchObject({ code: 0, err: '' });
    expect(JSON.parse(deleted.out)).toMatchObject({ deleted: 2, matched: 2, alreadyGone: 0, failed: 0 });
    expect(await oracleCount(ns)).toBe(3);
    const text = await runCommand(deleteCommand, ['--netns', ns.path, '-f', 'ipv6']);
    expect(text).toEqual({ code: 0, out: '', err: 'conntrack: 1 flow entries deleted\n' });
    const refused = await runCommand(deleteCommand, ['--netns', ns.path]);
    expect(refused.code).toBe(2);
    expect(refused.err).toContain('give at least one filter');
    expect(await oracleCount(ns)).toBe(2);
    expect(await runCommand(flushCommand, ['--netns', ns.path, '-f', 'ipx'])).toMatchObject({ code: 2 });
    expect(await runCommand(flushCommand, ['--netns', ns.path])).toMatchObject({ code: 0 });
    expect(await oracleCount(ns)).toBe(0);
  });

  it('every change is an event: create is new, update is update, delete is destroy, with one id', async () => {
    const stop = new AbortController();
    const seen: Array<ConntrackEvent | OverflowEvent> = [];
    const listening = (async () => {
      try {
        for await (const event of ct.events({ protocol: 'tcp' }, { signal: stop.signal })) seen.push(event);
      } catch (err) {
        if ((err as Error).name !== 'AbortError') throw err;
      }
    })();
    // The subscription is made on a native thread: create until the first event shows it listens.
    for (let sport = 42000; seen.length === 0; sport++) {
      if (sport > 42100) throw new Error('no event arrived');
      await ct.create({ original: { ...TCP, sport }, timeout: 100 });
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await ct.create({ original: TCP, timeout: 100 });
    await ct.update(TCP, { mark: 5 });
    await ct.delete(TCP);
    const deadline = Date.now() + 5000;
    const ours = () => seen.filter((e): e is ConntrackEvent => e.type !== 'overflow' && e.entry.original.sport === TCP.sport);
    while (ours().length < 3 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    stop.abort();
    await listening;
    expect(ours().map((e) => e.type)).toEqual(['new', 'update', 'destroy']);
    expect(new Set(ours().map((e) => e.entry.id)).size).toBe(1);
    expect(ours()[1]?.entry.mark).toBe(5);
  });
}, { tools: ['conntrack'] });

describeIntegration('labels on create() and update()', () => {
  let ns: Netns;

  beforeAll(async () => {
    ns = await createNetns('mutations labels');
    // A rule that uses `ct label`: the kernel gives entries label storage only while one exists.
    await enableTracking(ns, { labelPort: 9, label: 3 });
  });

  afterAll(destroyAllNetns);

  it('create() sets label bits and update() replaces, adds and removes them, as conntrack -L shows', async () => {
    await using ct = await Conntrack.open({ netns: ns.path });
    const labelsOf = async () => byTuple(await oracleEntries(ns), TCP)?.labels;
    await ct.create({ original: TCP, timeout: 300, labels: [1, 100] });
    expect(await labelsOf()).toEqual([1, 100]);
    expect((await ct.get(TCP))?.labels).toEqual([1, 100]);
    expect(await ct.update(TCP, { labels: { add: [5, 127], remove: [1] } })).toBe(true);
    expect(await labelsOf()).toEqual([5, 100, 127]);
    expect(await ct.update(TCP, { labels: [0] })).toBe(true);
    expect(await labelsOf()).toEqual([0]);
    expect((await ct.get(TCP))?.labels).toEqual([0]);
  });

  it('update() of labels where no rule uses ct label is ERR_CONNTRACK_UNAVAILABLE and changes nothing', async () => {
    const other = await createNetns('mutations no labels');
    await enableTracking(other);
    await using ct = await Conntrack.open({ netns: other.path });
    await ct.create({ original: TCP, timeout: 300, mark: 4 });
    const before = byTuple(await oracleEntries(other), TCP);
    expect(before).toMatchObject({ mark: 4, labels: undefined });
    const err = await ct.update(TCP, { labels: [3], mark: 9 }).then(() => undefined, (e: unknown) => e);
    expect(err).toMatchObject({ code: 'ERR_CONNTRACK_UNAVAILABLE', message: expect.stringContaining('ct label') });
    // conntrack-tools sees the entry as it was: same id, no labels, and the mark sent with the
    // labels not applied either.
    const after = byTuple(await oracleEntries(other), TCP);
    expect(after).toMatchObject({ id: before?.id, mark: 4, labels: undefined });
  });
}, { tools: ['conntrack', 'unshare'] });
