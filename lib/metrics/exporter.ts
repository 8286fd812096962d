/**
 * A Prometheus exporter: the collector (collector.ts) served over node:http, or node:https with
 * basic authentication when a web configuration file (web-config.ts) asks for them.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';

import { abortError, ConntrackError, invalidArgument } from '../base/errors.js';
import { METRICS_CONTENT_TYPE } from './metrics.js';
import { checkCollectorOptions, createMetricsCollector, type CollectorOptions, type MetricsCollector } from './collector.js';
import { createRequestGate, httpsOptions, loadWebConfig, type Refusal, type WebConfig } from './web-config.js';

export { createMetricsCollector, type CollectorOptions, type MetricsCollector } from './collector.js';

/**
 * 9466, the first choice, is registered in Prometheus's default-port list to an MQTT push gateway:
 * an MQTT tool that may well run beside the same broker. 9659 was marked free in the newest copy of
 * that list we could read (the 9100-9999 range has since been reported full), and is not 9318 or
 * 9371, the ports of two other conntrack exporters.
 */
export const DEFAULT_EXPORTER_PORT = 9659;
export const DEFAULT_EXPORTER_HOST = '127.0.0.1';

export interface ExporterOptions extends CollectorOptions {
  /** Default 127.0.0.1: metrics stay local unless asked otherwise. */
  host?: string;
  /** Default DEFAULT_EXPORTER_PORT; 0 picks a free port (see address()). */
  port?: number;
  /** Default '/metrics'. Any other path answers 404. */
  path?: string;
  /** Aborting it closes the exporter. */
  signal?: AbortSignal;
  /**
   * An exporter-toolkit web configuration file (TLS, basic authentication), as node_exporter's
   * --web.config.file; or the configuration loadWebConfig() returned.
   */
  webConfig?: string | WebConfig;
}

export interface Exporter extends MetricsCollector {
  /** Where the server listens. */
  address(): AddressInfo;
  /** 'https' when the web configuration has TLS. */
  readonly protocol: 'http' | 'https';
  /** Stops listening, ends open connections and closes the handles. Idempotent. */
  close(): Promise<void>;
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

function requestHandler(path: string, collect: () => Promise<string>, config: WebConfig | undefined) {
  const gate = config === undefined ? undefined : createRequestGate(config);
  const headers = config?.headers ?? {};
  const refuse = (res: ServerResponse, refusal: Refusal) => {
    res.writeHead(refusal.status, { ...headers, ...refusal.headers, 'Content-Type': 'text/plain; charset=utf-8' }).end(refusal.body);
  };
  return (req: IncomingMessage, res: ServerResponse): void => {
    if (gate === undefined) {
      serve(req, res);
      return;
    }
    gate(req).then(
      (refusal) => (refusal === undefined ? serve(req, res) : refuse(res, refusal)),
      (err: unknown) => refuse(res, { status: 401, headers: {}, body: `authentication failed: ${(err as Error)?.message ?? String(err)}\n` }),
    );
  };
  function serve(req: IncomingMessage, res: ServerResponse): void {
    for (const [name, value] of Object.entries(headers)) res.setHeader(name, value);
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
  }
}

/**
 * A started exporter: a collector (see createMetricsCollector) served at `path` on `host:port`.
 * Options are checked before anything is opened.
 */
export async function createExporter(options: ExporterOptions = {}): Promise<Exporter> {
  checkCollectorOptions(options);
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
  const webConfig = typeof options.webConfig === 'string' ? await loadWebConfig(options.webConfig) : options.webConfig;
  const tls = webConfig === undefined ? undefined : await httpsOptions(webConfig);

  const collector = await createMetricsCollector(options);
  const handler = requestHandler(path, collector.collect, webConfig);
  const server: Server = tls === undefined ? createHttpServer(handler) : createHttpsServer(tls, handler);
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
    protocol: tls === undefined ? 'http' : 'https',
    collect: collector.collect,
    collectFamilies: collector.collectFamilies,
    familyCatalog: collector.familyCatalog,
    refreshBreakdowns: collector.refreshBreakdowns,
    close,
    [Symbol.asyncDispose]: close,
  };
}
