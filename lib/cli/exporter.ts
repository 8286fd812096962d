/**
 * `conntrack exporter`: Prometheus metrics over HTTP(S) for one, several or every namespace of the
 * host, until SIGINT or SIGTERM.
 */
import { parseArgs } from 'node:util';

import { createExporter, DEFAULT_EXPORTER_HOST, DEFAULT_EXPORTER_PORT, type Exporter } from '../metrics/exporter.js';
import { DEFAULT_FORGET_AFTER_SECONDS, DEFAULT_MAX_NAMESPACES } from '../metrics/collector.js';
import { DEFAULT_BREAKDOWN_INTERVAL_SECONDS, DEFAULT_BREAKDOWN_TOP, parseBreakdownKey } from '../metrics/breakdown.js';
import type { NetnsSpec } from '../base/types.js';
import { aborted, integerOption, netnsOption, numberOption, run, stopOnTermination, UsageError, write, type Command } from './common.js';

const EXPORTER_USAGE = `usage: conntrack exporter [--listen HOST:PORT] [--netns PATH|PID]... | --all-namespaces [options]
  --listen               address to serve /metrics on (default ${DEFAULT_EXPORTER_HOST}:${DEFAULT_EXPORTER_PORT}; [IPV6]:PORT for IPv6)
  --netns                a namespace to export; repeat for several (default: this process's namespace)
  --all-namespaces       every network namespace of the host, discovered on each scrape
  --max-namespaces N     with --all-namespaces: export at most N (default ${DEFAULT_MAX_NAMESPACES}); the rest are counted
  --forget-after S       with --all-namespaces: a vanished namespace stays conntrack_up 0 for S seconds (default ${DEFAULT_FORGET_AFTER_SECONDS})
  --breakdown-by KEY     top-N key: dport (default), sport, src, dst, src/24, src/24/64 (IPv6 /64); off: no breakdowns at all
  --breakdown-top N      groups kept in the top-N breakdown, then one "other" (default ${DEFAULT_BREAKDOWN_TOP})
  --breakdown-interval S seconds between breakdowns, which dump each table (default ${DEFAULT_BREAKDOWN_INTERVAL_SECONDS})
  --live-breakdowns      count breakdowns from a live mirror of each table (events; ~100 bytes an entry) instead of dumps
  --web.config.file FILE exporter-toolkit web configuration: TLS and basic authentication
  --node-exporter-names  also emit node_exporter's node_nf_conntrack_* names
Runs until SIGINT or SIGTERM. A namespace that cannot be read is conntrack_up 0, not a failed scrape.`;

/** HOST:PORT or [IPV6]:PORT; port 0 lets the kernel pick one. */
export function parseListen(text: string): { host: string; port: number } {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9._-]+)):(\d{1,5})$/.exec(text);
  const host = match?.[1] ?? match?.[2];
  const port = Number(match?.[3]);
  if (host === undefined || !(port <= 65535)) {
    throw new UsageError(`--listen takes HOST:PORT or [IPV6]:PORT with a port up to 65535, got "${text}"`);
  }
  return { host, port };
}

export const exporterCommand: Command = (argv, io) =>
  run(io, EXPORTER_USAGE, async () => {
    const { values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        listen: { type: 'string' },
        netns: { type: 'string', multiple: true },
        'all-namespaces': { type: 'boolean', default: false },
        'max-namespaces': { type: 'string' },
        'forget-after': { type: 'string' },
        'breakdown-by': { type: 'string' },
        'breakdown-top': { type: 'string' },
        'breakdown-interval': { type: 'string' },
        'live-breakdowns': { type: 'boolean', default: false },
        'web.config.file': { type: 'string' },
        'node-exporter-names': { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
    if (values.help) {
      write(io.stdout, EXPORTER_USAGE);
      return 0;
    }
    if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
    const { host, port } = parseListen(values.listen ?? `${DEFAULT_EXPORTER_HOST}:${DEFAULT_EXPORTER_PORT}`);
    const all = values['all-namespaces'];
    if (all && values.netns !== undefined) throw new UsageError('--all-namespaces and --netns exclude each other');
    for (const name of ['max-namespaces', 'forget-after'] as const) {
      if (!all && values[name] !== undefined) throw new UsageError(`--${name} needs --all-namespaces`);
    }
    const netns = all ? 'all' as const : (values.netns ?? []).map((text) => netnsOption(text).netns as NetnsSpec);
    const positive = (name: 'forget-after' | 'breakdown-interval') => {
      const value = numberOption(name, values[name]);
      if (value !== undefined && value <= 0) throw new UsageError(`--${name} takes seconds above 0, got "${values[name]}"`);
      return value;
    };
    const breakdownBy = values['breakdown-by'] === 'off' ? false as const : values['breakdown-by'];
    if (typeof breakdownBy === 'string') {
      try {
        parseBreakdownKey(breakdownBy);
      } catch (err) {
        throw new UsageError(`--breakdown-by: ${(err as Error).message}; or off`);
      }
    }
    if (breakdownBy === false && (values['breakdown-top'] !== undefined || values['breakdown-interval'] !== undefined || values['live-breakdowns'])) {
      throw new UsageError('--breakdown-top, --breakdown-interval and --live-breakdowns make no sense with --breakdown-by off');
    }
    const settings = {
      netns,
      host,
      port,
      nodeExporterNames: values['node-exporter-names'],
      maxNamespaces: integerOption('max-namespaces', values['max-namespaces'], 1),
      forgetAfterSeconds: positive('forget-after'),
      breakdownBy,
      breakdownTop: integerOption('breakdown-top', values['breakdown-top'], 1),
      breakdownIntervalSeconds: positive('breakdown-interval'),
      breakdownSource: values['live-breakdowns'] ? 'mirror' as const : 'dump' as const,
      webConfig: values['web.config.file'],
    };

    const stop = stopOnTermination();
    try {
      let exporter: Exporter;
      try {
        exporter = await createExporter({ ...settings, signal: stop.signal });
      } catch (err) {
        if (stop.signal.aborted) return 0; // stopped while starting: nothing to close
        throw err;
      }
      const address = exporter.address();
      const shown = address.family === 'IPv6' ? `[${address.address}]` : address.address;
      const where = all ? 'every network namespace' : netns.length === 0 ? 'this network namespace' : (values.netns ?? []).join(', ');
      write(io.stderr, `conntrack exporter: serving ${exporter.protocol}://${shown}:${address.port}/metrics for ${where}`);
      await aborted(stop.signal);
      await exporter.close();
      return 0;
    } finally {
      stop.dispose();
    }
  });
