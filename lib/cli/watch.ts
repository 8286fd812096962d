/**
 * `conntrack watch`: one line per interval from one open handle, for benchmark scripts and people
 * watching a table fill: entries, limit, usage, growth per second, time until full and new drops;
 * a sparkline of usage on a terminal; an exit status when usage passes a threshold.
 */
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';

import { Conntrack } from '../table/conntrack.js';
import { sampleNamespace } from '../metrics/metrics.js';
import { GrowthTracker } from '../metrics/growth.js';
import type { CpuCounters } from '../base/types.js';
import { integerOption, netnsOption, numberOption, run, stopOnTermination, UsageError, write, type Command } from './common.js';

/** Exit status of --fail-above. */
export const FAIL_ABOVE_STATUS = 3;
/** Usages in the sparkline. */
const SPARK_WIDTH = 20;
const SPARKS = '▁▂▃▄▅▆▇█';

const WATCH_USAGE = `usage: conntrack watch [--interval SECONDS] [--count N] [--netns PATH|PID] [--jsonl] [--fail-above PERCENT]
  --interval    seconds between lines (default 1; fractions such as 0.2 work)
  --count       stop after N lines (default: run until SIGINT)
  --jsonl       one JSON object per line: time, entries, max, usage, entriesPerSecond, timeToFullSeconds, changes
  --fail-above  stop with exit status 3 after the first line whose usage is above PERCENT (0 to 100)
The first line has no rate and no changes: there is nothing to compare it with yet. "full in" is the
time until the limit at the growth rate of the last minute (least squares), once 5 s have been seen;
"-" while the table does not grow. On a terminal a sparkline shows the last ${SPARK_WIDTH} usages, scaled
from the lowest to the highest of them.`;

/** Longest interval: one day (setTimeout cannot wait much beyond 24 days anyway). */
const MAX_INTERVAL_SECONDS = 86_400;

/** The counters whose rise means connections were refused or evicted. */
const DROP_COUNTERS = ['drop', 'early_drop', 'insert_failed'] as const;

export interface WatchSample {
  time: Date;
  /** performance.now() when the sample was taken: rates use it, so clock steps do not matter. */
  at: number;
  entries: number;
  max: number;
  counters: CpuCounters;
}

export interface WatchLine {
  time: string;
  entries: number;
  max: number;
  /** entries / max; null when nf_conntrack_max is 0 (no limit). */
  usage: number | null;
  /** Change of entries per second since the previous line; null on the first line. */
  entriesPerSecond: number | null;
  /** Seconds until full at the recent growth rate; null while there is too little history or no growth. */
  timeToFullSeconds: number | null;
  /** How much each counter rose since the previous line (summed over CPUs); null on the first line. */
  changes: Record<(typeof DROP_COUNTERS)[number], number> | null;
}

export function watchLine(previous: WatchSample | undefined, current: WatchSample, timeToFullSeconds?: number): WatchLine {
  const seconds = previous === undefined ? 0 : (current.at - previous.at) / 1000;
  const change = (name: (typeof DROP_COUNTERS)[number]) => (current.counters[name] ?? 0) - (previous?.counters[name] ?? 0);
  return {
    time: current.time.toISOString(),
    entries: current.entries,
    max: current.max,
    usage: current.max > 0 ? current.entries / current.max : null,
    entriesPerSecond: previous === undefined || seconds <= 0 ? null : Math.round(((current.entries - previous.entries) / seconds) * 10) / 10,
    timeToFullSeconds: timeToFullSeconds === undefined || !Number.isFinite(timeToFullSeconds) ? null : Math.round(timeToFullSeconds * 10) / 10,
    changes: previous === undefined ? null : { drop: change('drop'), early_drop: change('early_drop'), insert_failed: change('insert_failed') },
  };
}

const COLUMNS: ReadonlyArray<readonly [string, number]> = [
  ['time', 24], ['entries', 9], ['max', 10], ['usage', 7], ['entries/s', 10], ['full in', 8], ['drop', 7], ['early_drop', 11], ['insert_failed', 14],
];

/** A duration as a person reads it: 45s, 12m, 3.5h, 2.1d. */
export function formatDuration(seconds: number): string {
  if (seconds < 60) return `${Math.round(seconds)}s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)}m`;
  if (seconds < 86_400) return `${(seconds / 3600).toFixed(1)}h`;
  return `${(seconds / 86_400).toFixed(1)}d`;
}

/** Usages as block characters, from the lowest of them (▁) to the highest (█). */
export function sparkline(usages: readonly number[]): string {
  const low = Math.min(...usages);
  const high = Math.max(...usages);
  return usages.map((u) => SPARKS[high > low ? Math.round(((u - low) / (high - low)) * (SPARKS.length - 1)) : 0]).join('');
}

