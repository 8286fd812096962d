/**
 * Bulk changes against conntrack-tools, in throwaway namespaces:
 * - deleteMatching() deletes the same entries as `conntrack -D` with the same filter, while other
 *   entries come and go: two namespaces get the same entries and the same churn, the library
 *   deletes in one and the tool in the other, and what is left must be the same. Filters the
 *   kernel's filtered flush can do (mark, status, zone, family) and ones it cannot (protocol,
 *   addresses, ports); several filters in one scan; counters; abort.
 * - createMany() makes the entries `conntrack -I` makes; item failures are reported by index and
 *   code while the rest are created; updateMany() as `conntrack -U`.
 * - `conntrack fill` and `conntrack delete`.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { binding } from '../../../lib/binding/native.js';
import { Conntrack, type EntryFilter, type NewEntry, type TupleSpec } from '../../../lib/index.js';
import { describeIntegration } from '../../helpers/gate.js';
import { ensureRoom, holdGlobalLimits } from '../../helpers/global-lock.js';
import { createNetns, destroyAllNetns, enableTracking, type Netns } from '../../helpers/netns.js';
import { oracleCount, oracleEntries, type OracleEntry } from '../../helpers/oracle.js';
import { requireTool } from '../../helpers/tools.js';
import { runCommand } from '../../helpers/cli.js';
import { deleteCommand } from '../../../lib/cli/changes.js';
import { fillCommand } from '../../../lib/cli/fill.js';

/** The same entries every time: protocols, families, ports, marks, status, zones mixed. */
function staticEntries(): NewEntry[] {
  const out: NewEntry[] = [];
  for (let i = 0; i < 1200; i++) {
    const tcp = i % 3 === 0;
    const original: TupleSpec = {
      protocol: tcp ? 'tcp' : 'udp',
      src: `10.${i % 2 === 0 ? 5 : 7}.${(i >> 8) & 255}.${i & 255}`,
      dst: '10.8.0.1',
      sport: 20000 + i,
      dport: i % 4 === 0 ? 443 : 1000 + (i % 50),
    };
    const entry: NewEntry = { original, timeout: 600, mark: i % 4 };
    if (i % 5 === 0) entry.flags = ['SEEN_REPLY', 'ASSURED'];
    if (i % 7 === 0) entry.zone = 3;
    out.push(entry);
  }
  for (let i = 0; i < 200; i++) {
    out.push({ original: { protocol: 'udp', src: `fd00::${(i + 1).toString(16)}`, dst: 'fd00::ffff', sport: 30000 + i, dport: 53 }, timeout: 600, mark: i % 4 });
  }
  return out;
}

/**
 * Entries made and removed all the time until stop(), so the scan walks a changing table. They
 * match none of the filters: conntrack -D gives up at the first entry that went away between its
 * dump and its delete ("such conntrack doesn't exist"), which would end the tool's run early.
 */
