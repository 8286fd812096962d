/**
 * `conntrack top`: the largest groups of entries (by destination port, state, source…), counted
 * from the native records without building entries; once, or every --interval seconds. With
 * --live each refresh counts from a mirror (Conntrack.mirror()) kept current by events, instead of
 * dumping the table again.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';

import { Conntrack } from '../table/conntrack.js';
import { SUMMARY_KEYS, type Summary, type SummaryKey } from '../table/summary.js';
import { integerOption, json, netnsOption, numberOption, run, stopOnTermination, UsageError, write, type Command } from './common.js';
import { FILTER_USAGE, LIST_OPTIONS, filterFromOptions } from './core.js';

const DEFAULT_BY: readonly SummaryKey[] = ['protocol', 'tcpState', 'dport'];

const USAGE = `usage: conntrack top [filters] [--by KEY[,KEY..]] [-n N] [--interval S [--count N]] [--live] [--netns PATH|PID] [--json]
--live: refresh from a live mirror of the table (events, resynced on loss) instead of a dump each time; --interval defaults to 1
keys: ${SUMMARY_KEYS.join(', ')} (default ${DEFAULT_BY.join(',')})
${FILTER_USAGE}`;

export function formatSummary(summary: Summary, by: readonly SummaryKey[]): string {
  const header = ['count', '%', ...by];
  const rows = summary.groups.map((g) => [
    String(g.count),
    summary.total > 0 ? `${((g.count / summary.total) * 100).toFixed(1)}%` : '-',
    ...by.map((key) => (g.key[key] === undefined ? '-' : String(g.key[key]))),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)));
  // Numbers right-aligned, keys left-aligned.
  const line = (cells: string[]) => cells.map((c, i) => (i < 2 ? c.padStart(widths[i] as number) : c.padEnd(widths[i] as number))).join('  ').trimEnd();
  return [`${summary.total} entries, by ${by.join(',')}`, line(header), ...rows.map(line)].join('\n');
}

export const topCommand: Command = (argv, io) =>
  run(io, USAGE, async () => {
    const { values } = parseArgs({
      args: argv,
      strict: true,
      options: { ...LIST_OPTIONS, by: { type: 'string' }, n: { type: 'string', short: 'n' }, interval: { type: 'string' }, count: { type: 'string' }, live: { type: 'boolean', default: false } },
    });
    if (values.jsonl) throw new UsageError('--jsonl: use --json (one object per refresh)');
    const by = values.by === undefined ? DEFAULT_BY : (values.by.split(',') as SummaryKey[]);
    for (const key of by) if (!SUMMARY_KEYS.includes(key)) throw new UsageError(`--by: unknown key "${key}"`);
    const top = integerOption('n', values.n, 1) ?? 20;
    const live = values.live === true;
    const interval = numberOption('interval', values.interval) ?? (live ? 1 : undefined);
    if (interval !== undefined && interval <= 0) throw new UsageError('--interval takes seconds above 0');
    const count = integerOption('count', values.count, 1) ?? (interval === undefined ? 1 : undefined);
    const filter = filterFromOptions(values);

    const stop = stopOnTermination();
    try {
      const ct = await Conntrack.open(netnsOption(values.netns));
      // The mirror holds only what the filter selects, so its summaries need no filter.
      const mirror = live ? await ct.mirror(filter).catch(async (err: unknown) => {
        await ct.close();
        throw err;
      }) : undefined;
      try {
        const clear = interval !== undefined && (io.stdout as NodeJS.WriteStream).isTTY === true && !values.json;
        for (let shown = 0; !stop.signal.aborted && (count === undefined || shown < count); shown++) {
          if (shown > 0) {
            try {
              await sleep((interval ?? 0) * 1000, undefined, { signal: stop.signal });
            } catch {
              break; // Ctrl-C while waiting
            }
          }
          const summary = mirror ? mirror.summarize({ by, top }) : await ct.summarize(filter, { by, top });
          if (values.json) json(io.stdout, { time: new Date().toISOString(), ...summary, ...(mirror && { resyncs: mirror.resyncs }) });
          else write(io.stdout, `${clear ? '\u001b[H\u001b[2J' : shown > 0 ? '\n' : ''}${formatSummary(summary, by)}`);
        }
        return 0;
      } finally {
        mirror?.close();
        await ct.close();
      }
    } finally {
      stop.dispose();
    }
  });
