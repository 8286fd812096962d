/**
 * The life of handles and dumps: every way a dump can end (abort, break, destroy, close) gives its
 * socket and threads back; slow consumers get everything with bounded memory; netns options that
 * are wrong, a pid, and processes without the capabilities needed.
 */
import { once } from 'node:events';
import { chmodSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Conntrack, ConntrackError, type ConntrackEntry } from '../../../lib/index.js';
import { runChild } from '../../helpers/child.js';
import { BUILT_INDEX } from '../../helpers/cli.js';
import { describeIntegration, findTool } from '../../helpers/gate.js';
import { ensureRoom, holdGlobalLimits, type GlobalLimitsLock } from '../../helpers/global-lock.js';
import { createNetns, destroyAllNetns, enableTracking, type Netns } from '../../helpers/netns.js';
import { oracleCount, oracleIds } from '../../helpers/oracle.js';
import { netlinkSockets } from '../../helpers/sockets.js';
import { fillUdp } from '../../helpers/traffic.js';
import { requireTool } from '../../helpers/tools.js';

const N = 100_000;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

function threadCount(): number {
  return readdirSync('/proc/self/task').length;
}

async function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

function expectConntrackError(err: unknown, code: string): ConntrackError {
  expect(err).toBeInstanceOf(ConntrackError);
  expect((err as ConntrackError).code, (err as Error).message).toBe(code);
  return err as ConntrackError;
}

function expectAbortError(err: unknown): void {
  expect(err).toBeInstanceOf(Error);
  expect((err as Error).name).toBe('AbortError');
  expect((err as { code?: unknown }).code).toBe('ABORT_ERR');
}

