/**
 * `conntrack delete [filters]`, `conntrack flush` and `conntrack fill`: the table-changing
 * commands of `conntrack -D` and `conntrack -F`, and a filler of synthetic entries for rehearsing
 * a full table.
 */
import { parseArgs } from 'node:util';

import { Conntrack } from '../table/conntrack.js';
import type { Family } from '../base/types.js';
import { json, netnsOption, run, UsageError, write, type Command } from './common.js';
import { FILTER_USAGE, LIST_OPTIONS, filterFromOptions } from './core.js';

const DELETE_USAGE = `usage: conntrack delete [filters] [--netns PATH|PID] [--json]
${FILTER_USAGE}
Deletes every entry the filters select (at least one filter; conntrack flush empties the table).`;

const FLUSH_USAGE = 'usage: conntrack flush [-f/--family ipv4|ipv6] [--netns PATH|PID] [--json]';

export const deleteCommand: Command = (argv, io) =>
  run(io, DELETE_USAGE, async () => {
    const { values } = parseArgs({ args: argv, options: LIST_OPTIONS, strict: true });
    if (values.jsonl) throw new UsageError('--jsonl is for streams: use --json');
    const filter = filterFromOptions(values);
    if (Object.keys(filter).length === 0) throw new UsageError('give at least one filter (conntrack flush empties the table)');
    const ct = await Conntrack.open(netnsOption(values.netns));
    try {
      const result = await ct.deleteMatching(filter);
      if (values.json) {
        json(io.stdout, result);
      } else {
        const gone = result.alreadyGone > 0 ? `, ${result.alreadyGone} gone before their turn` : '';
        const failed = result.failed > 0 ? `, ${result.failed} refused (errno ${result.errno})` : '';
        write(io.stderr, `conntrack: ${result.deleted} flow entries deleted${gone}${failed}`);
      }
      return result.failed > 0 ? 1 : 0;
    } finally {
      await ct.close();
    }
  });

export const flushCommand: Command = (argv, io) =>
  run(io, FLUSH_USAGE, async () => {
    const { values } = parseArgs({
      args: argv,
      options: { netns: { type: 'string' }, json: { type: 'boolean', default: false }, family: { type: 'string', short: 'f' } },
      strict: true,
    });
    if (values.family !== undefined && values.family !== 'ipv4' && values.family !== 'ipv6') {
      throw new UsageError(`--family takes ipv4 or ipv6, got "${values.family}"`);
    }
    const ct = await Conntrack.open(netnsOption(values.netns));
    try {
      await ct.flush(values.family === undefined ? {} : { family: values.family as Family });
    } finally {
      await ct.close();
    }
    if (values.json) json(io.stdout, { flushed: true });
    else write(io.stderr, 'conntrack: connection tracking table has been emptied');
    return 0;
  });
