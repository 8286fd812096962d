/**
 * At the edge of the process's resources: a thread that cannot start (a pids cgroup at its limit,
 * as in a container), descriptors run out, and a namespace descriptor that is gone. Each ends in a
 * coded error, never an abort or a read of the wrong table, and everything works again once the
 * resource is back. Each scenario runs in a child process (test/helpers/limits-child.mjs).
 */
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { runChild as runProcess } from '../../helpers/child.js';
import { BUILT_LIB } from '../../helpers/cli.js';
import { describeIntegration, isCI } from '../../helpers/gate.js';
import { createNetns, destroyAllNetns, enableTracking, type Netns } from '../../helpers/netns.js';
import { oracleCount } from '../../helpers/oracle.js';
import { createPidsCgroup, pidsCgroupParent } from '../../helpers/pids-cgroup.js';
import { fillUdp } from '../../helpers/traffic.js';

const DIST_INDEX = join(BUILT_LIB, 'index.js');
const CHILD = fileURLToPath(new URL('../../helpers/limits-child.mjs', import.meta.url));
const ENTRIES = 2000;

type Outcome = { ok: true; value?: number } | { ok?: undefined; code: string; syscall?: string; errno?: number; message: string };
type Round = Record<'dump' | 'events' | 'open' | 'sysctl' | 'count', Outcome>;
interface Usage { fds: number; threads: number }

/** Runs the child; its exit status must be 0 (an abort or a crash fails here, with its stderr). */
async function runChild(args: readonly string[], command = process.execPath): Promise<Record<string, unknown>> {
  const result = await runProcess(command, args, { timeoutMs: 120_000 });
  expect({ signal: result.signal, status: result.status }, result.stderr).toEqual({ signal: null, status: 0 });
  return JSON.parse(result.stdout.trim()) as Record<string, unknown>;
}

function expectResourceError(outcome: Outcome | undefined, syscall: string, errno: number): void {
  expect(outcome).toMatchObject({ code: 'ERR_CONNTRACK_RESOURCE', syscall, errno });
}

describeIntegration('resource limits', () => {
  let ns: Netns;

  beforeAll(async () => {
    ns = await createNetns('limits');
    await enableTracking(ns);
    expect(await fillUdp(ns, ENTRIES)).toEqual({ sent: ENTRIES });
    expect(await oracleCount(ns)).toBe(ENTRIES);
  }, 120_000);

  afterAll(destroyAllNetns);

  /** Everything works and reads the namespace's table. */
  function expectAllWork(round: Round | undefined): void {
    expect(round).toEqual({
      dump: { ok: true, value: ENTRIES },
      events: { ok: true },
      open: { ok: true },
      sysctl: { ok: true, value: 600 },
      count: { ok: true, value: ENTRIES },
    });
  }

  function expectReleased(report: Record<string, unknown>): void {
    const before = report.before as Usage;
    const after = report.after as Usage;
    // The child closed its handle (a socket and the namespace descriptor) after `before`.
    expect(after.fds).toBeLessThanOrEqual(before.fds);
    expect(after.threads).toBeLessThanOrEqual(before.threads);
  }

  const parent = pidsCgroupParent();
  const pidsReason = 'reason' in parent ? parent.reason : undefined;
  // Like describeIntegration: never a silent skip in CI.
  const itWithPids = pidsReason === undefined || isCI() ? it : it.skip;
  if (pidsReason !== undefined && !isCI()) console.warn(`[integration] skipping the pids limit test: ${pidsReason}`);

  itWithPids('a thread that cannot start (pids.max reached) fails dumps, subscriptions, open() and netns reads with ERR_CONNTRACK_RESOURCE; lifting the limit brings them back', async () => {
    if ('reason' in parent) throw new Error(`cannot limit threads on this machine: ${parent.reason}`);
    const cgroup = createPidsCgroup(parent.dir);
    try {
      const report = await runChild([CHILD, DIST_INDEX, ns.path, 'threads', cgroup.dir]);
      expectAllWork(report.warm as Round);
      // Not one thread more: every operation that starts a thread says so; count() needs none.
      const none = report.headroom0 as Round;
      for (const outcome of [none.dump, none.events, none.open, none.sysctl]) expectResourceError(outcome, 'create thread', 11);
      expect(none.count).toEqual({ ok: true, value: ENTRIES });
      // One thread more: open() and namespace reads (one thread each) work; a dump's second
      // thread cannot start, and the first one is stopped again.
      const one = report.headroom1 as Round;
      expectResourceError(one.dump, 'create thread', 11);
      expectResourceError(one.events, 'create thread', 11);
      expect({ open: one.open, sysctl: one.sysctl, count: one.count }).toEqual({ open: { ok: true }, sysctl: { ok: true, value: 600 }, count: { ok: true, value: ENTRIES } });
      expectAllWork(report.lifted as Round);
      expectReleased(report);
    } finally {
      await cgroup.remove();
    }
  });

  it('descriptors run out (ulimit -n): dumps and subscriptions fail with ERR_CONNTRACK_RESOURCE naming the call, then work again', async () => {
    // `ulimit` in a shell: no other tool needed, and the limit holds for the child alone.
    const report = await runChild(['-c', 'ulimit -n 64 && exec "$0" "$@"', process.execPath, CHILD, DIST_INDEX, ns.path, 'descriptors'], '/bin/sh');
    expectAllWork(report.warm as Round);
    // A dump needs three descriptors in turn: its copy of the namespace's, an eventfd, a socket.
    for (const [free, syscall] of [[0, 'dup netns'], [1, 'eventfd'], [2, 'socket(NETLINK_NETFILTER)']] as const) {
      const round = report[`free${free}`] as Pick<Round, 'dump' | 'events'>;
      expectResourceError(round.dump, syscall, 24);
      expectResourceError(round.events, syscall, 24);
    }
    expectAllWork(report.freed as Round);
    expectReleased(report);
  });

  it("a handle whose namespace descriptor is gone fails dumps and subscriptions with ERR_CONNTRACK_NETNS instead of reading this process's table", async () => {
    const report = await runChild([CHILD, DIST_INDEX, ns.path, 'lost-netns-fd']);
    expectAllWork(report.warm as Round);
    const lost = report.lost as Pick<Round, 'dump' | 'events' | 'count'>;
    expect(lost.dump).toMatchObject({ code: 'ERR_CONNTRACK_NETNS', syscall: 'dup netns', errno: 9 /* EBADF */ });
    expect(lost.events).toMatchObject({ code: 'ERR_CONNTRACK_NETNS', syscall: 'dup netns', errno: 9 });
    // The handle's own socket was opened inside the namespace and still reads it.
    expect(lost.count).toEqual({ ok: true, value: ENTRIES });
    expectReleased(report);
  });
});
