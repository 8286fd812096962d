#!/usr/bin/env node
/**
 * `conntrack`: the command-line face of the library. With no command it prints the status
 * summary; every command takes --netns and --json.
 */
import { countCommand, listCommand, statsCommand, summaryCommand } from './cli/core.js';
import type { Command } from './cli/common.js';
import { doctorCommand } from './cli/doctor.js';
import { persistCommand, sizeCommand, sysctlCommand } from './cli/tuning.js';

const COMMANDS: Record<string, Command> = {
  count: countCommand,
  stats: statsCommand,
  list: listCommand,
  sysctl: sysctlCommand,
  size: sizeCommand,
  persist: persistCommand,
  doctor: doctorCommand,
};

const HELP = `usage: conntrack [COMMAND] [options]

  (none)     status summary: entries, limit, usage, buckets, drop counters
  count      entries and limit (one GET_STATS request)
  stats      per-CPU counters, like conntrack -S (--expect: expectation table)
  list       stream entries, with filters (conntrack list --help)
  sysctl     get, set or describe net.netfilter.nf_conntrack_* settings
  size       recommend nf_conntrack_max and buckets for N connections, with memory cost
  persist    render (or --apply) the files that keep settings across reboots
  doctor     is the table full or filling, dropping packets, badly sized? evidence and fixes

Every command takes --netns PATH|PID and --json.`;

export async function main(argv: string[], io = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  const [first, ...rest] = argv;
  if (first === '--help' || first === '-h' || first === 'help') {
    io.stdout.write(`${HELP}\n`);
    return 0;
  }
  if (first === undefined || first.startsWith('-')) return summaryCommand(argv, io);
  const command = COMMANDS[first];
  if (command === undefined) {
    io.stderr.write(`conntrack: unknown command '${first}'\n${HELP}\n`);
    return 2;
  }
  return command(rest, io);
}

// Stdout closed early (for example piped into `head`) is not an error.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});

process.exitCode = await main(process.argv.slice(2));
