/**
 * ct.events() against `conntrack -E` in the same namespace: both subscribe to the kernel's
 * NFNLGRP_CONNTRACK_* groups, so both see the same multicast sequence. Real flows on loopback
 * make NEW and UPDATE events; `conntrack -D` makes DESTROY events. Overflow is forced with a
 * tiny receive buffer and a consumer that does not read while thousands of entries appear.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync } from 'node:fs';
import type { ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Conntrack, type ConntrackEvent, type OverflowEvent } from '../../../lib/index.js';
import { BUILT_CLI } from '../../helpers/cli.js';
import { describeIntegration } from '../../helpers/gate.js';
import { createNetns, destroyAllNetns, enableTracking, type Netns } from '../../helpers/netns.js';
import { oracleEntries, parseConntrackLine, type OracleEntry } from '../../helpers/oracle.js';
import { netlinkSockets } from '../../helpers/sockets.js';
import { requireTool } from '../../helpers/tools.js';
import { fillUdp, openFlows } from '../../helpers/traffic.js';

type Item = ConntrackEvent | OverflowEvent;

interface OracleEvent {
  type: 'new' | 'update' | 'destroy';
  entry: OracleEntry;
}

/** `conntrack -E -o id` in the namespace, its lines parsed as they come. */
function startOracle(ns: Netns): { events: OracleEvent[]; stop(): Promise<void>; child: ChildProcess } {
  const child = ns.spawn(requireTool('conntrack'), ['-E', '-o', 'id'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const events: OracleEvent[] = [];
  let pending = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    pending += chunk.toString();
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) {
      const match = /^\s*\[(NEW|UPDATE|DESTROY)\]\s+(.*)$/.exec(line);
      if (match === null) continue;
      events.push({ type: (match[1] as string).toLowerCase() as OracleEvent['type'], entry: parseConntrackLine(match[2] as string) });
    }
  });
  const exited = once(child, 'exit');
  return {
    events,
    child,
    async stop() {
      // SIGINT: conntrack flushes its output and exits 0.
      child.kill('SIGINT');
      await exited;
    },
  };
}

/** Collects a running iterator's items into `into` until it ends or fails. */
function collect(iterator: AsyncIterable<Item>, into: Item[]): Promise<unknown> {
  return (async () => {
    try {
      for await (const item of iterator) into.push(item);
      return undefined;
    } catch (err) {
      return err;
    }
  })();
}