function churn(ct: Conntrack): { stop(): Promise<void> } {
  let running = true;
  const loop = (async () => {
    for (let round = 0; running; round++) {
      const batch: NewEntry[] = [];
      for (let i = 0; i < 100; i++) {
        batch.push({ original: { protocol: 'icmp', src: `10.99.${round % 256}.${i}`, dst: '10.8.0.2', icmpType: 8, icmpCode: 0, icmpId: round % 65536 }, timeout: 60 });
      }
      await ct.createMany(batch);
      await ct.deleteMatching({ src: `10.99.${round % 256}.0/24` }, { kernelFlush: false });
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
    },
  };
}

const key = (e: OracleEntry) => `${e.family} ${e.original.protocol} ${e.original.src} ${e.original.sport} ${e.zone ?? 0}`;
const isStatic = (e: OracleEntry) => !e.original.src.startsWith('10.99.');

interface Case {
  filter: EntryFilter | EntryFilter[];
  /** The same, as conntrack -D arguments (one run per filter). */
  tool: string[][];
  /** The library does it with one filtered flush on this kernel (flushSupport()). */
  flush: boolean;
}

const CASES: Case[] = [
  { filter: { protocol: 'udp' }, tool: [['-p', 'udp']], flush: false },
  { filter: { protocol: 'tcp', dport: 443 }, tool: [['-p', 'tcp', '--dport', '443']], flush: false },
  { filter: { src: '10.5.0.0/16' }, tool: [['-s', '10.5.0.0/16']], flush: false },
  { filter: { mark: { value: 1, mask: 3 } }, tool: [['--mark', '1/3']], flush: true },
  { filter: { status: 'ASSURED' }, tool: [['-u', 'ASSURED']], flush: true },
  { filter: { zone: 3 }, tool: [['-w', '3']], flush: true },
  { filter: { family: 'ipv6' }, tool: [['-f', 'ipv6']], flush: true },
  { filter: [{ protocol: 'tcp', dport: 443 }, { mark: 2 }], tool: [['-p', 'tcp', '--dport', '443'], ['--mark', '2']], flush: false },
];

describeIntegration('deleteMatching(), against conntrack -D with the same filters while entries churn', () => {
  let mine: Netns;
  let tools: Netns;
  let ctMine: Conntrack;
  let ctTools: Conntrack;

  beforeAll(async () => {
    mine = await createNetns('bulk delete lib');
    tools = await createNetns('bulk delete tool');
    await enableTracking(mine);
    await enableTracking(tools);
    ctMine = await Conntrack.open({ netns: mine.path });
    ctTools = await Conntrack.open({ netns: tools.path });
  });

  afterAll(async () => {
    await ctMine?.close();
    await ctTools?.close();
    await destroyAllNetns();
  });

  it('this kernel\'s filtered flush was probed: it honours family, mark, status and zone', () => {
    // Linux 6.18 does; an older kernel would say false here and the library then deletes entry by entry.
    expect(binding().flushSupport()).toMatchObject({ family: true, mark: true, status: true, zone: true });
  });

  for (const c of CASES) {
    it(`${JSON.stringify(c.filter)} leaves what conntrack -D ${c.tool.map((a) => a.join(' ')).join(' then ')} leaves`, async () => {
      const entries = staticEntries();
      for (const ct of [ctMine, ctTools]) {
        await ct.flush();
        expect((await ct.createMany(entries)).succeeded).toBe(entries.length);
      }
      const churning = [churn(ctMine), churn(ctTools)];
      let result;
      try {
        await new Promise((resolve) => setTimeout(resolve, 50));
        result = await ctMine.deleteMatching(c.filter);
        for (const args of c.tool) await tools.exec(requireTool('conntrack'), ['-D', ...args], { timeoutMs: 60_000 });
      } finally {
        for (const ch of churning) await ch.stop();
      }

      const left = (await oracleEntries(mine, { labels: false })).filter(isStatic).map(key).sort();
      const toolLeft = (await oracleEntries(tools, { labels: false })).filter(isStatic).map(key).sort();
      expect(left).toEqual(toolLeft);
      expect(left.length).toBeGreaterThan(0);
      expect(left.length).toBeLessThan(entries.length);

      const deletedStatic = entries.length - left.length;
      expect(result.kernelFlush).toBe(c.flush);
      expect(result.matched).toBe(result.deleted + result.alreadyGone + result.failed);
      expect(result.failed).toBe(0);
      if (c.flush) {
        // The count's drop: churn may hide a few.
        expect(result.deleted).toBeGreaterThan(deletedStatic - 200);
        expect(result.deleted).toBeLessThanOrEqual(deletedStatic + 200);
      } else {
        expect(result.deleted).toBeGreaterThanOrEqual(deletedStatic);
        expect(result.scanned).toBeGreaterThanOrEqual(result.matched);
        expect(result.matchedByFilter).toHaveLength(Array.isArray(c.filter) ? c.filter.length : 1);
      }
    });
  }

  it('kernelFlush: false takes the entry-by-entry path for what a flush could do, with exact counts', async () => {
    await ctMine.flush();
    const entries = staticEntries();
    await ctMine.createMany(entries);
    const expected = (await oracleEntries(mine, { labels: false, filter: ['--mark', '1/3'] })).length;
    const result = await ctMine.deleteMatching({ mark: { value: 1, mask: 3 } }, { kernelFlush: false });
    expect(result).toMatchObject({ kernelFlush: false, matched: expected, deleted: expected, alreadyGone: 0, failed: 0, scanned: expected });
    expect(await oracleCount(mine)).toBe(entries.length - expected);
  });

  it('two passes over the same entries at once: each entry is deleted once, the other pass counts it as already gone', async () => {
    await ctMine.flush();
    const many: NewEntry[] = [];
    for (let i = 0; i < 20000; i++) many.push({ original: { protocol: 'udp', src: `10.6.${i >> 8}.${i & 255}`, dst: '10.8.0.1', sport: 1024 + (i % 60000), dport: 53 }, timeout: 600 });
    await ctMine.createMany(many);
    const other = await Conntrack.open({ netns: mine.path });
    try {
      const [a, b] = await Promise.all([ctMine.deleteMatching({ protocol: 'udp' }), other.deleteMatching({ protocol: 'udp' })]);
      expect(a.deleted + b.deleted).toBe(many.length);
      for (const r of [a, b]) expect(r.matched).toBe(r.deleted + r.alreadyGone + r.failed);
      expect(a.matched + b.matched).toBeGreaterThanOrEqual(many.length);
      expect(a.alreadyGone + b.alreadyGone).toBe(a.matched + b.matched - many.length);
      expect(await oracleCount(mine)).toBe(0);
    } finally {
      await other.close();
    }
  });

  it('an abort stops the pass (AbortError) and leaves the rest; a pre-aborted signal deletes nothing; bad filters are refused', async () => {
    await ctMine.flush();
    // The pass is aborted once it has deleted something, whatever the machine's speed: at the
    // first destroy event. Subscribed before the entries exist: with nf_conntrack_events = 2 an
    // entry made while nobody listens never reports its destroy. A sentinel's destroy shows the
    // subscription is live.
    const watching = ctMine.events({ protocol: 'udp' }, { types: ['destroy'] });
    // The subscription starts on its own thread: sentinels until one's destroy arrives (one made
    // before it listened reports nothing).
    const firstDestroy = watching.next();
    let live = false;
    for (let sport = 1; !live; sport++) {
      expect(sport, 'no destroy event for 100 sentinels').toBeLessThan(100);
      const sentinel: TupleSpec = { protocol: 'udp', src: '10.99.99.1', dst: '10.99.99.2', sport, dport: 9 };
      await ctMine.create({ original: sentinel, timeout: 60 });
      await ctMine.delete(sentinel);
      live = await Promise.race([firstDestroy.then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 50))]);
    }
    const many: NewEntry[] = [];
    for (let i = 0; i < 60000; i++) many.push({ original: { protocol: 'udp', src: `10.6.${i >> 8}.${i & 255}`, dst: '10.8.0.1', sport: 1024 + (i % 60000), dport: 53 }, timeout: 600 });
    await ctMine.createMany(many);
    const before = new AbortController();
    before.abort();
    await expect(ctMine.deleteMatching({ protocol: 'udp' }, { signal: before.signal })).rejects.toMatchObject({ name: 'AbortError' });
    expect(await oracleCount(mine)).toBe(many.length);
    const during = new AbortController();
    const pass = ctMine.deleteMatching({ protocol: 'udp' }, { signal: during.signal });
    void watching.next().then(() => during.abort());
    await expect(pass).rejects.toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
    await watching.return?.();
    const left = await oracleCount(mine);
    expect(left).toBeGreaterThan(0);
    expect(left).toBeLessThan(many.length);
    for (const bad of [{}, [], [{ protocol: 'udp' }, {}], { protocol: 'nope' }, null]) {
      await expect(ctMine.deleteMatching(bad as never)).rejects.toMatchObject({ code: expect.stringMatching(/^ERR_CONNTRACK_INVALID_(ARGUMENT|FILTER)$/) });
    }
    expect(await oracleCount(mine)).toBe(left);
  });

  it('conntrack delete runs the native pass and reports its counts', async () => {
    await ctMine.flush();
    await ctMine.createMany(staticEntries());
    const expected = (await oracleEntries(mine, { labels: false, filter: ['-p', 'tcp', '--dport', '443'] })).length;
    const out = await runCommand(deleteCommand, ['--netns', mine.path, '-p', 'tcp', '--dport', '443', '--json']);
    expect(out.code).toBe(0);
    expect(JSON.parse(out.out)).toMatchObject({ deleted: expected, matched: expected, alreadyGone: 0, failed: 0, kernelFlush: false });
    const text = await runCommand(deleteCommand, ['--netns', mine.path, '--mark', '3']);
    expect(text).toMatchObject({ code: 0, out: '' });
    expect(text.err).toMatch(/^conntrack: \d+ flow entries deleted\n$/);
  });
}, { tools: ['conntrack'] });

