/**
 * A Prometheus exporter on node:http: one handle per namespace, opened once and reused by every
 * scrape (count() costs about 1.4 µs on an open handle), reopened after an error.
 */
import { stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

import { Conntrack } from '../table/conntrack.js';
import { abortError, closedError, ConntrackError, invalidArgument } from '../base/errors.js';
import { failedNamespace, METRICS_CONTENT_TYPE, readBucketCount, renderMetrics, sampleNamespace, type NamespaceSample } from './metrics.js';
import { netnsPath } from '../binding/netns.js';
import type { NetnsSpec } from '../base/types.js';

/**
 * 9466, the first choice, is registered in Prometheus's default-port list to an MQTT push gateway:
 * an MQTT tool that may well run beside the same broker. 9659 was marked free in the newest copy of
 * that list we could read (the 9100-9999 range has since been reported full), and is not 9318 or
 * 9371, the ports of two other conntrack exporters.
 */
export const DEFAULT_EXPORTER_PORT = 9659;
export const DEFAULT_EXPORTER_HOST = '127.0.0.1';

export interface CollectorOptions {
  /** Namespaces to export (paths or pids); omitted or empty: this process's own namespace. */
  netns?: readonly NetnsSpec[];
  /** Also emit node_exporter's metric names (see RenderOptions). */
  nodeExporterNames?: boolean;
}

export interface ExporterOptions extends CollectorOptions {
  /** Default 127.0.0.1: metrics stay local unless asked otherwise. */
  host?: string;
  /** Default DEFAULT_EXPORTER_PORT; 0 picks a free port (see address()). */
  port?: number;
  /** Default '/metrics'. Any other path answers 404. */
  path?: string;
  /** Aborting it closes the exporter. */
  signal?: AbortSignal;
}

/** Scrapes without a server, for an application that serves /metrics itself. */
export interface MetricsCollector extends AsyncDisposable {
  /** One scrape's exposition text; calls made while one runs share it. */
  collect(): Promise<string>;
  /** Closes the handles (after a running collection). Idempotent. */
  close(): Promise<void>;
}

export interface Exporter extends MetricsCollector {
  /** Where the server listens. */
  address(): AddressInfo;
  /** Stops listening, ends open connections and closes the handles. Idempotent. */
  close(): Promise<void>;
}

/** One namespace: its handle, kept open between scrapes, and what it was opened on. */
class ScrapeTarget {
  readonly label: string;
  readonly #path: string | undefined;
  #handle: Conntrack | undefined;
  /** dev:inode of the namespace file when the handle was opened. */
  #identity: string | undefined;

  constructor(path: string | undefined) {
    this.#path = path;
    this.label = path ?? '';
  }

  async sample(): Promise<NamespaceSample> {
    try {
      return await sampleNamespace(await this.#open(), this.label);
    } catch (err) {
      await this.close(); // a fresh handle next time
      return failedNamespace(this.label, err);
    }
  }

  /**
   * The open handle, if the path still names the namespace it was opened in. A socket keeps its
   * namespace alive: after `ip netns del` (or the process of a pid exiting) the handle would go on
   * reading a namespace nobody can reach, so each scrape compares the file's identity first.
   */
  async #open(): Promise<Conntrack> {
    if (this.#handle !== undefined && (this.#path === undefined || (await this.#currentIdentity()) === this.#identity)) {
      return this.#handle;
    }
    await this.close();
    const before = await this.#currentIdentity();
    const handle = await Conntrack.open(this.#path === undefined ? {} : { netns: this.#path });
    const after = await this.#currentIdentity().catch(async (err: unknown) => {
      await handle.close();
      throw err;
    });
    if (before !== after) {
      await handle.close();
      throw new ConntrackError('ERR_CONNTRACK_NETNS', `network namespace ${this.#path} was replaced while it was being opened`);
    }
    this.#handle = handle;
    this.#identity = after;
    return handle;
  }

  async #currentIdentity(): Promise<string | undefined> {
    if (this.#path === undefined) return undefined;
    try {
      const s = await stat(this.#path);
      return `${s.dev}:${s.ino}`;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw code === 'ENOENT'
        ? new ConntrackError('ERR_CONNTRACK_NETNS', `network namespace ${this.#path} does not exist`, { cause: err })
        : new ConntrackError('ERR_CONNTRACK_PERMISSION', `cannot look at network namespace ${this.#path}: ${(err as Error).message}`, { cause: err });
    }
  }

  async close(): Promise<void> {
    const handle = this.#handle;
    this.#handle = undefined;
    this.#identity = undefined;
    await handle?.close();
  }
}

function namespacePaths(options: CollectorOptions): Array<string | undefined> {
  if (options === null || typeof options !== 'object') throw invalidArgument('options must be an object');
  const specs = options.netns ?? [];
  if (!Array.isArray(specs)) throw invalidArgument('netns must be an array of namespace paths or pids');
  const paths: Array<string | undefined> = specs.length === 0 ? [undefined] : specs.map((spec) => netnsPath(spec));
  const duplicate = paths.find((p, i) => paths.indexOf(p) !== i);
  if (duplicate !== undefined) throw invalidArgument(`netns ${duplicate} is given twice`);
  return paths;
}

/**
 * Opens a handle per namespace (a namespace that cannot be opened is reported as `conntrack_up 0`
 * and tried again on the next collection) and returns the collector that reuses them.
 */
export async function createMetricsCollector(options: CollectorOptions = {}): Promise<MetricsCollector> {
  const targets = namespacePaths(options).map((p) => new ScrapeTarget(p));
  const render = { nodeExporterNames: options.nodeExporterNames === true };
  let inflight: Promise<string> | undefined;
  let closing: Promise<void> | undefined;
  const collect = (): Promise<string> => {
    if (closing !== undefined) return Promise.reject(closedError());
    inflight ??= (async () => {
      try {
        const [namespaces, buckets] = await Promise.all([Promise.all(targets.map((t) => t.sample())), readBucketCount()]);
        return renderMetrics({ namespaces, buckets }, render);
      } finally {
        inflight = undefined;
      }
    })();
    return inflight;
  };
  const close = (): Promise<void> => {
    closing ??= (async () => {
      await inflight?.catch(() => undefined);
      await Promise.all(targets.map((t) => t.close()));
    })();
    return closing;
  };
  // Open every handle now, so that the first scrape is as cheap as the others.
  await Promise.all(targets.map((t) => t.sample()));
  return { collect, close, [Symbol.asyncDispose]: close };
}

function listen(server: Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      const reason = err.code === 'EADDRINUSE' ? 'the address is in use'
        : err.code === 'EADDRNOTAVAIL' ? 'no local interface has that address'
        : err.code === 'EACCES' ? 'permission denied (a port below 1024 needs CAP_NET_BIND_SERVICE)'
        : err.message;
      reject(new ConntrackError('ERR_CONNTRACK_LISTEN', `cannot listen on ${host}:${port}: ${reason}`, { cause: err }));
    };
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

function requestHandler(path: string, collect: () => Promise<string>) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    const pathname = (req.url ?? '').split('?', 1)[0];
    if (pathname !== path) {
      res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' }).end(`not found; metrics are at ${path}\n`);
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Type': 'text/plain; charset=utf-8' }).end('method not allowed\n');
      return;
    }
    collect().then(
      (body) => {
        res.writeHead(200, { 'Content-Type': METRICS_CONTENT_TYPE, 'Content-Length': Buffer.byteLength(body) });
        res.end(req.method === 'HEAD' ? undefined : body);
      },
      (err: unknown) => {
        res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' }).end(`collection failed: ${(err as Error)?.message ?? String(err)}\n`);
      },
    );
  };
}

