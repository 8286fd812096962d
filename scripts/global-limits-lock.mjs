// The machine-wide lock on the kernel's global conntrack limit (net.netfilter.nf_conntrack_max),
// shared by the integration tests (test/helpers/global-lock.ts) and the benchmark
// (benchmarks/run.mjs). Plain JavaScript so both can load it.
//
// - shared: the holder reads the limit and compares the library's view with it (count(), the
//   CLI, the exporter, watch, the doctor); nobody may change it meanwhile.
// - exclusive: the holder changes the limit (the incident lowers it to a few hundred; a
//   100,000-entry fill raises it where the host's default is lower; the benchmark raises it).
//
// The lock is flock(2) on one file, taken by util-linux's `flock` on a descriptor this process
// keeps open: the kernel releases it when the process ends, however it ends. Before an exclusive
// holder changes the limit, it writes the original value into the lock file; release() restores
// it and empties the file. A holder killed in between leaves its record behind, and the next one
// to take the lock (shared or exclusive) restores the limit before going on.
import { spawn } from 'node:child_process';
import { accessSync, closeSync, constants, fstatSync, ftruncateSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';
import { delimiter, join } from 'node:path';

export const GLOBAL_LIMITS_LOCK = '/run/lock/conntrack-global-limits.lock';
export const MAX_PATH = '/proc/sys/net/netfilter/nf_conntrack_max';

/** What this process holds, across module instances (vitest loads modules once per test file). */
const HELD = Symbol.for('conntrack.globalLimitsLock.held');
const held = (globalThis[HELD] ??= new Map()); // lock path -> { mode, count }

function findFlock() {
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter(Boolean), '/usr/bin', '/bin', '/usr/sbin', '/sbin'];
  for (const dir of dirs) {
    try {
      accessSync(join(dir, 'flock'), constants.X_OK);
      return join(dir, 'flock');
    } catch {
      // keep looking
    }
  }
  throw new Error('flock not found on PATH: apt-get install util-linux');
}

export function readMax(path = MAX_PATH) {
  return Number(readFileSync(path, 'utf8').trim());
}

function writeMax(value, path = MAX_PATH) {
  readFileSync(path); // fail with the path in the message if there is no conntrack
  const fd = openSync(path, 'w');
  try {
    writeSync(fd, `${value}\n`);
  } finally {
    closeSync(fd);
  }
  const readBack = readMax(path);
  if (readBack !== value) throw new Error(`nf_conntrack_max reads ${readBack} after writing ${value}`);
}

/** flock(1) on `fd` (inherited as the child's descriptor 3): 0 taken, 1 timed out. */
function flock(fd, flag, timeoutMs) {
  return new Promise((resolve, reject) => {
    const args = [flag, ...(timeoutMs === undefined ? [] : ['-w', String(Math.max(timeoutMs, 0) / 1000)]), '3'];
    const child = spawn(findFlock(), args, { stdio: ['ignore', 'ignore', 'pipe', fd] });
    let stderr = '';
    child.stderr.on('data', (chunk) => { stderr += chunk; });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (code === 0) resolve(true);
      else if (code === 1 && stderr.trim() === '') resolve(false);
      else reject(new Error(`flock ${args.join(' ')} failed (${signal ?? `exit ${code}`}): ${stderr.trim()}`));
    });
  });
}

/** The whole file, from its start whatever the descriptor's position. */
function readAll(fd) {
  const buffer = Buffer.alloc(fstatSync(fd).size);
  const length = buffer.length === 0 ? 0 : readSync(fd, buffer, 0, buffer.length, 0);
  return buffer.subarray(0, length).toString('utf8');
}

function readRecord(fd) {
  const text = readAll(fd).trim();
  if (text === '') return undefined;
  try {
    const record = JSON.parse(text);
    if (Number.isInteger(record.original) && Number.isInteger(record.set)) return record;
  } catch {
    // a torn write: nothing to restore from
  }
  return { original: undefined, set: undefined, text };
}

function writeRecord(fd, record) {
  ftruncateSync(fd, 0);
  if (record !== undefined) writeSync(fd, `${JSON.stringify(record)}\n`, 0);
}

/**
 * Puts back the limit a killed holder left changed (its record says what it was and what it set),
 * and empties the record. Needs the exclusive lock. Returns what it did, for logging.
 */
function recover(fd, maxPath) {
  const record = readRecord(fd);
  if (record === undefined) return undefined;
  writeRecord(fd, undefined);
  if (record.original === undefined) return `ignored an unreadable record: ${record.text}`;
  const now = readMax(maxPath);
  if (now === record.set) {
    writeMax(record.original, maxPath);
    return `restored nf_conntrack_max ${record.original} (pid ${record.pid} left it at ${record.set})`;
  }
  return `left nf_conntrack_max at ${now}: pid ${record.pid} had set ${record.set} (from ${record.original}), and it changed since`;
}

