/**
 * The web configuration file of Prometheus's exporter-toolkit (`--web.config.file`), as
 * node_exporter reads it: `tls_server_config` (certificate, key, client certificates, TLS
 * versions), `http_server_config.headers`, and `basic_auth_users` (user: bcrypt hash). Unknown keys
 * are errors, as in exporter-toolkit, so a typo cannot leave the exporter open. Relative file
 * names are relative to the configuration file.
 */
import { readFile } from 'node:fs/promises';
import type { TLSSocket } from 'node:tls';
import { dirname, resolve } from 'node:path';
import type { IncomingMessage } from 'node:http';
import type { ServerOptions as HttpsServerOptions } from 'node:https';

import { ConntrackError } from '../base/errors.js';
import { credentialKey, parseBcryptHash, verifyBcrypt } from './bcrypt.js';
import { parseYamlSubset, YamlSubsetError } from './yaml.js';

export type ClientAuthType = 'NoClientCert' | 'RequestClientCert' | 'RequireAnyClientCert' | 'VerifyClientCertIfGiven' | 'RequireAndVerifyClientCert';

export interface WebConfig {
  /** Where it was read from. */
  file: string;
  tls?: {
    certFile: string;
    keyFile: string;
    clientAuthType: ClientAuthType;
    clientCaFile?: string;
    minVersion?: 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3';
    maxVersion?: 'TLSv1' | 'TLSv1.1' | 'TLSv1.2' | 'TLSv1.3';
    preferServerCipherSuites: boolean;
    /** OpenSSL curve names, in order of preference. */
    curves?: string[];
    /** A client certificate must carry one of these subject alternative names. */
    clientAllowedSans?: string[];
  };
  /** Extra response headers (the security headers exporter-toolkit allows). */
  headers: Record<string, string>;
  /** user -> bcrypt hash; empty: no authentication. */
  basicAuthUsers: Map<string, string>;
}

const TLS_VERSIONS: Record<string, NonNullable<WebConfig['tls']>['minVersion']> = {
  TLS10: 'TLSv1', TLS11: 'TLSv1.1', TLS12: 'TLSv1.2', TLS13: 'TLSv1.3',
};
const CURVES: Record<string, string> = { CurveP256: 'P-256', CurveP384: 'P-384', CurveP521: 'P-521', X25519: 'X25519' };
const CLIENT_AUTH_TYPES: readonly ClientAuthType[] = [
  'NoClientCert', 'RequestClientCert', 'RequireAnyClientCert', 'VerifyClientCertIfGiven', 'RequireAndVerifyClientCert',
];
const ALLOWED_HEADERS = ['Strict-Transport-Security', 'X-Content-Type-Options', 'X-Frame-Options', 'X-XSS-Protection', 'Content-Security-Policy'];

function configError(file: string, why: string, cause?: unknown): ConntrackError {
  return new ConntrackError('ERR_CONNTRACK_INVALID_ARGUMENT', `web config ${file}: ${why}`, cause === undefined ? undefined : { cause });
}

type Obj = Record<string, unknown>;

function isObject(value: unknown): value is Obj {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function section(file: string, value: unknown, where: string, known: readonly string[]): Obj {
  if (value === null || value === undefined) return {};
  if (!isObject(value)) throw configError(file, `${where} must be a mapping`);
  for (const key of Object.keys(value)) {
    if (!known.includes(key)) throw configError(file, `${where}: unknown key ${JSON.stringify(key)} (known: ${known.join(', ')})`);
  }
  return value;
}

function text(file: string, value: unknown, where: string): string | undefined {
  if (value === null || value === undefined || value === '') return undefined;
  if (typeof value !== 'string') throw configError(file, `${where} must be a string`);
  return value;
}

function stringList(file: string, value: unknown, where: string): string[] | undefined {
  if (value === null || value === undefined) return undefined;
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) throw configError(file, `${where} must be a list of strings`);
  return value as string[];
}

