/**
 * Every network namespace of the host, found the way `lsns -t net` and `ip netns` find them: the
 * `/proc/PID/ns/net` link of every process, and the namespace files bind-mounted under
 * `/run/netns` (ip netns), `/var/run/netns` and `/run/docker/netns` (Docker). A namespace is known
 * by its nsfs inode, the number the kernel also prints in "table full in netns N". Only reads: it
 * never enters, creates or changes a namespace.
 *
 * Synchronous on purpose: a few hundred readlink() calls take about a millisecond in one go,
 * where the same through the thread pool would take several.
 */
import { readdirSync, readFileSync, readlinkSync, realpathSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** Where namespace files are bind-mounted, most telling name first. */
export const NETNS_DIRECTORIES = ['/run/netns', '/var/run/netns', '/run/docker/netns'] as const;

export interface DiscoveredNamespace {
  /** The nsfs inode: the namespace's identity while it lives. */
  inode: number;
  /** A file that names it now: a bind mount when there is one, else /proc/PID/ns/net of its lowest pid. */
  path: string;
  /** The `ip netns` name or the file name under a netns directory, when one exists. */
  name: string | undefined;
  /** Pids whose network namespace it is, ascending (none for a namespace held only by a mount). */
  pids: number[];
}

export interface Discovery {
  namespaces: DiscoveredNamespace[];
  /** Processes whose namespace could not be read (no permission): their namespaces may be missing. */
  unreadable: number;
}

export interface DiscoveryOptions {
  /** Default /proc. */
  procRoot?: string;
  /** Default NETNS_DIRECTORIES. */
  directories?: readonly string[];
}

const NET_LINK = /^net:\[(\d+)\]$/;

/** The device of nsfs, to tell a mounted namespace file from a leftover plain file. */
function nsfsDevice(procRoot: string): number | undefined {
  try {
    return statSync(join(procRoot, 'self', 'ns', 'net')).dev;
  } catch {
    return undefined;
  }
}

export function discoverNamespaces(options: DiscoveryOptions = {}): Discovery {
  const procRoot = options.procRoot ?? '/proc';
  const byInode = new Map<number, DiscoveredNamespace>();
  const entry = (inode: number, path: string): DiscoveredNamespace => {
    let ns = byInode.get(inode);
    if (ns === undefined) {
      ns = { inode, path, name: undefined, pids: [] };
      byInode.set(inode, ns);
    }
    return ns;
  };

  let unreadable = 0;
  let pids: number[] = [];
  try {
    pids = readdirSync(procRoot).filter((name) => /^\d+$/.test(name)).map(Number).sort((a, b) => a - b);
  } catch {
    // no procfs: only the mounted files can be found
  }
  for (const pid of pids) {
    const link = join(procRoot, String(pid), 'ns', 'net');
    let target: string;
    try {
      target = readlinkSync(link);
    } catch (err) {
      // ENOENT: the process exited meanwhile. EACCES: not ours to look at.
      if ((err as NodeJS.ErrnoException).code === 'EACCES' || (err as NodeJS.ErrnoException).code === 'EPERM') unreadable++;
      continue;
    }
    const inode = Number(NET_LINK.exec(target)?.[1]);
    if (!Number.isSafeInteger(inode)) continue;
    entry(inode, link).pids.push(pid);
  }

  const device = nsfsDevice(procRoot);
  const seenDirectories = new Set<string>();
  for (const directory of options.directories ?? NETNS_DIRECTORIES) {
    let real: string;
    let names: string[];
    try {
      real = realpathSync(directory); // /var/run is usually /run
      if (seenDirectories.has(real)) continue;
      seenDirectories.add(real);
      names = readdirSync(directory).sort();
    } catch {
      continue;
    }
    for (const name of names) {
      const path = join(directory, name);
      let inode: number;
      try {
        const s = statSync(path);
        // A file left after its namespace was unmounted is a plain file on tmpfs.
        if (device !== undefined && s.dev !== device) continue;
        inode = s.ino;
      } catch {
        continue;
      }
      const ns = entry(inode, path);
      if (ns.name === undefined) {
        ns.name = name;
        ns.path = path; // a mount outlives any one process
      }
    }
  }
  return { namespaces: [...byInode.values()].sort((a, b) => a.inode - b.inode), unreadable };
}

/** A 64-hex container id in a cgroup path (docker-ID.scope, cri-containerd-ID.scope, crio-ID, /docker/ID, /kubepods/.../ID). */
const CONTAINER_ID = /(?:^|[/-])([0-9a-f]{64})(?:\.scope)?$/;

/** The container id of the first of `pids` that runs in a container's cgroup; undefined when none does. */
export function containerIdOf(pids: readonly number[], procRoot = '/proc'): string | undefined {
  for (const pid of pids) {
    let text: string;
    try {
      text = readFileSync(join(procRoot, String(pid), 'cgroup'), 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n')) {
      const path = line.slice(line.indexOf(':', line.indexOf(':') + 1) + 1);
      const id = CONTAINER_ID.exec(path)?.[1];
      if (id !== undefined) return id;
    }
  }
  return undefined;
}

/** The inode of the namespace a file names now; undefined when it names none. */
export function namespaceInodeOf(path: string): number | undefined {
  const link = /^\/proc\/\d+\/ns\/net$/.test(path);
  try {
    if (link) return Number(NET_LINK.exec(readlinkSync(path))?.[1]) || undefined;
    const s = statSync(path);
    return s.dev === nsfsDevice('/proc') ? s.ino : undefined;
  } catch {
    return undefined;
  }
}