/**
 * A started exporter: a collector (see createMetricsCollector) served at `path` on `host:port`.
 * Options are checked before anything is opened.
 */
export async function createExporter(options: ExporterOptions = {}): Promise<Exporter> {
  namespacePaths(options);
  const host = options.host ?? DEFAULT_EXPORTER_HOST;
  if (typeof host !== 'string' || host === '') throw invalidArgument('host must be a non-empty string');
  const port = options.port ?? DEFAULT_EXPORTER_PORT;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw invalidArgument(`port must be an integer from 0 to 65535, got ${port}`);
  const path = options.path ?? '/metrics';
  if (typeof path !== 'string' || !path.startsWith('/') || /[?#\s]/.test(path)) {
    throw invalidArgument(`path must start with / and hold no query, fragment or space, got ${JSON.stringify(path)}`);
  }
  const { signal } = options;
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw invalidArgument('signal must be an AbortSignal');
  if (signal?.aborted) throw abortError(signal);

  const collector = await createMetricsCollector(options);
  const server = createServer(requestHandler(path, collector.collect));
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      signal?.removeEventListener('abort', onAbort);
      if (server.listening) {
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections(); // keep-alive connections would hold close() open
        });
      }
      await collector.close();
    })();
    return closing;
  };
  const onAbort = () => void close();
  try {
    await listen(server, host, port);
  } catch (err) {
    await close();
    throw err;
  }
  if (signal?.aborted) {
    await close();
    throw abortError(signal);
  }
  signal?.addEventListener('abort', onAbort, { once: true });

  return {
    address: () => server.address() as AddressInfo,
    collect: collector.collect,
    close,
    [Symbol.asyncDispose]: close,
  };
}
