#!/usr/bin/env node
/**
 * `conntrack`: the command-line face of the library. With no command it prints the status
 * summary; every command takes --netns and --json.
 */
import type { Command } from './common.js';
import { isConntrackToolsSyntax } from './ct-syntax.js';

// Each command loads only its own modules: `conntrack count` every second from a script should
// not pay for the doctor's child processes or the tuning code.
const COMMANDS: Record<string, () => Promise<Command>> = {
  count: async () => (await import('./core.js')).countCommand,
  stats: async () => (await import('./core.js')).statsCommand,
  list: async () => (await import('./core.js')).listCommand,
  events: async () => (await import('./events.js')).eventsCommand,
  delete: async () => (await import('./changes.js')).deleteCommand,
  top: async () => (await import('./top.js')).topCommand,
  flush: async () => (await import('./changes.js')).flushCommand,
  fill: async () => (await import('./fill.js')).fillCommand,
  sysctl: async () => (await import('./tuning.js')).sysctlCommand,
  size: async () => (await import('./tuning.js')).sizeCommand,
  persist: async () => (await import('./tuning.js')).persistCommand,
  doctor: async () => (await import('./doctor.js')).doctorCommand,
  watch: async () => (await import('./watch.js')).watchCommand,
  exporter: async () => (await import('./exporter.js')).exporterCommand,
};

const HELP = `usage: conntrack [COMMAND] [options]

  (none)     status summary: entries, limit, usage, buckets, drop counters
  count      entries and limit (one GET_STATS request)
  stats      per-CPU counters, like conntrack -S (--expect: expectation table)
  list       stream entries, with filters (conntrack list --help); list expect: the expectations
  events     new/update/destroy events as they happen, like conntrack -E (--expect: expectations); lost events are shown
  top        the largest groups of entries (--by dport,tcpState,src…), once or every --interval
  delete     delete the entries the filters select, like conntrack -D
  flush      delete every entry (of one family with -f), like conntrack -F
  fill       create N synthetic entries fast, to rehearse a full table (conntrack fill --help)
  sysctl     get, set or describe net.netfilter.nf_conntrack_* settings
  size       recommend nf_conntrack_max and buckets for N connections, with memory cost
  persist    render (or --apply) the files that keep settings across reboots
  doctor     is the table full or filling, dropping packets, badly sized? evidence and fixes
  watch      a line per interval: entries, usage, growth per second, new drops (--jsonl)
  exporter   serve Prometheus metrics for one or more namespaces (conntrack exporter --help)

Every command takes --netns PATH|PID (exporter: repeatable); the one-shot commands take --json.

conntrack-tools' syntax works too, with the same output and exit statuses (-o json/jsonl added):
  conntrack -L [-o extended,id,ktimestamp,labels,xml] [filters]   -G, -D, -I, -U, -E, -F, -C, -S
The same command is installed as \`ctk\`, a name that does not collide with conntrack-tools'.`;

export async function main(argv: string[], io = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  const [first, ...rest] = argv;
  if (first === '--help' || first === '-h' || first === 'help') {
    io.stdout.write(`${HELP}\n`);
    return 0;
  }
  // conntrack-tools' language (`conntrack -L -p tcp …`) is told apart by its leading command option.
  if (isConntrackToolsSyntax(argv)) return (await import('./ct-commands.js')).runConntrackTools(argv, io);
  if (first === undefined || first.startsWith('-')) return (await import('./core.js')).summaryCommand(argv, io);
  const load = COMMANDS[first];
  if (load === undefined) {
    io.stderr.write(`conntrack: unknown command '${first}'\n${HELP}\n`);
    return 2;
  }
  return (await load())(rest, io);
}

// Stdout closed early (for example piped into `head`) is not an error.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});

process.exitCode = await main(process.argv.slice(2));
