/**
 * A dump's decoder thread publishes the end, unlocks, and only then makes its last wake-up call.
 * If it is descheduled in between, the main thread can read the end and release the wake-up
 * function first, and the late call then uses freed memory. A debugger makes that schedule
 * certain: gdb (non-stop mode) holds the decoder at the call while the main thread reads the end.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { BUILT_LIB } from '../../helpers/cli.js';
import { describeIntegration, requireTool } from '../../helpers/gate.js';
import { createNetns, destroyAllNetns, type Netns } from '../../helpers/netns.js';

const CHILD = fileURLToPath(new URL('../../helpers/wakeup-child.mjs', import.meta.url));
const BINDING = join(BUILT_LIB, 'binding', 'native.js');

// Every thread but the main one (gdb's thread 1) that calls the thread-safe function is a dump's.
const GDB_SCRIPT = [
  'set pagination off',
  'set confirm off',
  'set non-stop on',
  'set startup-with-shell off',
  'handle SIGPIPE nostop noprint',
  'break napi_call_threadsafe_function if $_thread != 1',
  'commands',
  '  silent',
  '  printf "ctt-gdb: dump thread held\\n"',
  'end',
].join('\n');

describeIntegration('the wake-up function and the dump thread', () => {
  let ns: Netns;
  let dir: string;
  let script: string;

  beforeAll(async () => {
    ns = await createNetns('wakeup');
    dir = mkdtempSync(join(tmpdir(), 'ctt-wakeup-'));
    script = join(dir, 'hold.gdb');
    writeFileSync(script, `${GDB_SCRIPT}\n`);
  });

  afterAll(async () => {
    if (dir) rmSync(dir, { recursive: true, force: true });
    await destroyAllNetns();
  });

  it('a decoder held between publishing the end and its last wake-up call: the main thread waits for it instead of freeing the function', async () => {
    // MALLOC_PERTURB_ fills freed memory, so a call through a freed function fails loudly.
    const gdb = spawn(requireTool('gdb'), ['-q', '-nx', '-x', script, '--args', process.execPath, CHILD, BINDING, ns.path], {
      env: { ...process.env, MALLOC_PERTURB_: '190' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let output = '';
    const waiters = new Set<() => void>();
    const collect = (chunk: Buffer) => {
      output += chunk.toString();
      for (const wake of waiters) wake();
    };
    gdb.stdout.on('data', collect);
    gdb.stderr.on('data', collect);
    const exited = new Promise<void>((resolve) => gdb.on('exit', () => resolve()));
    const waitFor = (pattern: RegExp, timeoutMs = 20_000) => new Promise<void>((resolve, reject) => {
      const check = () => {
        if (!pattern.test(output)) return;
        waiters.delete(check);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`gdb: no ${pattern} in:\n${output}`));
      }, timeoutMs);
      waiters.add(check);
      check();
    });
    try {
      gdb.stdin.write('run\n');
      await waitFor(/ctt-gdb: dump thread held/);
      // The child reads the end 300 ms after the dump started; give it time to release the
      // function and its event loop time to free it, then let the decoder make its call.
      await new Promise((resolve) => setTimeout(resolve, 1000));
      const released = output.length;
      gdb.stdin.write('continue -a\n');
      await waitFor(/exited normally|exited with code|received signal/);
      expect(output).not.toMatch(/received signal/);
      expect(output).toMatch(/exited normally/);
      // The read of the end waited for the decoder: it settled only after gdb let the thread go.
      expect(output.indexOf('read: null')).toBeGreaterThan(released);
      expect(output).toContain('alive');
    } finally {
      gdb.stdin.end('kill\nquit\n');
      await exited;
    }
  }, 60_000);
}, { tools: ['gdb'] });
