/**
 * Runs a child process to its end without blocking the test's thread. A vitest worker whose thread
 * is blocked (spawnSync) cannot answer its runner: a child that runs over a minute on a loaded
 * machine then fails the whole run with "Timeout calling onTaskUpdate", whatever the child did.
 */
import { spawn } from 'node:child_process';

export interface ChildResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface ChildOptions {
  /** Killed with SIGKILL after this long; the result then carries that signal. */
  timeoutMs: number;
  cwd?: string;
}

export function runChild(command: string, args: readonly string[], options: ChildOptions): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout, stderr });
    });
  });
}

/** `node ...args` in a child: the same Node as the tests. */
export function runNode(args: readonly string[], options: ChildOptions): Promise<ChildResult> {
  return runChild(process.execPath, args, options);
}