describeIntegration('createMany() and updateMany(), against conntrack -I and -U', () => {
  let ns: Netns;
  let ct: Conntrack;

  beforeAll(async () => {
    ns = await createNetns('bulk create');
    await enableTracking(ns);
    ct = await Conntrack.open({ netns: ns.path });
  });

  afterAll(async () => {
    await ct?.close();
    await destroyAllNetns();
  });

  const made: Array<{ entry: NewEntry; tool: string[] }> = [
    { entry: { original: { protocol: 'tcp', src: '10.1.0.1', dst: '10.1.0.2', sport: 4000, dport: 443 }, timeout: 300, tcpState: 'ESTABLISHED', mark: 7 },
      tool: ['-p', 'tcp', '-s', '10.1.0.1', '-d', '10.1.0.2', '--sport', '4000', '--dport', '443', '--state', 'ESTABLISHED', '-m', '7', '-t', '300'] },
    // Not with -m: conntrack 1.4.7 -I then sends the mark ANDed with the status bits.
    { entry: { original: { protocol: 'tcp', src: '10.1.0.1', dst: '10.1.0.2', sport: 4001, dport: 443 }, timeout: 300, tcpState: 'SYN_RECV', flags: ['SEEN_REPLY', 'ASSURED'] },
      tool: ['-p', 'tcp', '-s', '10.1.0.1', '-d', '10.1.0.2', '--sport', '4001', '--dport', '443', '--state', 'SYN_RECV', '-u', 'SEEN_REPLY,ASSURED', '-t', '300'] },
    { entry: { original: { protocol: 'udp', src: '2001:db8::1', dst: '2001:db8::2', sport: 5353, dport: 53 }, timeout: 120, zone: 5 },
      tool: ['-p', 'udp', '-s', '2001:db8::1', '-d', '2001:db8::2', '--sport', '5353', '--dport', '53', '-w', '5', '-t', '120'] },
    { entry: { original: { protocol: 'icmp', src: '10.1.0.1', dst: '10.1.0.3', icmpType: 8, icmpCode: 0, icmpId: 99 }, timeout: 30 },
      tool: ['-p', 'icmp', '-s', '10.1.0.1', '-d', '10.1.0.3', '--icmp-type', '8', '--icmp-code', '0', '--icmp-id', '99', '-t', '30'] },
    { entry: { original: { protocol: 'udp', src: '10.1.0.1', dst: '10.1.0.4', sport: 7000, dport: 7001 }, reply: { protocol: 'udp', src: '10.1.0.9', dst: '10.1.0.1', sport: 7001, dport: 7000 }, timeout: 60 },
      tool: ['-p', 'udp', '-s', '10.1.0.1', '-d', '10.1.0.4', '--sport', '7000', '--dport', '7001', '-r', '10.1.0.9', '-q', '10.1.0.1', '--reply-port-src', '7001', '--reply-port-dst', '7000', '-t', '60'] },
  ];

  function comparable(e: OracleEntry) {
    const { id, timeout, deltaTime, use, ...rest } = e;
    void id; void deltaTime; void use;
    return { ...rest, timeout: Math.round((timeout ?? 0) / 10) };
  }

  it('makes the entries conntrack -I makes', async () => {
    for (const { tool } of made) await ns.exec(requireTool('conntrack'), ['-I', ...tool]);
    const byTool = (await oracleEntries(ns, { labels: false })).map(comparable);
    await ct.flush();
    const result = await ct.createMany(made.map((m) => m.entry));
    expect(result).toEqual({ total: made.length, succeeded: made.length, failed: 0, failedByCode: {}, failures: [] });
    const byLib = (await oracleEntries(ns, { labels: false })).map(comparable);
    const order = (list: ReturnType<typeof comparable>[]) => [...list].sort((a, b) => JSON.stringify(a.original).localeCompare(JSON.stringify(b.original)));
    expect(order(byLib)).toEqual(order(byTool));
    await ct.flush();
  });

  it('reports each failing item by index and code, and creates the others (an async iterable too)', async () => {
    const ok = (sport: number): NewEntry => ({ original: { protocol: 'udp', src: '10.2.0.1', dst: '10.2.0.2', sport, dport: 53 }, timeout: 60 });
    async function* items(): AsyncGenerator<NewEntry> {
      yield ok(1);
      yield { original: { protocol: 'udp', src: '10.2.0.300', dst: '10.2.0.2', sport: 2, dport: 53 }, timeout: 60 };
      yield ok(3);
      yield ok(1); // a taken tuple
      yield null as never;
      for (let sport = 10; sport < 5010; sport++) yield ok(sport);
    }
    const result = await ct.createMany(items(), { batchSize: 128, maxFailures: 2 });
    expect(result).toMatchObject({ total: 5005, succeeded: 5002, failed: 3 });
    expect(result.failedByCode).toEqual({ ERR_CONNTRACK_INVALID_ARGUMENT: 2, ERR_CONNTRACK_EXISTS: 1 });
    expect(result.failures.map((f) => [f.index, f.code])).toEqual([[1, 'ERR_CONNTRACK_INVALID_ARGUMENT'], [3, 'ERR_CONNTRACK_EXISTS']]);
    expect(result.failures[1]).toMatchObject({ errno: 17, item: ok(1) });
    expect(await oracleCount(ns)).toBe(5002);
    await ct.flush();
  });

  it('updateMany() changes marks, timeouts and labels as conntrack -U would; a missing entry is ERR_CONNTRACK_NOT_FOUND', async () => {
    await ct.createMany(made.map((m) => m.entry));
    const udp6 = made[2]?.entry.original as TupleSpec;
    const result = await ct.updateMany([
      { target: made[0]?.entry.original as TupleSpec, changes: { mark: 42, timeout: 1000 } },
      { target: { ...udp6, zone: 5 }, changes: { mark: 43 } },
      { target: { ...(made[0]?.entry.original as TupleSpec), sport: 1 }, changes: { mark: 1 } },
      { target: made[3]?.entry.original as TupleSpec, changes: {} },
    ]);
    expect(result).toMatchObject({ total: 4, succeeded: 2, failed: 2 });
    expect(result.failures.map((f) => [f.index, f.code])).toEqual([[2, 'ERR_CONNTRACK_NOT_FOUND'], [3, 'ERR_CONNTRACK_INVALID_ARGUMENT']]);
    const listed = await oracleEntries(ns, { labels: false });
    const tcp = listed.find((e) => e.original.protocol === 'tcp' && e.original.sport === 4000);
    expect(tcp?.mark).toBe(42);
    expect(tcp?.timeout).toBeGreaterThan(990);
    expect(listed.find((e) => e.family === 'ipv6')?.mark).toBe(43);
    // Labels in a namespace without a `ct label` rule: refused per item, and the mark sent with them is not applied.
    const labelled = await ct.updateMany([{ target: made[0]?.entry.original as TupleSpec, changes: { labels: [3], mark: 9 } }]);
    expect(labelled.failures.map((f) => f.code)).toEqual(['ERR_CONNTRACK_UNAVAILABLE']);
    expect((await ct.get(made[0]?.entry.original as TupleSpec))?.mark).toBe(42);
    await ct.flush();
  });

  it('conntrack fill makes N unique entries in the ranges given; too many for the ranges is a usage error', async () => {
    // More than one address pair's 64,512 ports, and more than the 65,536 entries 6.x hosts with
    // 4 GiB or less allow: room is made under the global-limits lock.
    const limits = await holdGlobalLimits('exclusive');
    try {
      ensureRoom(limits, 70_000 + 100);
      await fillAndCheck();
    } finally {
      limits.release();
    }
  }, 600_000);

  async function fillAndCheck(): Promise<void> {
    const out = await runCommand(fillCommand, ['--netns', ns.path, '--count', '70000', '--src', '10.40.0.0/31', '--dst', '10.41.0.0/30', '--timeout', '300', '--mark', '5', '--json']);
    expect(out.code).toBe(0);
    expect(JSON.parse(out.out)).toMatchObject({ created: 70000, failed: 0 });
    const ids = await oracleEntries(ns, { labels: false, filter: ['-m', '5'] });
    expect(ids).toHaveLength(70000);
    expect(new Set(ids.map((e) => `${e.original.src} ${e.original.dst} ${e.original.sport}`)).size).toBe(70000);
    // 64,512 source ports per address pair: the first pair, then 5,488 of the second.
    expect(new Set(ids.map((e) => `${e.original.src} ${e.original.dst}`))).toEqual(new Set(['10.40.0.0 10.41.0.0', '10.40.0.0 10.41.0.1']));
    expect(ids.every((e) => e.original.protocol === 'udp' && e.original.dport === 53 && e.mark === 5)).toBe(true);
    const tcp = await runCommand(fillCommand, ['--netns', ns.path, '--count', '10', '--proto', 'tcp']);
    expect(tcp).toMatchObject({ code: 0, out: '' });
    expect(tcp.err).toMatch(/^conntrack: 10 flow entries created in/);
    expect((await ct.get({ protocol: 'tcp', src: '198.18.0.0', dst: '198.19.0.0', sport: 1024, dport: 443 }))?.tcp?.state).toBe('ESTABLISHED');
    expect(await runCommand(fillCommand, ['--netns', ns.path, '--count', '3', '--src', '10.40.0.0/32', '--dst', '10.41.0.0/32', '--proto', 'icmp'])).toMatchObject({ code: 0 });
    const tooMany = await runCommand(fillCommand, ['--netns', ns.path, '--count', String(64512 * 8 + 1), '--src', '10.40.0.0/31', '--dst', '10.41.0.0/30']);
    expect(tooMany.code).toBe(2);
    expect(tooMany.err).toContain('too few');
    expect(await runCommand(fillCommand, ['--netns', ns.path])).toMatchObject({ code: 2 });
    await ct.flush();
  }
}, { tools: ['conntrack'] });
