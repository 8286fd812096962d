/**
 * `conntrack exporter`: Prometheus metrics over HTTP for one or more namespaces, until SIGINT or
 * SIGTERM.
 */
import { parseArgs } from 'node:util';

import { createExporter, DEFAULT_EXPORTER_HOST, DEFAULT_EXPORTER_PORT, type Exporter } from '../metrics/exporter.js';
import type { NetnsSpec } from '../base/types.js';
import { aborted, netnsOption, run, stopOnTermination, UsageError, write, type Command } from './common.js';

const EXPORTER_USAGE = `usage: conntrack exporter [--listen HOST:PORT] [--netns PATH|PID]... [--node-exporter-names]
  --listen               address to serve /metrics on (default ${DEFAULT_EXPORTER_HOST}:${DEFAULT_EXPORTER_PORT}; [IPV6]:PORT for IPv6)
  --netns                a namespace to export; repeat for several (default: this process's namespace)
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
    const netns = (values.netns ?? []).map((text) => netnsOption(text).netns as NetnsSpec);

    const stop = stopOnTermination();
    try {
      let exporter: Exporter;
      try {
        exporter = await createExporter({ netns, host, port, nodeExporterNames: values['node-exporter-names'], signal: stop.signal });
      } catch (err) {
        if (stop.signal.aborted) return 0; // stopped while starting: nothing to close
        throw err;
      }
      const address = exporter.address();
      const shown = address.family === 'IPv6' ? `[${address.address}]` : address.address;
      const where = netns.length === 0 ? 'this network namespace' : (values.netns ?? []).join(', ');
      write(io.stderr, `conntrack exporter: serving http://${shown}:${address.port}/metrics for ${where}`);
      await aborted(stop.signal);
      await exporter.close();
      return 0;
    } finally {
      stop.dispose();
    }
  });
