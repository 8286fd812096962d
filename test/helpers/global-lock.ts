/**
 * The machine-wide lock on the global nf_conntrack_max (scripts/global-limits-lock.mjs, shared with
 * the benchmark), as the integration tests use it:
 *
 * - a file whose tests compare something with the limit (count().max, the CLI, the exporter,
 *   watch, the doctor) holds it shared from beforeAll to afterAll: `holdGlobalLimits('shared')`;
 * - a file that changes the limit, or needs room for a big table, holds it exclusive, and raises
 *   the limit through the lock (`ensureRoom`), which restores it at release, or at the next run
 *   if this one is killed.
 */
import { readdirSync, readlinkSync, statSync } from 'node:fs';
import {
  acquireGlobalLimits, GLOBAL_LIMITS_LOCK, withGlobalLimits,
  type GlobalLimitsLock, type GlobalLimitsMode, type GlobalLimitsOptions,
} from '../../scripts/global-limits-lock.mjs';
import { binding } from '../../lib/binding/native.js';
import { Conntrack } from '../../lib/table/conntrack.js';

export { GLOBAL_LIMITS_LOCK, acquireGlobalLimits, withGlobalLimits, type GlobalLimitsLock, type GlobalLimitsMode };

/**
 * Takes the lock for a whole test file: call in beforeAll, and `release()` in afterAll. The limit
 * is also restored if the process exits without afterAll (a crash of the file).
 */
export async function holdGlobalLimits(mode: GlobalLimitsMode, options?: GlobalLimitsOptions): Promise<GlobalLimitsLock> {
  const lock = await acquireGlobalLimits(mode, options);
  const onExit = (): void => lock.release();
  process.once('exit', onExit);
  return {
    mode: lock.mode,
    readMax: () => lock.readMax(),
    setMax: (value) => lock.setMax(value),
    ensureMax: (value) => lock.ensureMax(value),
    release() {
      process.removeListener('exit', onExit);
      lock.release();
    },
  };
}

export interface NamespaceInfo {
  /** A path to open it by: /proc/PID/ns/net of a process in it, or its /run/netns bind mount. */
  path: string;
  /** Some process runs in it. */
  hasProcesses: boolean;
}

/** Every network namespace on the machine, by inode. */
export function allNamespaces(): Map<number, NamespaceInfo> {
  const found = new Map<number, NamespaceInfo>();
  for (const pid of readdirSync('/proc').filter((name) => /^\d+$/.test(name))) {
    try {
      const match = /^net:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/ns/net`));
      if (match?.[1] !== undefined && !found.has(Number(match[1]))) found.set(Number(match[1]), { path: `/proc/${pid}/ns/net`, hasProcesses: true });
    } catch {
      // the process exited, or its namespace is not ours to see
    }
  }
  // Namespaces kept alive by a bind mount only (ip netns add) have no process.
  let names: string[] = [];
  try {
    names = readdirSync('/run/netns');
  } catch {
    // no namespace was ever added
  }
  for (const name of names) {
    try {
      const ino = statSync(`/run/netns/${name}`).ino;
      if (!found.has(ino)) found.set(ino, { path: `/run/netns/${name}`, hasProcesses: false });
    } catch {
      // removed meanwhile
    }
  }
  return found;
}

export interface NamespaceEntries extends NamespaceInfo {
  entries: number;
  /**
   * Whether new connections can start there: a process runs in it, or it has an interface besides
   * lo (traffic can come in). One with neither cannot make entries, whatever the limit.
   */
  live: boolean;
}

/** Entries each namespace holds now (the limit is checked against each namespace's own count). */
export async function entriesPerNamespace(except: ReadonlySet<number> = new Set()): Promise<Map<number, NamespaceEntries>> {
  const counts = new Map<number, NamespaceEntries>();
  for (const [inode, info] of allNamespaces()) {
    if (except.has(inode)) continue;
    try {
      const ct = await Conntrack.open({ netns: info.path });
      let entries: number;
      try {
        entries = (await ct.count()).entries;
      } finally {
        await ct.close();
      }
      let live = info.hasProcesses;
      if (!live) {
        const dev = await binding().netnsReadFile(info.path, '/proc/net/dev');
        live = dev.split('\n').slice(2).some((line) => line.includes(':') && line.split(':')[0]?.trim() !== 'lo');
      }
      counts.set(inode, { ...info, entries, live });
    } catch {
      // gone meanwhile, or not readable: it holds nothing we could take room from
    }
  }
  return counts;
}

/**
 * With the lock held exclusive: makes sure a namespace can hold `entries` more entries than it
 * has, raising nf_conntrack_max when the host's limit is lower (65,536 is the default of 6.x
 * kernels on machines with 4 GiB or less). Returns the limit in force.
 */
export function ensureRoom(lock: GlobalLimitsLock, entries: number): number {
  // Head room for what other namespaces do meanwhile: the limit is per namespace, so this only
  // has to cover the test's own table.
  return lock.ensureMax(entries + Math.max(1024, Math.ceil(entries / 10)));
}
