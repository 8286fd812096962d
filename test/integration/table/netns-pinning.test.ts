/**
 * A handle stays in the namespace it opened. Its file operations (the nf_conntrack_events check of
 * events(), count()'s procfs fallback) go through the handle's own namespace descriptor, never the
 * path again: after `ip netns del X; ip netns add X` the path names a different namespace, and
 * after a process exits its pid names nothing (or, reused, another process). And a path that is
 * not a namespace file (a FIFO, a regular file) is refused at once, never waited on.
 */
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Conntrack, readSysctl } from '../../../lib/index.js';
import { binding } from '../../../lib/binding/native.js';
import { describeIntegration } from '../../helpers/gate.js';
import { createNetns, destroyAllNetns, run, type Netns } from '../../helpers/netns.js';
import { requireTool } from '../../helpers/tools.js';

const TIMEOUT_FILE = '/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established';
const EVENTS_FILE = '/proc/sys/net/netfilter/nf_conntrack_events';

/** One entry made without traffic, so the namespace's table is told apart by its count. */
async function insertEntry(ns: Netns): Promise<void> {
  await ns.exec(requireTool('conntrack'), ['-I', '-p', 'udp', '-s', '10.9.9.1', '-d', '10.9.8.1', '--sport', '3000', '--dport', '53', '-t', '600']);
}

/** `ip netns del NAME; ip netns add NAME`: the same path, a new namespace. */
async function replaceNamespace(ns: Netns): Promise<void> {
  const ip = requireTool('ip');
  await run(ip, ['netns', 'del', ns.name]);
  await run(ip, ['netns', 'add', ns.name]);
}

/** events()' first next() settles: with the check's error, or (aborted after a while) with AbortError. */
async function firstEvent(ct: Conntrack): Promise<unknown> {
  const quiet = new AbortController();
  const timer = setTimeout(() => quiet.abort(), 300);
  try {
    await ct.events(undefined, { signal: quiet.signal }).next();
    return 'an event';
  } catch (err) {
    return err;
  } finally {
    clearTimeout(timer);
  }
}

describeIntegration('a handle keeps its own namespace', () => {
  let scratch: string;

  beforeAll(() => {
    scratch = mkdtempSync(join(tmpdir(), 'conntrack-pinning-'));
  });

  afterAll(async () => {
    rmSync(scratch, { recursive: true, force: true });
    await destroyAllNetns();
  });

  it('after `ip netns del` and `add` under the same name, its file reads still read the namespace it opened', async () => {
    const ns = await createNetns('pin-path');
    await ns.sysctl('net.netfilter.nf_conntrack_tcp_timeout_established', 1234);
    await ns.sysctl('net.netfilter.nf_conntrack_events', 0);
    await insertEntry(ns);
    await using ct = await Conntrack.open({ netns: ns.path });
    const native = await binding().open(ns.path);
    try {
      await replaceNamespace(ns);
      await using fresh = await Conntrack.open({ netns: ns.path });
      const freshNative = await binding().open(ns.path);
      try {
        // The new namespace under the old name has the defaults and an empty table.
        expect(Number(await freshNative.readFile(TIMEOUT_FILE))).toBe(432_000);
        expect(Number(await readSysctl('nf_conntrack_events', { netns: ns.path }))).not.toBe(0);
        expect((await fresh.count()).entries).toBe(0);
        // The old handle: its socket and its files both still in the namespace it opened.
        expect((await ct.count()).entries).toBe(1);
        expect(Number(await native.readFile(TIMEOUT_FILE))).toBe(1234);
        expect(Number(await native.readFile(EVENTS_FILE))).toBe(0);
        expect(await native.listDir('/proc/sys/net/netfilter')).toContain('nf_conntrack_events');
        expect(native.namespaceInode()).toBe(ns.inode);
        expect(freshNative.namespaceInode()).not.toBe(ns.inode);
        // Through the library: events() checks nf_conntrack_events where the handle listens.
        expect(await firstEvent(ct)).toMatchObject({ code: 'ERR_CONNTRACK_UNAVAILABLE', message: expect.stringContaining('nf_conntrack_events = 0') });
        expect(await firstEvent(fresh)).toMatchObject({ name: 'AbortError' });
      } finally {
        freshNative.close();
      }
    } finally {
      native.close();
    }
  });

  it('opened by pid, it keeps the namespace after the process exits; a pid with no process is ERR_CONNTRACK_NETNS', async () => {
    const ns = await createNetns('pin-pid');
    await ns.sysctl('net.netfilter.nf_conntrack_events', 0);
    await insertEntry(ns);
    // `ip netns exec` execs the command: the child's pid is the sleeper's, inside the namespace.
    const sleeper = spawn(requireTool('ip'), ['netns', 'exec', ns.name, 'sleep', '600'], { stdio: 'ignore' });
    const pid = sleeper.pid as number;
    try {
      for (let i = 0; i < 100 && execFileSync('readlink', [`/proc/${pid}/ns/net`], { encoding: 'utf8' }).trim() !== `net:[${ns.inode}]`; i++) {
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      await using ct = await Conntrack.open({ netns: pid });
      expect(ct.netns).toBe(`/proc/${pid}/ns/net`);
      const native = await binding().open(pid);
      try {
        expect(native.namespaceInode()).toBe(ns.inode);
        sleeper.kill('SIGKILL');
        await once(sleeper, 'exit');
        // /proc/PID/ns/net is gone with the process: only the handle's descriptor still reaches it.
        expect((await ct.count()).entries).toBe(1);
        expect(Number(await native.readFile(EVENTS_FILE))).toBe(0);
        expect(await firstEvent(ct)).toMatchObject({ code: 'ERR_CONNTRACK_UNAVAILABLE', message: expect.stringContaining('nf_conntrack_events = 0') });
      } finally {
        native.close();
      }
    } finally {
      sleeper.kill('SIGKILL');
    }
    // Above any pid_max: pidfd_open finds no process.
    await expect(Conntrack.open({ netns: 0x7ffffffe })).rejects.toMatchObject({ code: 'ERR_CONNTRACK_NETNS', errno: 3 });
  });

  it('a FIFO or a regular file as the namespace is ERR_CONNTRACK_NETNS at once, never a wait for a writer', async () => {
    const fifo = join(scratch, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const file = join(scratch, 'file');
    writeFileSync(file, 'not a namespace\n');
    for (const path of [fifo, file]) {
      await expect(Conntrack.open({ netns: path })).rejects.toMatchObject({ code: 'ERR_CONNTRACK_NETNS', message: expect.stringContaining('nsfs') });
      await expect(readSysctl('nf_conntrack_max', { netns: path })).rejects.toMatchObject({ code: 'ERR_CONNTRACK_NETNS' });
    }
    // No pool thread was left blocked: more opens than the pool has threads still complete.
    const ns = await createNetns('pin-fifo');
    const handles = await Promise.all(Array.from({ length: 8 }, () => Conntrack.open({ netns: ns.path })));
    for (const ct of handles) await ct.close();
  });
});
