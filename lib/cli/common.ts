/**
 * What every CLI command shares: its signature, output helpers, option parsing and the
 * mapping of errors to messages and exit codes (0 success, 1 failure, 2 bad command line).
 */
import { ConntrackError } from '../base/errors.js';
import type { NetnsSpec } from '../base/types.js';

export interface CommandIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

export type Command = (argv: string[], io: CommandIo) => Promise<number>;

export class UsageError extends Error {}

export function write(stream: NodeJS.WritableStream, text: string): void {
  stream.write(text.endsWith('\n') ? text : `${text}\n`);
}

export function json(stream: NodeJS.WritableStream, value: unknown): void {
  write(stream, JSON.stringify(value, null, 2));
}

/** Runs a command body, turning errors into messages and exit codes. */
export async function run(io: CommandIo, usage: string, body: () => Promise<number>): Promise<number> {
  try {
    return await body();
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (error instanceof UsageError || (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS'))) {
      write(io.stderr, `conntrack: ${(error as Error).message}\n${usage}`);
      return 2;
    }
    if (error instanceof ConntrackError) {
      write(io.stderr, `conntrack: ${error.message}`);
      return 1;
    }
    write(io.stderr, `conntrack: unexpected error: ${(error as Error)?.stack ?? String(error)}`);
    return 1;
  }
}

export function integerOption(name: string, text: string | undefined, min: number): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(Number(text)) || Number(text) < min) {
    throw new UsageError(`--${name} takes an integer >= ${min}, got "${text}"`);
  }
  return Number(text);
}

export function numberOption(name: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+(\.\d+)?$/.test(text)) throw new UsageError(`--${name} takes a number, got "${text}"`);
  return Number(text);
}

export function netnsOption(text: string | undefined): { netns?: NetnsSpec } {
  if (text === undefined) return {};
  const netns: NetnsSpec = /^\d+$/.test(text) ? Number(text) : text;
  return { netns };
}

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}


/**
 * For commands that run until stopped: a signal that aborts on the first SIGINT or SIGTERM.
 * A second SIGINT gets Node's default handling, so a stuck shutdown can still be interrupted.
 */
export function stopOnTermination(): { signal: AbortSignal; dispose(): void } {
  const controller = new AbortController();
  const stop = (name: NodeJS.Signals) => controller.abort(name);
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  return {
    signal: controller.signal,
    dispose() {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
    },
  };
}

/** Resolves when `signal` aborts. */
export function aborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener('abort', () => resolve(), { once: true });
  });
}