/**
 * Takes the lock. `mode` is 'shared' or 'exclusive'; waits up to `timeoutMs` (default 10 min) for
 * other holders. In one process the same lock can be taken again in the same or a weaker mode
 * (each release() gives one back); asking for exclusive while holding shared is an error, since
 * it would wait for itself.
 */
export async function acquireGlobalLimits(mode, options = {}) {
  if (mode !== 'shared' && mode !== 'exclusive') throw new Error(`lock mode must be shared or exclusive, got ${mode}`);
  const path = options.path ?? GLOBAL_LIMITS_LOCK;
  const maxPath = options.maxPath ?? MAX_PATH;
  const timeoutMs = options.timeoutMs ?? 600_000;
  const log = options.log ?? ((line) => console.error(`global-limits-lock: ${line}`));

  const mine = held.get(path);
  if (mine !== undefined) {
    if (mode === 'exclusive' && mine.mode !== 'exclusive') {
      throw new Error(`${path}: this process holds the lock shared and asks for it exclusive: it would wait for itself`);
    }
    mine.count++;
    return handle(mine, mode);
  }

  const fd = openSync(path, constants.O_RDWR | constants.O_CREAT, 0o644);
  const deadline = Date.now() + timeoutMs;
  const take = async (flag) => {
    if (!(await flock(fd, flag, deadline - Date.now()))) {
      closeSync(fd);
      throw new Error(`${path}: not ${mode === 'shared' ? 'shared' : 'taken'} within ${timeoutMs} ms: another test or a benchmark holds it (lsof ${path} names it)`);
    }
  };
  try {
    for (;;) {
      await take(mode === 'shared' ? '-s' : '-x');
      if (readRecord(fd) === undefined) break;
      // A holder was killed with the limit changed: put it back, which needs the lock alone. A
      // reader lets go first: two readers upgrading in place would each wait for the other.
      if (mode === 'shared') {
        await flock(fd, '-u');
        await take('-x');
      }
      const done = recover(fd, maxPath);
      if (done !== undefined) log(done);
      if (mode === 'exclusive') break;
      await flock(fd, '-u');
    }
  } catch (err) {
    try { closeSync(fd); } catch { /* closed by take() */ }
    throw err;
  }
  const state = { path, maxPath, mode, fd, count: 1, record: undefined };
  held.set(path, state);
  return handle(state, mode);
}

function setMax(state, value) {
  if (state.mode !== 'exclusive') throw new Error('changing nf_conntrack_max needs the lock exclusive');
  if (!Number.isInteger(value) || value < 0) throw new Error(`bad nf_conntrack_max ${value}`);
  if (state.record === undefined) {
    // Recorded before the change: a kill right after the write still finds it.
    state.record = { pid: process.pid, original: readMax(state.maxPath), set: value };
  } else {
    state.record.set = value;
  }
  writeRecord(state.fd, state.record);
  writeMax(value, state.maxPath);
}

/** Raises the limit to at least `value` (never lowers it); returns the limit now in force. */
function ensureMax(state, value) {
  const now = readMax(state.maxPath);
  if (now >= value) return now;
  setMax(state, value);
  return value;
}

function handle(state, mode) {
  let released = false;
  return {
    mode,
    readMax: () => readMax(state.maxPath),
    setMax: (value) => setMax(state, value),
    ensureMax: (value) => ensureMax(state, value),
    /** Restores the limit if this holder changed it, then lets go. Synchronous: works in 'exit'. */
    release() {
      if (released) return;
      released = true;
      if (--state.count > 0) return;
      held.delete(state.path);
      try {
        const record = state.record;
        if (record !== undefined) {
          const now = readMax(state.maxPath);
          if (now === record.set) writeMax(record.original, state.maxPath);
          else if (now !== record.original) {
            console.error(`global-limits-lock: nf_conntrack_max is ${now}, set by someone else meanwhile (was ${record.original}, this process set ${record.set}): left alone`);
          }
          writeRecord(state.fd, undefined);
        }
      } finally {
        closeSync(state.fd);
      }
    },
  };
}

/** Runs `fn(lock)` holding the lock; releases (and restores the limit) when it settles. */
export async function withGlobalLimits(mode, fn, options = {}) {
  const lock = await acquireGlobalLimits(mode, options);
  const onExit = () => lock.release();
  process.once('exit', onExit);
  try {
    return await fn(lock);
  } finally {
    process.removeListener('exit', onExit);
    lock.release();
  }
}