describeIntegration('handle and dump lifecycle', () => {
  let ns: Netns;
  let limits: GlobalLimitsLock | undefined;
  let baseline: { sockets: number; threads: number };

  /** Back to what the process held before the handle/dump under test. */
  async function expectReleased(): Promise<void> {
    await waitFor('netlink sockets back to the baseline', async () => (await netlinkSockets(ns)) <= baseline.sockets);
    await waitFor('threads back to the baseline', () => threadCount() <= baseline.threads);
    expect(await netlinkSockets(ns)).toBe(baseline.sockets);
  }

  beforeAll(async () => {
    // 6.x kernels on machines with 4 GiB or less default to 65,536: make room under the lock.
    limits = await holdGlobalLimits('exclusive');
    ensureRoom(limits, N);
    ns = await createNetns('lifecycle');
    await enableTracking(ns);
    expect(await fillUdp(ns, N)).toEqual({ sent: N });
    // Warm up (addon loaded, libuv pool started, one full dump), then take the baseline.
    {
      const ct = await Conntrack.open({ netns: ns.path });
      for await (const batch of ct.batches()) void batch;
      await ct.close();
    }
    await sleep(100);
    baseline = { sockets: await netlinkSockets(ns), threads: threadCount() };
  }, 300_000);

  afterAll(async () => {
    await destroyAllNetns();
    limits?.release();
  });

  it('an aborted iteration rejects with an AbortError at once and gives back its socket and threads', async () => {
    {
      await using ct = await Conntrack.open({ netns: ns.path });
      const controller = new AbortController();
      const iterator = ct.entries(undefined, { signal: controller.signal });
      let seen = 0;
      const err = await rejectionOf((async () => {
        for await (const entry of iterator) {
          void entry;
          if (++seen === 10) {
            // The dump is live: its own socket (besides the handle's) and threads.
            expect(await netlinkSockets(ns)).toBe(baseline.sockets + 2);
            expect(threadCount()).toBeGreaterThan(baseline.threads);
            controller.abort();
          }
        }
      })());
      expect(err).toBeInstanceOf(Error);
      expect((err as Error).name).toBe('AbortError');
      // Aborted means stopped: not one more entry after abort(), even from a batch already in JS.
      expect(seen).toBe(10);
      // Reading again still rejects.
      await expect(iterator.next()).rejects.toSatisfy((e: unknown) => (e as Error).name === 'AbortError');
      expect((await ct.count()).entries).toBe(N); // the handle itself is unaffected
    }
    await expectReleased();
  });

  it("the AbortError of a plain abort() has Node's code ABORT_ERR", async () => {
    {
      await using ct = await Conntrack.open({ netns: ns.path });
      const controller = new AbortController();
      const iterator = ct.entries(undefined, { signal: controller.signal });
      expect((await iterator.next()).done).toBe(false);
      controller.abort();
      expectAbortError(await rejectionOf((async () => { for await (const e of iterator) void e; })()));
    }
    await expectReleased();
  });

  it('an abort with a reason of its own rejects with an AbortError whose cause is the reason', async () => {
    {
      await using ct = await Conntrack.open({ netns: ns.path });
      const controller = new AbortController();
      const iterator = ct.entries(undefined, { signal: controller.signal });
      expect((await iterator.next()).done).toBe(false);
      const reason = new Error('enough');
      controller.abort(reason);
      const err = await rejectionOf((async () => { for await (const e of iterator) void e; })());
      expectAbortError(err);
      expect((err as Error).cause).toBe(reason);
    }
    await expectReleased();
  });

  it('a signal aborted before the dump starts: the first next() rejects with an AbortError', async () => {
    {
      await using ct = await Conntrack.open({ netns: ns.path });
      const early = new AbortController();
      early.abort(new Error('before'));
      let err: unknown;
      try {
        await ct.entries(undefined, { signal: early.signal }).next();
      } catch (e) {
        err = e;
      }
      expectAbortError(err);
      // batches() and stream() as well.
      expectAbortError(await rejectionOf((async () => { for await (const b of ct.batches(undefined, { signal: early.signal })) void b; })()));
    }
    await expectReleased();
  });

  it('break out of for-await ends the dump and gives back its socket and threads', async () => {
    {
      await using ct = await Conntrack.open({ netns: ns.path });
      let seen = 0;
      for await (const entry of ct.entries()) {
        void entry;
        if (++seen === 1000) break;
      }
      expect(seen).toBe(1000);
      // The dump's socket is gone while the handle stays open and usable.
      await waitFor('the dump socket to close', async () => (await netlinkSockets(ns)) === baseline.sockets + 1);
      expect((await ct.count()).entries).toBe(N);
    }
    await expectReleased();
  });

  it('break out of batches() ends the dump too', async () => {
    {
      await using ct = await Conntrack.open({ netns: ns.path });
      for await (const batch of ct.batches()) {
        expect(batch.length).toBeGreaterThan(0);
        break;
      }
      await waitFor('the dump socket to close', async () => (await netlinkSockets(ns)) === baseline.sockets + 1);
    }
    await expectReleased();
  });

  it('stream().destroy() ends the dump and gives back its socket and threads', async () => {
    {
      await using ct = await Conntrack.open({ netns: ns.path });
      const stream = ct.stream();
      let seen = 0;
      stream.on('data', () => {
        if (++seen === 500) stream.destroy();
      });
      await once(stream, 'close');
      expect(seen).toBeGreaterThanOrEqual(500);
      expect(seen).toBeLessThan(N);
      expect(stream.destroyed).toBe(true);
      await waitFor('the dump socket to close', async () => (await netlinkSockets(ns)) === baseline.sockets + 1);
    }
    await expectReleased();
  });

  it('close() during a dump rejects the iteration with ERR_CONNTRACK_CLOSED; close() twice is fine; later calls reject', async () => {
    const ct = await Conntrack.open({ netns: ns.path });
    try {
      const iterator = ct.entries();
      const batches = ct.batches();
      expect((await iterator.next()).done).toBe(false);
      expect((await batches.next()).done).toBe(false);
      await ct.close();
      expect(ct.closed).toBe(true);
      let afterClose = 0;
      expectConntrackError(await rejectionOf((async () => { for await (const e of iterator) { void e; afterClose++; } })()), 'ERR_CONNTRACK_CLOSED');
      expectConntrackError(await rejectionOf(batches.next()), 'ERR_CONNTRACK_CLOSED');
      await ct.close();
      await ct[Symbol.asyncDispose]();
      expectConntrackError(await rejectionOf(ct.count()), 'ERR_CONNTRACK_CLOSED');
      expectConntrackError(await rejectionOf(ct.stats()), 'ERR_CONNTRACK_CLOSED');
      expectConntrackError(await rejectionOf(ct.expectationStats()), 'ERR_CONNTRACK_CLOSED');
      // Starting a dump on a closed handle throws at once.
      expect(() => ct.entries()).toThrow(expect.objectContaining({ code: 'ERR_CONNTRACK_CLOSED' }));
      await expectReleased();
      // "Running dumps end with ERR_CONNTRACK_CLOSED": no entry comes after close().
      expect(afterClose).toBe(0);
    } finally {
      await ct.close();
    }
  });

  it('close() with a request under way: it gets its answer, and later ones ERR_CONNTRACK_CLOSED', async () => {
    const ct = await Conntrack.open({ netns: ns.path });
    // The call sends its request at once (the handle is idle), before close(). If the kernel has
    // not answered within the send, the request finishes on its thread before the socket closes.
    const count = ct.count();
    await ct.close();
    await ct.close();
    expect(await count).toMatchObject({ entries: N });
    expectConntrackError(await rejectionOf(ct.stats()), 'ERR_CONNTRACK_CLOSED');
    await expectReleased();
  });

  it('await using closes the handle and its dumps at the end of the block', async () => {
    let leaked: Conntrack | undefined;
    let iterator: AsyncIterator<ConntrackEntry> | undefined;
    {
      await using ct = await Conntrack.open({ netns: ns.path });
      leaked = ct;
      iterator = ct.entries();
      expect((await iterator.next()).done).toBe(false);
      expect(await netlinkSockets(ns)).toBe(baseline.sockets + 2);
    }
    expect(leaked.closed).toBe(true);
    await expectReleased();
    // The dump ended with the handle: reading on ends in ERR_CONNTRACK_CLOSED (after at most the
    // rest of the batch already in JS; see the close() test for that).
    let after = 0;
    expectConntrackError(await rejectionOf((async () => { for (;;) { if ((await iterator.next()).done) return; after++; } })()), 'ERR_CONNTRACK_CLOSED');
    expect(after).toBeLessThan(N);
  });

  /**
   * Polls `messages()` until it stops moving (the same value twice, 200 ms apart): how far native
   * code read ahead of a consumer that does not ask for more.
   */
  async function stalledAt(messages: () => number): Promise<number> {
    let last = messages();
    for (let i = 0; i < 100; i++) {
      await sleep(200);
      const now = messages();
      if (now === last) return now;
      last = now;
    }
    throw new Error(`the dump kept reading without a consumer (${last} messages after 20 s)`);
  }

  it('a slow consumer of a 100,000-entry dump: reading ahead stops while it pauses, and it gets every entry', async () => {
    await using ct = await Conntrack.open({ netns: ns.path });
    const iterator = ct.entries(undefined, { batchSize: 256 });
    const tuples = new Set<string>();
    const take = (e: ConntrackEntry) => tuples.add(`${e.original.src} ${e.original.sport} ${e.original.dst} ${e.original.dport}`);
    const first = await iterator.next();
    expect(first.done).toBe(false);
    take(first.value as ConntrackEntry);

    // The consumer pauses: native code stops reading (backpressure) well before the table's end,
    // instead of holding the rest of it in memory.
    const ahead = await stalledAt(() => iterator.counters().messages);
    expect(ahead).toBeLessThan(N / 2);

    let seen = 1;
    for (;;) {
      const next = await iterator.next();
      if (next.done) break;
      take(next.value);
      seen++;
      // Pausing again in the first half: again it stops short of the rest of the table.
      if (seen === N / 4) expect(await stalledAt(() => iterator.counters().messages)).toBeLessThan(seen + N / 2);
    }
    expect(seen).toBe(N);
    expect(tuples.size).toBe(N);
    expect(iterator.counters()).toMatchObject({ entries: N, duplicates: 0 });
  }, 120_000);

  it('stream() piped into a slow Writable (backpressure) delivers every entry', async () => {
    await using ct = await Conntrack.open({ netns: ns.path });
    const source = ct.stream(undefined, { batchSize: 512 });
    let received = 0;
    const ids: number[] = [];
    const sink = new Writable({
      objectMode: true,
      highWaterMark: 16,
      write(entry: ConntrackEntry, _encoding, callback) {
        received++;
        ids.push(entry.id);
        // Slow: every thousandth entry waits a little, every one waits a turn.
        if (received % 1000 === 0) setTimeout(callback, 5);
        else setImmediate(callback);
      },
    });
    let maxBuffered = 0;
    source.on('data', () => {
      maxBuffered = Math.max(maxBuffered, source.readableLength);
    });
    await pipeline(source, sink);
    expect(received).toBe(N);
    expect(ids).toHaveLength(N);
    // The readable side never held more than its own high-water mark and one batch of the dump.
    expect(maxBuffered).toBeLessThanOrEqual(source.readableHighWaterMark + 512);
    expect(await oracleCount(ns)).toBe(N);
  }, 120_000);

  it('netns that does not exist, or is not a namespace, fails with ERR_CONNTRACK_NETNS', async () => {
    const missing = expectConntrackError(await rejectionOf(Conntrack.open({ netns: '/run/netns/ctt-no-such-namespace' })), 'ERR_CONNTRACK_NETNS');
    expect(missing.message).toContain('/run/netns/ctt-no-such-namespace');
    const notNs = expectConntrackError(await rejectionOf(Conntrack.open({ netns: '/etc/hostname' })), 'ERR_CONNTRACK_NETNS');
    expect(notNs.message).toContain('/etc/hostname');
    // A pid that does not exist.
    expectConntrackError(await rejectionOf(Conntrack.open({ netns: 0x3fffffff })), 'ERR_CONNTRACK_NETNS');
    // Another kind of namespace is not a network namespace either.
    expectConntrackError(await rejectionOf(Conntrack.open({ netns: '/proc/self/ns/mnt' })), 'ERR_CONNTRACK_NETNS');
    // Not a path at all: an argument error, not a namespace error.
    expectConntrackError(await rejectionOf(Conntrack.open({ netns: 'relative/path' })), 'ERR_CONNTRACK_INVALID_ARGUMENT');
    expectConntrackError(await rejectionOf(Conntrack.open({ netns: -1 })), 'ERR_CONNTRACK_INVALID_ARGUMENT');
    await expectReleased();
  });

  it('netns as the pid of a process inside the namespace works', async () => {
    const sleeper = ns.spawn('sleep', ['30'], { stdio: 'ignore' });
    await once(sleeper, 'spawn');
    const pid = sleeper.pid as number;
    // `ip netns exec` enters the namespace, then execs sleep in the same process.
    await waitFor('the child to enter the namespace', () => {
      try {
        return statSync(`/proc/${pid}/ns/net`).ino === ns.inode;
      } catch {
        return false;
      }
    });
    try {
      await using byPid = await Conntrack.open({ netns: pid });
      expect(byPid.netns).toBe(`/proc/${pid}/ns/net`);
      expect((await byPid.count()).entries).toBe(N);
      const viaPid: number[] = [];
      for await (const batch of byPid.batches({ dport: 9, dst: '127.1.0.0/24' })) viaPid.push(...batch.map((e) => e.id));
      // fillUdp sends from two sockets (50,000 destinations each): 2 x 256 in 127.1.0.0/24.
      expect(viaPid).toHaveLength(512);
      const oracle = await oracleIds(ns, { filter: ['-p', 'udp', '--dport', '9', '-d', '127.1.0.0/24'] });
      expect(viaPid.sort((a, b) => a - b)).toEqual(oracle.sort((a, b) => a - b));
      // And this process's own namespace is a different table.
      await using own = await Conntrack.open();
      expect((await own.count()).entries).not.toBe(N);
    } finally {
      sleeper.kill('SIGKILL');
    }
  });

  describePrivilegeTests();

  function describePrivilegeTests(): void {
    let dir: string;
    let script: string;

    /** Runs the probe script under setpriv with `privArgs`; returns what it printed. */
    async function probe(privArgs: readonly string[], netns: string | undefined): Promise<Array<Record<string, unknown>>> {
      const setpriv = requireTool('setpriv');
      const result = await runChild(setpriv, [...privArgs, process.execPath, script, netns ?? ''], { timeoutMs: 30_000 });
      expect(result.status, `probe failed: ${result.stderr}`).toBe(0);
      return result.stdout.trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    }

    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), 'ctt-priv-'));
      chmodSync(dir, 0o755);
      script = join(dir, 'probe.mjs');
      writeFileSync(script, `
        const { Conntrack } = await import(${JSON.stringify(BUILT_INDEX)});
        const netns = process.argv[2] || undefined;
        const report = (step, err) => console.log(JSON.stringify(err
          ? { step, name: err.name, code: err.code, capability: err.capability, message: err.message }
          : { step, ok: true }));
        let ct;
        try { ct = await Conntrack.open(netns ? { netns } : {}); report('open'); } catch (err) { report('open', err); process.exit(0); }
        try { await ct.count(); report('count'); } catch (err) { report('count', err); }
        try { await ct.stats(); report('stats'); } catch (err) { report('stats', err); }
        try { for await (const e of ct.entries()) void e; report('entries'); } catch (err) { report('entries', err); }
        try {
          // Subscribed and quiet for 300 ms is success; a refusal rejects the first next() at once.
          const quiet = new AbortController();
          const timer = setTimeout(() => quiet.abort(), 300);
          try { await ct.events(undefined, { signal: quiet.signal }).next(); } catch (err) { if (err.name !== 'AbortError') throw err; } finally { clearTimeout(timer); }
          report('events');
        } catch (err) { report('events', err); }
        await ct.close();
      `);
      chmodSync(script, 0o644);
    }, 180_000);

    afterAll(() => {
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it('a process without CAP_NET_ADMIN gets ERR_CONNTRACK_PERMISSION naming CAP_NET_ADMIN', async () => {
      const lines = await probe(['--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', '--bounding-set=-all'], undefined);
      // Opening a netlink socket in one's own namespace needs no capability; every request on it
      // does (nfnetlink checks CAP_NET_ADMIN per message), and so does joining the event groups.
      expect(lines[0], JSON.stringify(lines)).toEqual({ step: 'open', ok: true });
      const failures = lines.slice(1);
      expect(failures.map((line) => line.step)).toEqual(['count', 'stats', 'entries', 'events']);
      for (const failure of failures) {
        expect(failure).toMatchObject({ name: 'ConntrackError', code: 'ERR_CONNTRACK_PERMISSION', capability: 'CAP_NET_ADMIN' });
        expect(failure.message).toContain('CAP_NET_ADMIN');
      }
    });

    it('with a netns option but without CAP_SYS_ADMIN: ERR_CONNTRACK_PERMISSION naming CAP_SYS_ADMIN', async () => {
      // Root, but with CAP_SYS_ADMIN gone from every set: CAP_NET_ADMIN alone.
      const rootLines = await probe(['--inh-caps=-all', '--bounding-set=-sys_admin'], ns.path);
      expect(rootLines).toHaveLength(1);
      expect(rootLines[0]).toMatchObject({ step: 'open', code: 'ERR_CONNTRACK_PERMISSION', capability: 'CAP_SYS_ADMIN' });
      expect(rootLines[0]?.message).toContain('CAP_SYS_ADMIN');
      // Nobody, without any capability.
      const nobodyLines = await probe(['--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', '--bounding-set=-all'], ns.path);
      expect(nobodyLines[0]).toMatchObject({ step: 'open', code: 'ERR_CONNTRACK_PERMISSION', capability: 'CAP_SYS_ADMIN' });
    });

    it('the same probe with both capabilities reads the namespace (the probe itself works)', async () => {
      const lines = await probe(['--inh-caps=-all'], ns.path);
      expect(lines).toEqual([{ step: 'open', ok: true }, { step: 'count', ok: true }, { step: 'stats', ok: true }, { step: 'entries', ok: true }, { step: 'events', ok: true }]);
    });
  }

  it('after all of the above, nothing is left behind', async () => {
    await expectReleased();
    expect(findTool('setpriv')).toBeDefined();
  });
}, { tools: ['setpriv'] });
