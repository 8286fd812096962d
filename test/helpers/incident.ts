/**
 * The incident this library exists for, reproduced: an MQTT broker (Debian's mosquitto) in a
 * sandbox namespace whose clients stop getting through once the conntrack table is full. Shared by
 * the end-to-end test and `npm run demo`, so what a person watches is what CI asserts.
 *
 * The global nf_conntrack_max is lowered for the scenario; callers hold withGlobalLimitsLock and
 * call close() (which restores it) in finally.
 */
import { once } from 'node:events';
import { readdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import type { ChildProcess } from 'node:child_process';

import { Conntrack } from '../../lib/table/conntrack.js';
import { createNetns, enableTracking, type Netns } from './netns.js';
import { requireTool } from './tools.js';

const MAX_FILE = '/proc/sys/net/netfilter/nf_conntrack_max';
const CLIENTS_SCRIPT = new URL('./mqtt-clients.mjs', import.meta.url).pathname;
export const BROKER_PORT = 1883;

export interface ConnectResult {
  connected: number;
  failed: number;
  /** Clients connected in total so far. */
  open: number;
  errors: Record<string, number>;
}

export function readGlobalMax(): number {
  return Number(readFileSync(MAX_FILE, 'utf8'));
}

function writeGlobalMax(value: number): void {
  writeFileSync(MAX_FILE, `${value}\n`);
  const readBack = readGlobalMax();
  if (readBack !== value) throw new Error(`nf_conntrack_max reads ${readBack} after writing ${value}`);
}

/** Every network namespace on the machine (by inode), with a path to open it by. */
function allNamespaces(): Map<number, string> {
  const found = new Map<number, string>();
  const add = (path: string): void => {
    try {
      const match = /^net:\[(\d+)\]$/.exec(readlinkSync(path));
      if (match?.[1] !== undefined && !found.has(Number(match[1]))) found.set(Number(match[1]), path);
    } catch {
      // the process exited, or the file is not a namespace link
    }
  };
  for (const pid of readdirSync('/proc').filter((name) => /^\d+$/.test(name))) add(`/proc/${pid}/ns/net`);
  // Namespaces kept alive by a bind mount only (ip netns add) have no process.
  let names: string[] = [];
  try {
    names = readdirSync('/run/netns');
  } catch {
    // no namespace was ever added
  }
  for (const name of names) {
    try {
      const ino = statSync(`/run/netns/${name}`).ino;
      if (!found.has(ino)) found.set(ino, `/run/netns/${name}`);
    } catch {
      // removed meanwhile
    }
  }
  return found;
}

export class MqttIncident {
  readonly ns: Netns;
  readonly #log: (line: string) => void;
  readonly #configDir: string;
  #broker: ChildProcess | undefined;
  #clients: ChildProcess | undefined;
  #answers: Interface | undefined;
  #originalMax: number | undefined;

  private constructor(ns: Netns, configDir: string, log: (line: string) => void) {
    this.ns = ns;
    this.#configDir = configDir;
    this.#log = log;
  }

  /** A namespace tracking its traffic, with mosquitto listening on 127.0.0.1:1883 and a client process. */
  static async start(log: (line: string) => void = () => {}): Promise<MqttIncident> {
    const ns = await createNetns('incident');
    const configDir = await mkdtemp(join(tmpdir(), 'ct-mosquitto-'));
    const incident = new MqttIncident(ns, configDir, log);
    try {
      // conntrack tracks nothing in a namespace until a rule uses it.
      await enableTracking(ns);
      await incident.#startBroker();
      await incident.#startClients();
    } catch (err) {
      await incident.close();
      throw err;
    }
    return incident;
  }

  async #startBroker(): Promise<void> {
    const config = join(this.#configDir, 'mosquitto.conf');
    await writeFile(config, [
      `listener ${BROKER_PORT} 127.0.0.1`,
      'allow_anonymous true',
      'max_connections -1',
      'persistence false',
      'log_dest stderr',
      'log_type error',
      'log_type warning',
      // "running" is logged at information level; per-connection lines (notice) are left out.
      'log_type information',
      '',
    ].join('\n'));
    const broker = this.ns.spawn(requireTool('mosquitto'), ['-c', config], { stdio: ['ignore', 'ignore', 'pipe'] });
    this.#broker = broker;
    // mosquitto says when its listener is open; anything else before that is a failed start.
    const ready = new Promise<void>((resolve, reject) => {
      let text = '';
      // Keeps draining stderr after the start, so the broker never blocks on a full pipe.
      broker.stderr?.on('data', (chunk: Buffer) => {
        if (text.length < 64 * 1024) text += chunk.toString();
        if (/ running/.test(text)) resolve();
      });
      broker.once('exit', (code) => reject(new Error(`mosquitto exited (${code}) before it listened: ${text.trim()}`)));
    });
    await Promise.race([ready, timeout(10_000, 'mosquitto did not start within 10 s')]);
    this.#log(`mosquitto listening on 127.0.0.1:${BROKER_PORT} in ${this.ns.name}`);
  }

  async #startClients(): Promise<void> {
    const clients = this.ns.spawn(process.execPath, [CLIENTS_SCRIPT, `mqtt://127.0.0.1:${BROKER_PORT}`], { stdio: ['pipe', 'pipe', 'inherit'] });
    this.#clients = clients;
    this.#answers = createInterface({ input: clients.stdout! });
  }

  async #ask<T>(request: object): Promise<T> {
    const clients = this.#clients;
    const answers = this.#answers;
    if (clients?.stdin == null || answers === undefined) throw new Error('the client process is not running');
    const line = once(answers, 'line') as Promise<[string]>;
    clients.stdin.write(`${JSON.stringify(request)}\n`);
    const [text] = await Promise.race([line, timeout(120_000, `no answer to ${JSON.stringify(request)}`)]);
    return JSON.parse(text) as T;
  }

  /** Connects `count` more MQTT clients; each gets `timeoutMs` to receive its CONNACK. */
  async connect(count: number, timeoutMs = 2000): Promise<ConnectResult> {
    const result = await this.#ask<ConnectResult>({ connect: count, timeoutMs, concurrency: 100 });
    this.#log(`connect ${count}: ${result.connected} connected, ${result.failed} failed${result.failed > 0 ? ` (${Object.entries(result.errors).map(([k, v]) => `${v} x ${k}`).join(', ')})` : ''}; ${result.open} open`);
    return result;
  }

  /** Every open client publishes once with QoS 1: the broker must answer each. */
  async publish(): Promise<{ published: number; failed: number }> {
    return this.#ask({ publish: true });
  }

  /**
   * Lowers the global nf_conntrack_max. Refuses when another namespace holds more entries than
   * `limit`: its new connections would start failing because of this test.
   */
  async lowerLimit(limit: number): Promise<void> {
    const busy: string[] = [];
    for (const [inode, path] of allNamespaces()) {
      if (inode === this.ns.inode) continue;
      let entries: number;
      try {
        const ct = await Conntrack.open({ netns: path });
        try {
          entries = (await ct.count()).entries;
        } finally {
          await ct.close();
        }
      } catch {
        continue; // gone meanwhile
      }
      if (entries > limit / 2) busy.push(`netns ${inode} (${path}) holds ${entries} entries`);
    }
    if (busy.length > 0) {
      throw new Error(`refusing to lower the global nf_conntrack_max to ${limit}: ${busy.join('; ')}; their new connections would fail`);
    }
    this.#originalMax ??= readGlobalMax();
    writeGlobalMax(limit);
    this.#log(`global nf_conntrack_max lowered from ${this.#originalMax} to ${limit}`);
  }

  /** Sets the global limit (the fix), remembering the original for close(). */
  raiseLimit(max: number): void {
    this.#originalMax ??= readGlobalMax();
    writeGlobalMax(max);
    this.#log(`global nf_conntrack_max raised to ${max}`);
  }

  /** Restores the limit, stops broker and clients, removes the namespace. Safe to call twice. */
  async close(): Promise<void> {
    const errors: unknown[] = [];
    if (this.#originalMax !== undefined) {
      try {
        writeGlobalMax(this.#originalMax);
        this.#log(`global nf_conntrack_max restored to ${this.#originalMax}`);
        this.#originalMax = undefined;
      } catch (err) {
        errors.push(err);
      }
    }
    this.#answers?.close();
    this.#clients?.stdin?.end();
    for (const action of [() => this.ns.destroy(), () => rm(this.#configDir, { recursive: true, force: true })]) {
      try {
        await action();
      } catch (err) {
        errors.push(err);
      }
    }
    this.#broker = undefined;
    this.#clients = undefined;
    if (errors.length > 0) throw new AggregateError(errors, 'cleaning up the incident failed');
  }
}

function timeout(ms: number, message: string): Promise<never> {
  return new Promise((_, reject) => setTimeout(() => reject(new Error(message)), ms).unref());
}
