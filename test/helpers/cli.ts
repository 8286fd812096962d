/**
 * Runs CLI commands: one command (lib/cli) in this process with its output captured as text, or
 * the built command as a child process, here or inside a test namespace.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import type { Command } from '../../lib/cli/common.js';
import type { Netns } from './netns.js';

export interface CommandResult {
  /** The exit code the command returned. */
  code: number;
  out: string;
  err: string;
}

export async function runCommand(command: Command, argv: string[]): Promise<CommandResult> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
  const code = await command(argv, { stdout, stderr });
  return { code, out, err };
}

/**
 * The built library and command; integration tests run them as users do. The integration
 * project's global setup (test/setup/build-dist.ts) compiles them from this checkout first.
 */
export const BUILT_LIB = fileURLToPath(new URL('../../dist/lib', import.meta.url));
export const BUILT_CLI = join(BUILT_LIB, 'cli', 'main.js');
export const BUILT_INDEX = join(BUILT_LIB, 'index.js');

export interface CliProcess {
  readonly child: ChildProcess;
  /** Everything written so far. */
  readonly stdout: () => string;
  readonly stderr: () => string;
  /** Resolves with the first match of `pattern` in the stream; rejects if the process ends first or time runs out. */
  waitFor(stream: 'stdout' | 'stderr', pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  /** Resolves when the process has ended and its output has been read. */
  readonly exited: Promise<{ status: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts the built CLI, inside `ns` when given (`ip netns exec` execs it: the pid is node's). */
export function startCli(args: readonly string[], ns?: Netns): CliProcess {
  const argv = [BUILT_CLI, ...args];
  const options: SpawnOptions = { stdio: ['ignore', 'pipe', 'pipe'] };
  const child = ns === undefined ? spawn(process.execPath, argv, options) : ns.spawn(process.execPath, argv, options);
  const text = { stdout: '', stderr: '' };
  const waiters = new Set<() => void>();
  const wake = () => { for (const waiter of waiters) waiter(); };
  child.stdout?.on('data', (chunk: Buffer) => { text.stdout += chunk.toString(); wake(); });
  child.stderr?.on('data', (chunk: Buffer) => { text.stderr += chunk.toString(); wake(); });
  let ended = false;
  const exited = new Promise<{ status: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('close', (status, signal) => {
      ended = true;
      wake();
      resolve({ status, signal });
    });
  });
  return {
    child,
    stdout: () => text.stdout,
    stderr: () => text.stderr,
    exited,
    waitFor(stream, pattern, timeoutMs = 20_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => finish(new Error(`no ${pattern} on ${stream} within ${timeoutMs} ms; stderr: ${text.stderr.trim()}`)), timeoutMs);
        const finish = (error?: Error, match?: RegExpMatchArray) => {
          clearTimeout(timer);
          waiters.delete(check);
          if (match) resolve(match);
          else reject(error);
        };
        const check = () => {
          const match = pattern.exec(text[stream]);
          if (match) finish(undefined, match);
          else if (ended) finish(new Error(`the command ended without ${pattern} on ${stream}; stdout: ${text.stdout.trim()}; stderr: ${text.stderr.trim()}`));
        };
        waiters.add(check);
        check();
      });
    },
  };
}

/** Runs the built CLI to its end (killed after `timeoutMs`); never rejects on a non-zero exit. */
export async function runCli(args: readonly string[], ns?: Netns, timeoutMs = 60_000): Promise<{ status: number | null; stdout: string; stderr: string }> {
  const cli = startCli(args, ns);
  const timer = setTimeout(() => cli.child.kill('SIGKILL'), timeoutMs);
  const { status } = await cli.exited;
  clearTimeout(timer);
  return { status, stdout: cli.stdout(), stderr: cli.stderr() };
}