/** Checks a parsed configuration and resolves its file names; exported for tests. */
export function checkWebConfig(file: string, raw: unknown): WebConfig {
  const top = section(file, raw, 'the file', ['tls_server_config', 'http_server_config', 'basic_auth_users']);
  const tlsRaw = section(file, top.tls_server_config, 'tls_server_config', [
    'cert_file', 'key_file', 'cert', 'key', 'client_auth_type', 'client_ca_file', 'client_ca', 'cipher_suites',
    'curve_preferences', 'min_version', 'max_version', 'prefer_server_cipher_suites', 'client_allowed_sans',
  ]);
  const http = section(file, top.http_server_config, 'http_server_config', ['http2', 'headers']);
  const usersRaw = section(file, top.basic_auth_users, 'basic_auth_users', Object.keys(isObject(top.basic_auth_users) ? top.basic_auth_users : {}));
  const base = dirname(file);
  const path = (value: unknown, where: string) => {
    const name = text(file, value, where);
    return name === undefined ? undefined : resolve(base, name);
  };

  let tls: WebConfig['tls'];
  for (const inline of ['cert', 'key', 'client_ca'] as const) {
    if (tlsRaw[inline] !== undefined && tlsRaw[inline] !== null) {
      throw configError(file, `tls_server_config.${inline} (inline PEM) is not supported: use ${inline}_file`);
    }
  }
  if (tlsRaw.cipher_suites !== undefined && tlsRaw.cipher_suites !== null) {
    throw configError(file, 'tls_server_config.cipher_suites is not supported (Go cipher suite names); leave it out: Node\'s defaults exclude weak suites');
  }
  const certFile = path(tlsRaw.cert_file, 'tls_server_config.cert_file');
  const keyFile = path(tlsRaw.key_file, 'tls_server_config.key_file');
  if ((certFile === undefined) !== (keyFile === undefined)) {
    throw configError(file, 'tls_server_config needs both cert_file and key_file');
  }
  const clientAuthType = (text(file, tlsRaw.client_auth_type, 'tls_server_config.client_auth_type') ?? 'NoClientCert') as ClientAuthType;
  if (!CLIENT_AUTH_TYPES.includes(clientAuthType)) {
    throw configError(file, `tls_server_config.client_auth_type must be one of ${CLIENT_AUTH_TYPES.join(', ')}, got ${JSON.stringify(clientAuthType)}`);
  }
  const clientCaFile = path(tlsRaw.client_ca_file, 'tls_server_config.client_ca_file');
  const version = (key: 'min_version' | 'max_version') => {
    const name = text(file, tlsRaw[key], `tls_server_config.${key}`);
    if (name === undefined) return undefined;
    const v = TLS_VERSIONS[name];
    if (v === undefined) throw configError(file, `tls_server_config.${key} must be one of ${Object.keys(TLS_VERSIONS).join(', ')}, got ${JSON.stringify(name)}`);
    return v;
  };
  const curves = stringList(file, tlsRaw.curve_preferences, 'tls_server_config.curve_preferences')?.map((name) => {
    const curve = CURVES[name];
    if (curve === undefined) throw configError(file, `tls_server_config.curve_preferences: unknown curve ${JSON.stringify(name)} (known: ${Object.keys(CURVES).join(', ')})`);
    return curve;
  });
  const prefer = tlsRaw.prefer_server_cipher_suites;
  if (prefer !== undefined && prefer !== null && typeof prefer !== 'boolean') throw configError(file, 'tls_server_config.prefer_server_cipher_suites must be true or false');
  const clientAllowedSans = stringList(file, tlsRaw.client_allowed_sans, 'tls_server_config.client_allowed_sans');
  if (certFile !== undefined && keyFile !== undefined) {
    if ((clientAuthType === 'RequireAndVerifyClientCert' || clientAuthType === 'VerifyClientCertIfGiven') && clientCaFile === undefined) {
      throw configError(file, `client_auth_type ${clientAuthType} needs client_ca_file`);
    }
    tls = {
      certFile, keyFile, clientAuthType, clientCaFile, minVersion: version('min_version'), maxVersion: version('max_version'),
      preferServerCipherSuites: prefer !== false, curves, clientAllowedSans,
    };
  } else if (clientCaFile !== undefined || tlsRaw.client_auth_type !== undefined) {
    throw configError(file, 'client certificates need TLS: set cert_file and key_file');
  }

  if (http.http2 !== undefined && http.http2 !== null && typeof http.http2 !== 'boolean') throw configError(file, 'http_server_config.http2 must be true or false');
  const headersRaw = section(file, http.headers, 'http_server_config.headers', ALLOWED_HEADERS);
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(headersRaw)) {
    const v = text(file, value, `http_server_config.headers.${name}`);
    if (v !== undefined) headers[name] = v;
  }

  const basicAuthUsers = new Map<string, string>();
  for (const [user, hash] of Object.entries(usersRaw)) {
    if (typeof hash !== 'string' || parseBcryptHash(hash) === undefined) {
      throw configError(file, `basic_auth_users.${user} must be a bcrypt hash ($2a$, $2b$ or $2y$, as htpasswd -nB writes)`);
    }
    if (user.includes(':')) throw configError(file, `basic_auth_users: a user name cannot hold ":" (${JSON.stringify(user)})`);
    basicAuthUsers.set(user, hash);
  }
  return { file, tls, headers, basicAuthUsers };
}

/** Reads and checks a web configuration file. */
export async function loadWebConfig(file: string): Promise<WebConfig> {
  if (typeof file !== 'string' || file === '') throw configError(String(file), 'the file name must be a non-empty string');
  const absolute = resolve(file);
  let raw: unknown;
  try {
    raw = parseYamlSubset(await readFile(absolute, 'utf8'));
  } catch (err) {
    if (err instanceof YamlSubsetError) throw configError(absolute, err.message, err);
    throw configError(absolute, `cannot read it: ${(err as Error).message}`, err);
  }
  return checkWebConfig(absolute, raw);
}

