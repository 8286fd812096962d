/**
 * The machine-wide lock on nf_conntrack_max (scripts/global-limits-lock.mjs) on scratch files: a
 * plain file stands for /proc/sys/net/netfilter/nf_conntrack_max, and holders in other processes
 * are real processes, one of them killed with SIGKILL while it has the limit changed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { acquireGlobalLimits, withGlobalLimits } from '../../../scripts/global-limits-lock.mjs';

const MODULE = fileURLToPath(new URL('../../../scripts/global-limits-lock.mjs', import.meta.url));

let dir: string;
let lockPath: string;
let maxPath: string;
const children: ChildProcess[] = [];

const max = () => Number(readFileSync(maxPath, 'utf8'));
const record = () => readFileSync(lockPath, 'utf8');
const quiet = { log: () => undefined };

/**
 * Another process that takes the lock in `mode`, optionally sets the limit, says "held" and waits
 * to be killed or to have its stdin closed (then it releases and exits).
 */
async function holder(mode: 'shared' | 'exclusive', setMax?: number): Promise<ChildProcess> {
  const script = `
    const { acquireGlobalLimits } = await import(${JSON.stringify(MODULE)});
    const lock = await acquireGlobalLimits(${JSON.stringify(mode)}, { path: ${JSON.stringify(lockPath)}, maxPath: ${JSON.stringify(maxPath)}, timeoutMs: 10000 });
    ${setMax === undefined ? '' : `lock.setMax(${setMax});`}
    console.log('held');
    process.stdin.resume();
    process.stdin.on('end', () => { lock.release(); process.exit(0); });
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['pipe', 'pipe', 'inherit'] });
  children.push(child);
  let out = '';
  await new Promise<void>((resolve, reject) => {
    child.stdout?.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes('held')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`holder exited (${code}) before holding the lock`)));
  });
  return child;
}

async function ended(child: ChildProcess, how: 'release' | 'kill'): Promise<void> {
  const exited = once(child, 'exit');
  if (how === 'kill') child.kill('SIGKILL');
  else child.stdin?.end();
  await exited;
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'ct-lock-'));
  lockPath = join(dir, 'limits.lock');
  maxPath = join(dir, 'nf_conntrack_max');
  writeFileSync(maxPath, '262144\n');
});

afterEach(() => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

describe('the global-limits lock', () => {
  it('lets readers share it, and makes a writer wait for them', async () => {
    const reader = await holder('shared');
    const second = await acquireGlobalLimits('shared', { path: lockPath, maxPath, timeoutMs: 2000 });
    second.release();
    await expect(acquireGlobalLimits('exclusive', { path: lockPath, maxPath, timeoutMs: 300 })).rejects.toThrow(/not taken within 300 ms/);
    await ended(reader, 'release');
    const writer = await acquireGlobalLimits('exclusive', { path: lockPath, maxPath, timeoutMs: 2000 });
    writer.release();
  });

  it('makes readers wait for a writer', async () => {
    const writer = await holder('exclusive');
    await expect(acquireGlobalLimits('shared', { path: lockPath, maxPath, timeoutMs: 300 })).rejects.toThrow(/not shared within 300 ms/);
    await ended(writer, 'release');
  });

  it('records the original limit before changing it, and restores it at release', async () => {
    await withGlobalLimits('exclusive', async (lock) => {
      expect(lock.ensureMax(100_000)).toBe(262144); // never lowers
      expect(record()).toBe('');
      lock.setMax(65536);
      expect(max()).toBe(65536);
      expect(JSON.parse(record())).toEqual({ pid: process.pid, original: 262144, set: 65536 });
      expect(lock.ensureMax(110_000)).toBe(110_000);
      expect(JSON.parse(record())).toMatchObject({ original: 262144, set: 110_000 });
    }, { path: lockPath, maxPath });
    expect(max()).toBe(262144);
    expect(record()).toBe('');
  });

  it('undoes the change of a holder killed with the lock, whoever takes it next', async () => {
    const killed = await holder('exclusive', 1000);
    expect(max()).toBe(1000);
    await ended(killed, 'kill');
    // A reader comes next: it must not read the killed holder's limit.
    const lines: string[] = [];
    const reader = await acquireGlobalLimits('shared', { path: lockPath, maxPath, timeoutMs: 2000, log: (line) => lines.push(line) });
    expect(max()).toBe(262144);
    expect(record()).toBe('');
    expect(lines.join('\n')).toMatch(/restored nf_conntrack_max 262144 \(pid \d+ left it at 1000\)/);
    reader.release();
  });

  it('two readers arriving together after a killed holder both get in, and the limit is restored once', async () => {
    const killed = await holder('exclusive', 1000);
    await ended(killed, 'kill');
    const [first, second] = await Promise.all([acquireInChild('shared', 5000), acquireInChild('shared', 5000)]);
    expect([first, second]).toEqual(['taken', 'taken']);
    expect(max()).toBe(262144);
    expect(record()).toBe('');
  });

  it('leaves a limit alone that someone else changed after the killed holder', async () => {
    const killed = await holder('exclusive', 1000);
    await ended(killed, 'kill');
    writeFileSync(maxPath, '5000\n');
    const lock = await acquireGlobalLimits('exclusive', { path: lockPath, maxPath, timeoutMs: 2000, ...quiet });
    expect(max()).toBe(5000);
    expect(record()).toBe('');
    lock.release();
  });

  it('can be taken again in one process, but not upgraded from shared (it would wait for itself)', async () => {
    const outer = await acquireGlobalLimits('exclusive', { path: lockPath, maxPath, ...quiet });
    const inner = await acquireGlobalLimits('shared', { path: lockPath, maxPath, ...quiet });
    inner.release();
    // Still held by `outer`: another process cannot have it.
    await expect(acquireInChild('shared')).resolves.toBe('timeout');
    outer.release();
    await expect(acquireInChild('exclusive')).resolves.toBe('taken');

    const reader = await acquireGlobalLimits('shared', { path: lockPath, maxPath, ...quiet });
    await expect(acquireGlobalLimits('exclusive', { path: lockPath, maxPath, ...quiet })).rejects.toThrow(/would wait for itself/);
    reader.release();
  });

  it('refuses to change the limit under a shared lock', async () => {
    const reader = await acquireGlobalLimits('shared', { path: lockPath, maxPath, ...quiet });
    expect(() => reader.setMax(1)).toThrow(/exclusive/);
    reader.release();
    expect(max()).toBe(262144);
  });
});

async function acquireInChild(mode: 'shared' | 'exclusive', timeoutMs = 300): Promise<'taken' | 'timeout'> {
  const script = `
    const { acquireGlobalLimits } = await import(${JSON.stringify(MODULE)});
    try {
      const lock = await acquireGlobalLimits(${JSON.stringify(mode)}, { path: ${JSON.stringify(lockPath)}, maxPath: ${JSON.stringify(maxPath)}, timeoutMs: ${timeoutMs}, log: () => {} });
      lock.release();
      console.log('taken');
    } catch { console.log('timeout'); }
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  let out = '';
  child.stdout?.on('data', (chunk: Buffer) => { out += chunk.toString(); });
  await once(child, 'exit');
  return out.trim() as 'taken' | 'timeout';
}
