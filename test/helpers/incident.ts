/**
 * The incident this library exists for, reproduced: an MQTT broker (Debian's mosquitto) in a
 * sandbox namespace whose clients stop getting through once the conntrack table is full. Shared by
 * the end-to-end test and `npm run demo`, so what a person watches is what CI asserts.
 *
 * The global nf_conntrack_max is lowered for the scenario through the caller's exclusive global
 * lock (test/helpers/global-lock.ts), which restores it when released.
 */
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import type { ChildProcess } from 'node:child_process';

import { entriesPerNamespace, type GlobalLimitsLock } from './global-lock.js';
import { createNetns, enableTracking, type Netns } from './netns.js';
import { requireTool } from './tools.js';

const CLIENTS_SCRIPT = new URL('./mqtt-clients.mjs', import.meta.url).pathname;
export const BROKER_PORT = 1883;

export interface ConnectResult {
  connected: number;
  failed: number;
  /** Clients connected in total so far. */
  open: number;
  errors: Record<string, number>;
}

/**
 * The most entries another namespace may hold for the scenario to run: the limit must stay above
 * every other namespace's count (their new connections would fail otherwise), and the test needs
 * as many MQTT clients as the limit.
 */
const MAX_BUSIEST_OTHER = 10_000;

export class MqttIncident {
  readonly ns: Netns;
  readonly #lock: GlobalLimitsLock;
  readonly #log: (line: string) => void;
  readonly #configDir: string;
  #broker: ChildProcess | undefined;
  #clients: ChildProcess | undefined;
  #answers: Interface | undefined;

  private constructor(ns: Netns, lock: GlobalLimitsLock, configDir: string, log: (line: string) => void) {
    this.ns = ns;
    this.#lock = lock;
    this.#configDir = configDir;
    this.#log = log;
  }

  /**
   * A namespace tracking its traffic, with mosquitto listening on 127.0.0.1:1883 and a client
   * process. `lock` is the global lock, held exclusive by the caller until after close().
   */
  static async start(lock: GlobalLimitsLock, log: (line: string) => void = () => {}): Promise<MqttIncident> {
    if (lock.mode !== 'exclusive') throw new Error('the incident changes nf_conntrack_max: hold the global lock exclusive');
    const ns = await createNetns('incident');
    const configDir = await mkdtemp(join(tmpdir(), 'ct-mosquitto-'));
    const incident = new MqttIncident(ns, lock, configDir, log);
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
   * Lowers the global nf_conntrack_max to `minimum`, or higher where another live namespace (the
   * host's own, a container's) holds more than half of that: the limit is checked against each
   * namespace's own count, and theirs must keep room. Returns the limit set.
   */
  async lowerLimit(minimum: number): Promise<number> {
    const others = await entriesPerNamespace(new Set([this.ns.inode]));
    let busiest = { path: '', entries: 0 };
    for (const other of others.values()) {
      // A namespace where nothing runs and no traffic can enter makes no new entries: a lower
      // limit cannot hurt it, however many it holds.
      if (!other.live) {
        if (other.entries > minimum / 2) this.#log(`${other.path} holds ${other.entries} entries, but nothing runs there and only lo is in it`);
        continue;
      }
      if (other.entries > busiest.entries) busiest = other;
    }
    if (busiest.entries > MAX_BUSIEST_OTHER) {
      throw new Error(`${busiest.path} holds ${busiest.entries} entries: the incident would need a limit above that, ` +
        `and as many MQTT clients (at most ${MAX_BUSIEST_OTHER} other entries are supported)`);
    }
    const limit = Math.max(minimum, Math.ceil((2 * busiest.entries) / 100) * 100);
    const before = this.#lock.readMax();
    this.#lock.setMax(limit);
    this.#log(`global nf_conntrack_max lowered from ${before} to ${limit}` +
      (limit > minimum ? ` (not ${minimum}: ${busiest.path} holds ${busiest.entries} entries)` : ''));
    return limit;
  }

  /** Sets the global limit (the fix); the lock restores the original at its release. */
  raiseLimit(max: number): void {
    this.#lock.setMax(max);
    this.#log(`global nf_conntrack_max raised to ${max}`);
  }

  /** Stops broker and clients, removes the namespace. Safe to call twice. The lock restores the limit. */
  async close(): Promise<void> {
    const errors: unknown[] = [];
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
