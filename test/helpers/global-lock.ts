/**
 * A machine-wide lock for work that changes or depends on the kernel's global conntrack limits
 * (`nf_conntrack_max`): the incident test lowers it to a few hundred, and the benchmark raises it
 * and fills a million entries. Two such runs at once would break each other, whoever started them.
 *
 * The lock is a directory (mkdir is atomic) holding the owner's pid; a lock whose owner is gone is
 * taken over. `benchmarks/run.mjs` takes the same lock.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

export const GLOBAL_LIMITS_LOCK = '/run/lock/conntrack-global-limits';

function ownerOf(dir: string): number | undefined {
  try {
    const pid = Number(readFileSync(`${dir}/pid`, 'utf8'));
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function tryTake(dir: string): boolean {
  try {
    mkdirSync(dir, { recursive: false });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    const owner = ownerOf(dir);
    // No pid yet: the owner is between mkdir and writeFile; give it time before calling it stale.
    if (owner === undefined || isAlive(owner)) return false;
    rmSync(dir, { recursive: true, force: true });
    return tryTake(dir);
  }
  writeFileSync(`${dir}/pid`, String(process.pid));
  return true;
}

/** Runs `fn` holding the lock; waits up to `timeoutMs` for another holder to finish. */
export async function withGlobalLimitsLock<T>(fn: () => Promise<T>, timeoutMs = 600_000, dir = GLOBAL_LIMITS_LOCK): Promise<T> {
  mkdirSync(dir.slice(0, dir.lastIndexOf('/')), { recursive: true });
  const deadline = Date.now() + timeoutMs;
  while (!tryTake(dir)) {
    if (Date.now() > deadline) {
      throw new Error(`${dir} is held by pid ${ownerOf(dir) ?? '?'} for more than ${timeoutMs} ms ` +
        '(a benchmark or another test changing nf_conntrack_max)');
    }
    await sleep(200);
  }
  const release = (): void => {
    if (ownerOf(dir) === process.pid) rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', release);
  try {
    return await fn();
  } finally {
    process.removeListener('exit', release);
    release();
  }
}
