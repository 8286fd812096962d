/**
 * Runs one CLI command (lib/cli) in this process, with its stdout and stderr captured as text.
 */
import { PassThrough } from 'node:stream';
import type { Command } from '../../lib/cli/common.js';

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
