/**
 * The addon missing or unloadable: ERR_CONNTRACK_NATIVE names the platform, the file and the two
 * remedies, and what needs no addon keeps working. CONNTRACK_PREBUILD (node-gyp-build's override)
 * points the loader at a directory made here instead of this checkout's build/.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';

import {
  Conntrack, ConntrackError, kernelDefaults, memoryCost, renderMetrics, renderPersistence, evaluate,
  type DiagnosisFacts,
} from '../../../lib/index.js';
import { binding, libcOfProcess } from '../../../lib/binding/native.js';

const scratch = mkdtempSync(join(tmpdir(), 'conntrack-native-'));
const platform = `${process.platform}-${process.arch}`;
const saved = process.env.CONNTRACK_PREBUILD;

beforeEach(() => {
  rmSync(scratch, { recursive: true, force: true });
  mkdirSync(scratch);
  process.env.CONNTRACK_PREBUILD = scratch;
});

afterAll(() => {
  if (saved === undefined) delete process.env.CONNTRACK_PREBUILD;
  else process.env.CONNTRACK_PREBUILD = saved;
  rmSync(scratch, { recursive: true, force: true });
});

function nativeError(run: () => unknown): ConntrackError {
  try {
    run();
  } catch (err) {
    expect(err).toBeInstanceOf(ConntrackError);
    return err as ConntrackError;
  }
  throw new Error('expected ERR_CONNTRACK_NATIVE, nothing was thrown');
}

describe('no addon for this platform', () => {
  it('is ERR_CONNTRACK_NATIVE naming the platform, the files looked for and both remedies', () => {
    const err = nativeError(() => binding());
    expect(err.code).toBe('ERR_CONNTRACK_NATIVE');
    const libc = libcOfProcess();
    expect(err.message).toContain(`missing for ${platform} (${libc.name}`);
    expect(err.message).toContain(join(scratch, 'prebuilds', platform, `conntrack.napi.${libc.name}.node`));
    expect(err.message).toContain('prebuilds ship for linux-x64 and linux-arm64 with glibc 2.28 or newer');
    expect(err.message).toContain('apk add build-base python3 linux-headers');
    expect(err.message).toContain('npm rebuild conntrack');
    // node-gyp-build's own words stay reachable for a bug report.
    expect(String((err.cause as Error).message)).toContain('No native build was found');
  });

  it('reaches callers as ERR_CONNTRACK_NATIVE, not as a kernel error', async () => {
    await expect(Conntrack.open()).rejects.toMatchObject({ code: 'ERR_CONNTRACK_NATIVE' });
    await expect(Conntrack.open({ netns: '/proc/self/ns/net' })).rejects.toMatchObject({ code: 'ERR_CONNTRACK_NATIVE' });
  });

  it('leaves sizing, persistence files, evaluate() and metrics rendering working', () => {
    const defaults = kernelDefaults({ kernelRelease: '6.1.0', memoryBytes: 8 * 2 ** 30 });
    expect(defaults.max).toBeGreaterThan(0);
    expect(memoryCost({ max: 262_144, buckets: 65_536 }).totalBytes).toBeGreaterThan(0);
    const files = renderPersistence({ max: 524_288 });
    expect(files.map((f) => f.content).join('')).toContain('net.netfilter.nf_conntrack_max = 524288');
    const text = renderMetrics({
      buckets: 1024,
      namespaces: [{ netns: '', up: true, entries: 250, max: 1000, counters: { drop: 5 }, unknownCounters: {} }],
    });
    expect(text).toContain('conntrack_entries{netns=""} 250');
    const diagnosis = evaluate(FACTS);
    expect(diagnosis.findings.length).toBeGreaterThan(0);
  });
});

describe('an addon that does not load', () => {
  it('is ERR_CONNTRACK_NATIVE naming the file and the loader\'s reason', () => {
    const libc = libcOfProcess();
    const file = join(scratch, 'prebuilds', platform, `conntrack.napi.${libc.name}.node`);
    mkdirSync(join(scratch, 'prebuilds', platform), { recursive: true });
    writeFileSync(file, 'not an ELF file\n');
    const err = nativeError(() => binding());
    expect(err.code).toBe('ERR_CONNTRACK_NATIVE');
    expect(err.message).toContain(`addon ${file} did not load on ${platform}`);
    expect(err.message).toMatch(/invalid ELF header|file too short/);
    expect(err.message).toContain('npm rebuild conntrack');
  });
});

const FACTS: DiagnosisFacts = {
  netns: null,
  netnsInode: 4026531840,
  netnsSince: undefined,
  initialNetns: true,
  source: 'procfs',
  time: new Date('2026-11-25T12:00:00Z'),
  intervalMs: 1000,
  kernelRelease: '6.1.0',
  memoryBytes: 8 * 2 ** 30,
  linkage: 'module',
  before: { count: { entries: 990, max: 1000 }, stats: {} },
  after: { count: { entries: 995, max: 1000 }, stats: {} },
  buckets: 1024,
  objectSize: 256,
  tcpTimeoutEstablished: 432_000,
  tcpTimeoutTimeWait: 120,
  kernelLog: { readable: true, events: [] },
  breakdown: undefined,
  breakdownSkipped: 'not asked',
  dependents: { rules: [], rulesUnknown: [], containerInterfaces: [], interfaces: ['lo'] },
  expectedConnections: undefined,
};