async function until(what: string, condition: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** One UDP datagram from 127.0.0.1 to 127.0.0.1:port, sent inside the namespace. */
async function udpDatagram(ns: Netns, port: number): Promise<void> {
  await ns.exec(process.execPath, ['-e',
    `const s = require('dgram').createSocket('udp4'); s.send('x', ${port}, '127.0.0.1', () => s.close())`]);
}

function threadCount(): number {
  return readdirSync('/proc/self/task').length;
}

const PROBE_PORT = 7;

describeIntegration('events() against conntrack -E', () => {
  let ns: Netns;
  const all: Item[] = [];
  const destroyTcp: Item[] = [];
  let oracle: ReturnType<typeof startOracle>;
  let ended: Promise<unknown>;
  let endedTcp: Promise<unknown>;
  const abort = new AbortController();
  let ct: Conntrack;
  let baseline: { sockets: number; threads: number };
  let live: { sockets: number; threads: number };
  let probeIds: Set<number>;

  beforeAll(async () => {
    ns = await createNetns('events');
    await enableTracking(ns);
    baseline = { sockets: await netlinkSockets(ns), threads: threadCount() };
    ct = await Conntrack.open({ netns: ns.path });
    ended = collect(ct.events(undefined, { signal: abort.signal }), all);
    endedTcp = collect(ct.events({ protocol: 'tcp' }, { types: ['destroy'], signal: abort.signal }), destroyTcp);
    oracle = startOracle(ns);
    // Subscriptions happen on other threads and in another process: probe until all three listen.
    // Each probe is a new entry (its own source port); its events are left out of the comparison.
    for (let attempt = 0; ; attempt++) {
      if (attempt > 100) throw new Error('the subscriptions never saw a probe');
      await udpDatagram(ns, PROBE_PORT);
      await sleep(50);
      const seenByLibrary = all.some((e) => e.type === 'new' && e.entry.original.dport === PROBE_PORT);
      const seenByOracle = oracle.events.some((e) => e.type === 'new' && e.entry.original.dport === PROBE_PORT);
      // The tcp/destroy subscription cannot see a UDP probe; it subscribed before the oracle started.
      if (seenByLibrary && seenByOracle) break;
    }
    await sleep(100);
    live = { sockets: await netlinkSockets(ns), threads: threadCount() };
    probeIds = new Set([...oracle.events, ...all.filter((e): e is ConntrackEvent => e.type !== 'overflow')]
      .filter((e) => e.entry.original.dport === PROBE_PORT).map((e) => e.entry.id));

    const flows = await openFlows(ns, [
      { kind: 'tcp-established', family: 4, port: 8001 },
      { kind: 'tcp-established', family: 6, port: 8002 },
      { kind: 'udp-reply', family: 4, port: 8003 },
      { kind: 'icmp-echo', family: 4 },
    ]);
    await flows.poke();
    await flows.close(); // FIN exchanges: TCP updates
    // Delete the test flows (not the probes): destroy events for each.
    await ns.exec(requireTool('conntrack'), ['-D', '-p', 'tcp']);
    await ns.exec(requireTool('conntrack'), ['-D', '-p', 'udp', '--orig-port-dst', '8003']);
    await ns.exec(requireTool('conntrack'), ['-D', '-p', 'icmp']);
    const testEvents = (list: readonly { type: string; entry?: { id: number } }[]) =>
      list.filter((e) => e.entry !== undefined && !probeIds.has(e.entry.id));
    // Both sides have seen the last destroy when they hold the same number of destroy events.
    await until('the destroy events', () => {
      const mine = testEvents(all).filter((e) => e.type === 'destroy').length;
      const theirs = testEvents(oracle.events).filter((e) => e.type === 'destroy').length;
      return mine >= 4 && mine === theirs;
    });
    await sleep(200);
    await oracle.stop();
    abort.abort();
    await Promise.all([ended, endedTcp]);
  }, 60_000);

  afterAll(async () => {
    abort.abort();
    oracle?.child.kill('SIGKILL');
    await ct?.close();
    await destroyAllNetns();
  });

  it('reports the same events, in the same order, with the same ids as conntrack -E', () => {
    const mine = all.filter((e): e is ConntrackEvent => e.type !== 'overflow' && !probeIds.has(e.entry.id));
    const theirs = oracle.events.filter((e) => !probeIds.has(e.entry.id));
    expect(mine.length).toBeGreaterThanOrEqual(12);
    expect(mine.map((e) => [e.type, e.entry.id])).toEqual(theirs.map((e) => [e.type, e.entry.id]));
    // Each flow was reported created and destroyed; TCP also changed state in between.
    for (const protocol of ['tcp', 'udp', 'icmp'] as const) {
      const types = new Set(mine.filter((e) => e.entry.original.protocol === protocol).map((e) => e.type));
      expect(types.has('new') && types.has('destroy'), protocol).toBe(true);
    }
    expect(mine.filter((e) => e.entry.original.protocol === 'tcp' && e.type === 'update').length).toBeGreaterThanOrEqual(4);
    expect(all.some((e) => e.type === 'overflow')).toBe(false);
  });

  it('decodes each event as the oracle prints it: tuples, protocol, TCP state', () => {
    const mine = all.filter((e): e is ConntrackEvent => e.type !== 'overflow' && !probeIds.has(e.entry.id));
    const theirs = oracle.events.filter((e) => !probeIds.has(e.entry.id));
    mine.forEach((event, i) => {
      const expected = theirs[i] as OracleEvent;
      const what = `${event.type} ${event.entry.id}`;
      expect(event.entry.family, what).toBe(expected.entry.family);
      expect(event.entry.original, what).toEqual(expected.entry.original);
      expect(event.entry.reply, what).toEqual(expected.entry.reply);
      expect(event.entry.tcp?.state, what).toBe(expected.entry.tcp?.state);
    });
    // A destroy event says the entry is dying.
    for (const event of mine.filter((e) => e.type === 'destroy')) expect(event.entry.flags).toContain('DYING');
  });

  it('filters natively and subscribes only to the types asked for', () => {
    const expected = oracle.events.filter((e) => e.type === 'destroy' && e.entry.original.protocol === 'tcp');
    expect(expected).toHaveLength(2);
    expect(destroyTcp.map((e) => (e.type === 'overflow' ? e : [e.type, e.entry.id])))
      .toEqual(expected.map((e) => [e.type, e.entry.id]));
  });

  it('an abort ends the iterations with an AbortError and gives back their sockets and threads', async () => {
    // While they ran: the handle's socket and one per subscription, and threads of their own.
    expect(live.sockets).toBe(baseline.sockets + 3);
    expect(live.threads).toBeGreaterThan(baseline.threads);
    expect(await ended).toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
    expect(await endedTcp).toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
    expect(await netlinkSockets(ns)).toBe(baseline.sockets + 1);
    await ct.close();
    expect(await netlinkSockets(ns)).toBe(baseline.sockets);
    await until('threads to end', () => threadCount() <= baseline.threads);
  });
}, { tools: ['conntrack'] });

describeIntegration('events() when the consumer falls behind', () => {
  let ns: Netns;

  beforeAll(async () => {
    ns = await createNetns('events overflow');
    await enableTracking(ns);
  });

  afterAll(destroyAllNetns);

  it('reports an overflow where events were lost, and goes on with the events after it', async () => {
    await using ct = await Conntrack.open({ netns: ns.path });
    const iterator = ct.events(undefined, { types: ['new'], receiveBufferBytes: 4096, batchSize: 16 });
    const first = iterator.next(); // subscribes; the probe below says when
    for (let attempt = 0; ; attempt++) {
      if (attempt > 100) throw new Error('the subscription never saw a probe');
      await udpDatagram(ns, PROBE_PORT);
      if (await Promise.race([first.then(() => true), sleep(50).then(() => false)])) break;
    }
    // Nobody reads now: 5,000 new entries overrun a 4 KiB socket buffer and the short queues.
    const FILL = 5000;
    await fillUdp(ns, FILL, { port: 9 });

    // Read what got through, until nothing more comes for half a second.
    const items: Item[] = [(await first).value as Item];
    let pendingNext = iterator.next();
    for (;;) {
      const next = await Promise.race([pendingNext, sleep(500).then(() => null)]);
      if (next === null) break;
      items.push(next.value as Item);
      pendingNext = iterator.next();
    }
    // After the loss the subscription still works: a new entry is reported.
    await udpDatagram(ns, 7777);
    for (;;) {
      const next = await Promise.race([pendingNext, sleep(10_000).then(() => null)]);
      if (next === null) throw new Error(`no marker event after ${items.length} items`);
      const item = next.value as Item;
      items.push(item);
      if (item.type === 'new' && item.entry.original.dport === 7777) break;
      pendingNext = iterator.next();
    }
    const overflows = items.filter((e): e is OverflowEvent => e.type === 'overflow');
    const filled = items.filter((e) => e.type === 'new' && e.entry.original.dport === 9);
    expect(overflows.length).toBeGreaterThan(0);
    expect(filled.length).toBeLessThan(FILL);
    // The count in the items is the native counter: nothing was reported twice or dropped.
    expect(overflows.reduce((n, o) => n + o.count, 0)).toBe(iterator.counters().overflows);
    // The marker came after the last overflow notice.
    expect(items.findIndex((e) => e.type === 'overflow')).toBeLessThan(items.length - 1);
    // Every event delivered is a distinct entry: nothing duplicated around the loss.
    const ids = filled.map((e) => (e as ConntrackEvent).entry.id);
    expect(new Set(ids).size).toBe(ids.length);
    await iterator.return?.();
  }, 60_000);

  it('says so at the first next() when the namespace has events switched off', async () => {
    const before = await ns.sysctl('net.netfilter.nf_conntrack_events');
    await ns.sysctl('net.netfilter.nf_conntrack_events', 0);
    try {
      await using ct = await Conntrack.open({ netns: ns.path });
      const iterator = ct.events();
      await expect(iterator.next()).rejects.toMatchObject({
        code: 'ERR_CONNTRACK_UNAVAILABLE', message: expect.stringContaining('nf_conntrack_events = 0'),
      });
      // The subscription is gone with it: a second next() fails the same way, at once.
      await expect(iterator.next()).rejects.toMatchObject({ code: 'ERR_CONNTRACK_UNAVAILABLE' });
    } finally {
      await ns.sysctl('net.netfilter.nf_conntrack_events', Number(before));
    }
    // Switched on again, the same call just listens.
    await using ct = await Conntrack.open({ netns: ns.path });
    const quiet = new AbortController();
    const first = ct.events(undefined, { signal: quiet.signal }).next();
    setTimeout(() => quiet.abort(), 200);
    await expect(first).rejects.toMatchObject({ name: 'AbortError' });
  });

  it('rejects bad options with ERR_CONNTRACK_INVALID_ARGUMENT before subscribing', async () => {
    await using ct = await Conntrack.open({ netns: ns.path });
    const checks: Array<[unknown, RegExp]> = [
      [{ types: ['created'] }, /types must be/],
      [{ types: [] }, /types must be/],
      [{ receiveBufferBytes: 100 }, /receiveBufferBytes/],
      [{ batchSize: 0 }, /batchSize/],
      [{ signal: 'no' }, /signal/],
    ];
    for (const [options, message] of checks) {
      expect(() => ct.events(undefined, options as never), JSON.stringify(options))
        .toThrow(expect.objectContaining({ code: 'ERR_CONNTRACK_INVALID_ARGUMENT', message: expect.stringMatching(message) }));
    }
  });
}, { tools: ['conntrack'] });

describeIntegration('conntrack events (CLI)', () => {
  let ns: Netns;

  beforeAll(async () => {
    ns = await createNetns('events cli');
    await enableTracking(ns);
  });

  afterAll(destroyAllNetns);

  /** Starts `conntrack events ARGS` and probes with UDP datagrams to PROBE_PORT until it prints. */
  async function startCli(args: readonly string[]) {
    const child = spawn(process.execPath, [BUILT_CLI, 'events', '--netns', ns.path, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString(); });
    child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
    const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
    for (let attempt = 0; stdout === ''; attempt++) {
      if (attempt > 100) throw new Error(`conntrack events never printed; stderr: ${stderr}`);
      await udpDatagram(ns, PROBE_PORT);
      await sleep(50);
    }
    return { child, exited, out: () => stdout, err: () => stderr };
  }

  it('prints new and destroy events as conntrack -E does, and a count on Ctrl-C', async () => {
    const run = await startCli(['-p', 'udp']);
    await udpDatagram(ns, 9996);
    const [entry] = (await oracleEntries(ns)).filter((e) => e.original.dport === 9996);
    await ns.exec(requireTool('conntrack'), ['-D', '-p', 'udp', '--orig-port-dst', '9996']);
    await until('the destroy line', () => run.out().includes('[DESTROY]') && run.out().includes('dport=9996'));
    run.child.kill('SIGINT');
    expect(await run.exited).toEqual([0, null]);
    const lines = run.out().trim().split('\n');
    const ours = lines.filter((line) => line.includes(' dport=9996 '));
    expect(ours).toHaveLength(2);
    expect(ours[0]).toMatch(/^\s+\[NEW\] ipv4 +2 udp +17 \d+ src=127\.0\.0\.1 dst=127\.0\.0\.1 sport=\d+ dport=9996 \[UNREPLIED\] /);
    expect(ours[1]).toMatch(/^\[DESTROY\] ipv4 /);
    for (const line of ours) expect(line.endsWith(` id=${entry?.id}`), line).toBe(true);
    expect(run.err()).toBe(`conntrack: ${lines.length} events shown\n`);
  });

  it('--jsonl --count N prints N events as JSON and exits 0 by itself', async () => {
    const run = await startCli(['-p', 'udp', '--jsonl', '--count', '4', '--types', 'new']);
    const probes = run.out().trim().split('\n').length; // one, rarely two: probing stops at the first line
    for (let i = probes; i < 4; i++) await udpDatagram(ns, 9995);
    expect(await run.exited).toEqual([0, null]);
    const events = run.out().trim().split('\n').map((line) => JSON.parse(line) as { type: string; entry: { id: number; original: { dport: number } } });
    expect(events).toHaveLength(4);
    expect(events.every((e) => e.type === 'new')).toBe(true);
    expect(events.map((e) => e.entry.original.dport)).toEqual([...Array(probes).fill(PROBE_PORT), ...Array(4 - probes).fill(9995)]);
    expect(new Set(events.map((e) => e.entry.id)).size).toBe(4);
  });

  it('bad options exit 2 with the usage, before subscribing', async () => {
    for (const args of [['--types', 'created'], ['--count', '0'], ['--json']]) {
      const child = spawn(process.execPath, [BUILT_CLI, 'events', '--netns', ns.path, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
      const [code] = await once(child, 'exit');
      expect(code, args.join(' ')).toBe(2);
      expect(stderr, args.join(' ')).toContain('usage: conntrack events');
    }
  });
}, { tools: ['conntrack'] });