async function readPem(config: WebConfig, name: string, what: string): Promise<Buffer> {
  try {
    return await readFile(name);
  } catch (err) {
    throw configError(config.file, `cannot read ${what} ${name}: ${(err as Error).message}`, err);
  }
}

/** The node:https options of the configuration's TLS part (files read now). */
export async function httpsOptions(config: WebConfig): Promise<HttpsServerOptions | undefined> {
  const tls = config.tls;
  if (tls === undefined) return undefined;
  const [cert, key, ca] = await Promise.all([
    readPem(config, tls.certFile, 'certificate'),
    readPem(config, tls.keyFile, 'key'),
    tls.clientCaFile === undefined ? undefined : readPem(config, tls.clientCaFile, 'client CA'),
  ]);
  return {
    cert, key, ca,
    requestCert: tls.clientAuthType !== 'NoClientCert',
    rejectUnauthorized: tls.clientAuthType === 'RequireAndVerifyClientCert',
    minVersion: tls.minVersion ?? 'TLSv1.2',
    maxVersion: tls.maxVersion,
    honorCipherOrder: tls.preferServerCipherSuites,
    ecdhCurve: tls.curves?.join(':'),
  };
}

/** What the request handler does before serving: undefined to serve, else the refusal. */
export interface Refusal {
  status: 401 | 403;
  headers: Record<string, string>;
  body: string;
}

/** The client certificate checks node:tls leaves to the application, by client_auth_type. */
function checkClientCertificate(config: WebConfig, req: IncomingMessage): Refusal | undefined {
  const tls = config.tls;
  if (tls === undefined || tls.clientAuthType === 'NoClientCert' || tls.clientAuthType === 'RequestClientCert') return undefined;
  const socket = req.socket as TLSSocket;
  const cert = socket.getPeerCertificate?.();
  const presented = cert !== undefined && Object.keys(cert).length > 0;
  const forbidden = (why: string): Refusal => ({ status: 403, headers: {}, body: `${why}\n` });
  if (!presented) {
    return tls.clientAuthType === 'VerifyClientCertIfGiven' ? undefined : forbidden('a client certificate is required');
  }
  if (tls.clientAuthType !== 'RequireAnyClientCert' && !socket.authorized) return forbidden(`client certificate not trusted: ${String(socket.authorizationError)}`);
  if (tls.clientAllowedSans !== undefined) {
    const sans = (cert.subjectaltname ?? '').split(', ').map((entry) => entry.replace(/^[A-Za-z ]+:/, ''));
    if (!tls.clientAllowedSans.some((allowed) => sans.includes(allowed))) return forbidden('client certificate has none of the allowed subject alternative names');
  }
  return undefined;
}

/** Bounds the cache of credentials already checked (one entry per user and password that worked). */
const MAX_CACHED_CREDENTIALS = 256;

/**
 * The gate in front of /metrics: client certificate checks, then basic authentication. bcrypt
 * checks run one at a time (each costs tens of milliseconds), and a user and password that passed
 * are remembered by their sha256, so a scraper pays bcrypt once, not on every scrape. An unknown
 * user costs as much as a wrong password.
 */
export function createRequestGate(config: WebConfig): (req: IncomingMessage) => Promise<Refusal | undefined> {
  const accepted = new Set<string>();
  let queue: Promise<unknown> = Promise.resolve();
  // Costs as much as the users' hashes do, for users that do not exist.
  const decoyHash = [...config.basicAuthUsers.values()][0];
  const unauthorized: Refusal = { status: 401, headers: { 'WWW-Authenticate': 'Basic realm="conntrack exporter"' }, body: 'unauthorized\n' };
  return async (req) => {
    const refusal = checkClientCertificate(config, req);
    if (refusal !== undefined || config.basicAuthUsers.size === 0) return refusal;
    const match = /^Basic +([A-Za-z0-9+/=]+)$/i.exec(req.headers.authorization ?? '');
    if (match === null) return unauthorized;
    const decoded = Buffer.from(match[1] as string, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) return unauthorized;
    const user = decoded.slice(0, colon);
    const password = decoded.slice(colon + 1);
    const key = credentialKey(user, password).toString('hex');
    if (accepted.has(key)) return undefined;
    const hash = config.basicAuthUsers.get(user);
    const check = queue.then(() => verifyBcrypt(password, hash ?? decoyHash ?? ''));
    queue = check.catch(() => false);
    const ok = (await check) && hash !== undefined;
    if (!ok) return unauthorized;
    if (accepted.size >= MAX_CACHED_CREDENTIALS) accepted.clear();
    accepted.add(key);
    return undefined;
  };
}
