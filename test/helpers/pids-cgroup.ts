/**
 * A throwaway pids cgroup, so a test can cap how many threads a child process may start (the
 * limit a container's pids.max sets). cgroup v1 (a `pids` hierarchy) and v2 (a cgroup2 mount
 * whose root offers the pids controller) are both handled.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface PidsCgroup {
  /** The cgroup's directory: a process joins by writing its pid to `cgroup.procs`. */
  readonly dir: string;
  /** Removes the cgroup once its processes have exited. */
  remove(): Promise<void>;
}

/** Mount points of cgroup file systems, from /proc/self/mountinfo: [mount point, fs type, super options]. */
function cgroupMounts(): Array<[string, string, string]> {
  const mounts: Array<[string, string, string]> = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const [before, after] = line.split(' - ');
    if (before === undefined || after === undefined) continue;
    const mountPoint = before.split(' ')[4];
    const [fsType, , superOptions] = after.split(' ');
    if (mountPoint !== undefined && (fsType === 'cgroup' || fsType === 'cgroup2')) mounts.push([mountPoint, fsType, superOptions ?? '']);
  }
  return mounts;
}

/** Where a pids cgroup can be made, or why not. */
export function pidsCgroupParent(): { dir: string } | { reason: string } {
  const mounts = cgroupMounts();
  const v1 = mounts.find(([, type, options]) => type === 'cgroup' && options.split(',').includes('pids'));
  if (v1 !== undefined) return { dir: v1[0] };
  for (const [dir, type] of mounts) {
    if (type !== 'cgroup2') continue;
    const controllers = join(dir, 'cgroup.controllers');
    if (existsSync(controllers) && readFileSync(controllers, 'utf8').split(/\s+/).includes('pids')) return { dir };
  }
  return { reason: 'no pids cgroup controller is mounted (neither a cgroup v1 pids hierarchy nor cgroup2 offering pids)' };
}

export function createPidsCgroup(parent: string): PidsCgroup {
  const control = join(parent, 'cgroup.subtree_control');
  // cgroup v2: children get the pids controller only when the parent hands it down.
  if (existsSync(control) && !readFileSync(control, 'utf8').split(/\s+/).includes('pids')) writeFileSync(control, '+pids');
  const dir = join(parent, `ctt-pids-${process.pid}-${randomBytes(4).toString('hex')}`);
  mkdirSync(dir);
  return {
    dir,
    async remove() {
      // The kernel frees a cgroup a moment after its last task has exited.
      for (let attempt = 0; ; attempt++) {
        try {
          rmdirSync(dir);
          return;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
          if (attempt >= 100) throw err;
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      }
    },
  };
}