export const WATCH_HEADER = COLUMNS.map(([name, width], i) => (i === 0 ? name.padEnd(width) : name.padStart(width))).join(' ');

export function formatWatchLine(line: WatchLine): string {
  const rate = line.entriesPerSecond === null ? '-' : `${line.entriesPerSecond >= 0 ? '+' : ''}${line.entriesPerSecond.toFixed(1)}`;
  const cells = [
    line.time,
    String(line.entries),
    String(line.max),
    line.usage === null ? 'n/a' : `${(line.usage * 100).toFixed(1)}%`,
    rate,
    line.timeToFullSeconds === null ? '-' : formatDuration(line.timeToFullSeconds),
    ...DROP_COUNTERS.map((name) => (line.changes === null ? '-' : String(line.changes[name]))),
  ];
  return cells.map((cell, i) => (i === 0 ? cell.padEnd(COLUMNS[i]?.[1] ?? 0) : cell.padStart(COLUMNS[i]?.[1] ?? 0))).join(' ');
}

/** Waits `ms`; false if `signal` aborted first. */
function sleep(ms: number, signal: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal.aborted) {
      resolve(false);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve(true);
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

export const watchCommand: Command = (argv, io) =>
  run(io, WATCH_USAGE, async () => {
    const { values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        interval: { type: 'string' },
        count: { type: 'string' },
        netns: { type: 'string' },
        jsonl: { type: 'boolean', default: false },
        'fail-above': { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
    if (values.help) {
      write(io.stdout, WATCH_USAGE);
      return 0;
    }
    if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
    const interval = numberOption('interval', values.interval) ?? 1;
    if (interval <= 0 || interval > MAX_INTERVAL_SECONDS) {
      throw new UsageError(`--interval takes seconds above 0 and at most ${MAX_INTERVAL_SECONDS}, got "${values.interval}"`);
    }
    const count = integerOption('count', values.count, 1);
    const intervalMs = interval * 1000;
    const failAbove = numberOption('fail-above', values['fail-above']);
    if (failAbove !== undefined && failAbove > 100) throw new UsageError(`--fail-above takes a percentage from 0 to 100, got "${values['fail-above']}"`);
    const tty = (io.stdout as { isTTY?: boolean }).isTTY === true && !values.jsonl;
    // The last minute, or ten lines when they are further apart.
    const growth = new GrowthTracker(Math.max(60, 10 * interval));
    const usages: number[] = [];

    // Listening before the open: a Ctrl-C while it opens still ends with status 0.
    const stop = stopOnTermination();
    try {
      const ct = await Conntrack.open(netnsOption(values.netns));
      try {
        if (!values.jsonl && !stop.signal.aborted) write(io.stdout, tty ? `${WATCH_HEADER}  usage trend` : WATCH_HEADER);
        const start = performance.now();
        let slot = 0;
        let previous: WatchSample | undefined;
        for (let printed = 0; !stop.signal.aborted && (count === undefined || printed < count); printed++) {
          if (printed > 0) {
            // Lines are due at start + k·interval, so a slow sample delays one line, never all the
            // lines after it. Slots already missed are skipped; a slot is never used twice (timers
            // can fire a little early, and the slot just served would still look current).
            const elapsed = performance.now() - start;
            slot = Math.max(slot + 1, Math.floor(elapsed / intervalMs) + 1);
            if (!(await sleep(slot * intervalMs - elapsed, stop.signal))) break;
          }
          const time = new Date();
          const at = performance.now();
          const sample = await sampleNamespace(ct);
          const current: WatchSample = { time, at, entries: sample.entries, max: sample.max, counters: sample.counters };
          growth.add(at / 1000, current.entries);
          const line = watchLine(previous, current, growth.timeToFull(current.max));
          let text = values.jsonl ? JSON.stringify(line) : formatWatchLine(line);
          if (tty && line.usage !== null) {
            usages.push(line.usage);
            if (usages.length > SPARK_WIDTH) usages.shift();
            text += `  ${sparkline(usages)}`;
          }
          write(io.stdout, text);
          previous = current;
          if (failAbove !== undefined && line.usage !== null && line.usage * 100 > failAbove) {
            write(io.stderr, `conntrack watch: usage ${(line.usage * 100).toFixed(1)}% is above ${failAbove}% (${line.entries} of ${line.max} entries)`);
            return FAIL_ABOVE_STATUS;
          }
        }
        return 0;
      } finally {
        await ct.close();
      }
    } finally {
      stop.dispose();
    }
  });
