/**
 * `conntrack events`: the table's events as they happen, like `conntrack -E`, with lost events
 * shown where they were lost instead of vanishing.
 */
import { parseArgs } from 'node:util';

import { Conntrack } from '../table/conntrack.js';
import type { ConntrackEvent, ConntrackEventType, ExpectationEvent, OverflowEvent } from '../base/types.js';
import { integerOption, netnsOption, run, stopOnTermination, UsageError, write, type Command } from './common.js';
import { FILTER_USAGE, LIST_OPTIONS, filterFromOptions, formatEntry, formatExpectation, toJson, writeLines } from './core.js';

const USAGE = `usage: conntrack events [filters] [--types new,update,destroy] [--count N] [--netns PATH|PID] [--jsonl]
       conntrack events --expect [--types new,destroy] [--count N] [--netns PATH|PID] [--jsonl]
${FILTER_USAGE}
--expect: the expectation table's events instead, like conntrack -E expect (filters do not apply).
Runs until Ctrl-C (or N events). An [OVERFLOW] line marks events the kernel had to drop because
this reader fell behind; dump the table again (conntrack list) to resynchronise.`;

const EVENT_TYPES: readonly ConntrackEventType[] = ['new', 'update', 'destroy'];

function typesOption(text: string | undefined): ConntrackEventType[] | undefined {
  if (text === undefined) return undefined;
  const types = text.toLowerCase().split(',');
  for (const type of types) {
    if (!EVENT_TYPES.includes(type as ConntrackEventType)) throw new UsageError(`--types takes ${EVENT_TYPES.join(',')}, got "${type}"`);
  }
  return types as ConntrackEventType[];
}

/** One expectation event in the layout of `conntrack -E expect`. */
export function formatExpectationEvent(event: ExpectationEvent | OverflowEvent): string {
  if (event.type === 'overflow') return formatEvent(event);
  return `${`[${event.type.toUpperCase()}]`.padStart(9)} ${formatExpectation(event.expectation)}`;
}

/** One event in the layout of `conntrack -E -o extended,id`. */
export function formatEvent(event: ConntrackEvent | OverflowEvent): string {
  if (event.type === 'overflow') {
    return `[OVERFLOW] events lost (the kernel reported ${event.count} ${event.count === 1 ? 'overflow' : 'overflows'}): the reader fell behind`;
  }
  return `${`[${event.type.toUpperCase()}]`.padStart(9)} ${formatEntry(event.entry)}`;
}

export const eventsCommand: Command = (argv, io) =>
  run(io, USAGE, async () => {
    const { values } = parseArgs({
      args: argv,
      options: { ...LIST_OPTIONS, types: { type: 'string' }, count: { type: 'string' }, expect: { type: 'boolean', default: false } },
      strict: true,
    });
    if (values.json) throw new UsageError('events are a stream: use --jsonl');
    const filter = filterFromOptions(values);
    if (values.expect && Object.keys(filter).length > 0) throw new UsageError('filters select entries: --expect takes none');
    const types = typesOption(values.types);
    const limit = integerOption('count', values.count, 1);

    const stop = stopOnTermination();
    let shown = 0;
    let lost = 0;
    try {
      const ct = await Conntrack.open(netnsOption(values.netns));
      try {
        const events: AsyncIterable<ConntrackEvent | ExpectationEvent | OverflowEvent> = values.expect
          ? ct.expectationEvents({ types, signal: stop.signal })
          : ct.events(filter, { types, signal: stop.signal });
        await writeLines(io, (async function* () {
          try {
            for await (const event of events) {
              if (event.type === 'overflow') lost += event.count;
              else shown++;
              const line = 'expectation' in event ? formatExpectationEvent(event) : formatEvent(event);
              yield values.jsonl ? toJson(event) : line;
              if (limit !== undefined && shown >= limit) return;
            }
          } catch (err) {
            if ((err as Error).name !== 'AbortError') throw err;
          }
        })());
      } finally {
        await ct.close();
      }
    } finally {
      stop.dispose();
    }
    if (!values.jsonl) write(io.stderr, `conntrack: ${shown} events shown${lost > 0 ? `, some lost (${lost} overflows)` : ''}`);
    return 0;
  });
