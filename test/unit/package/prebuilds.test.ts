/**
 * The prebuilds load wherever official Node 20 runs: each asks for no symbol version newer than
 * Node's own binary does (GLIBC_2.28, GLIBCXX_3.4.21, CXXABI_1.3.9, and libgcc_s as Node uses it),
 * needs no shared library that Node does not load, and exports only the Node-API entry points.
 * Read from the binaries with readelf (binutils; it reads every architecture).
 *
 * `npm run prebuilds` makes them; scripts/test-all.sh runs it before this test, so in CI (CI set to
 * anything but empty, false or 0) a missing prebuild is a failure, and elsewhere the test is
 * skipped with the command to run.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { isCI } from '../../helpers/gate.js';
import { findTool } from '../../helpers/tools.js';

interface Target {
  arch: 'x64' | 'arm64';
  machine: string;
  /** What official Node 20's binary needs for this architecture (readelf -d, -V of node 20.19/20.20). */
  libraries: readonly string[];
  newest: Readonly<Record<'GLIBC' | 'GLIBCXX' | 'CXXABI' | 'GCC', string>>;
}

const NODE_LIBRARIES = ['libdl.so.2', 'libstdc++.so.6', 'libm.so.6', 'libgcc_s.so.1', 'libpthread.so.0', 'libc.so.6'];

const TARGETS: readonly Target[] = [
  {
    arch: 'x64',
    machine: 'Advanced Micro Devices X86-64',
    libraries: [...NODE_LIBRARIES, 'ld-linux-x86-64.so.2'],
    newest: { GLIBC: '2.28', GLIBCXX: '3.4.21', CXXABI: '1.3.9', GCC: '3.4' },
  },
  {
    arch: 'arm64',
    machine: 'AArch64',
    libraries: [...NODE_LIBRARIES, 'ld-linux-aarch64.so.1'],
    newest: { GLIBC: '2.28', GLIBCXX: '3.4.21', CXXABI: '1.3.9', GCC: '4.2.0' },
  },
];

const root = join(import.meta.dirname, '..', '..', '..');

function readelf(...args: string[]): string {
  return execFileSync('readelf', ['-W', ...args], { encoding: 'utf8' });
}

function compareVersions(a: string, b: string): number {
  const x = a.split('.').map(Number);
  const y = b.split('.').map(Number);
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** The version names the dynamic loader checks before it loads the file (.gnu.version_r). */
function neededVersions(file: string): string[] {
  const text = readelf('-V', file);
  const section = text.slice(text.indexOf("Version needs section '.gnu.version_r'"));
  return [...section.matchAll(/Name: (\S+)\s+Flags/g)].map((m) => m[1] as string);
}

/** Undefined dynamic symbols with the version each asks for: `pthread_create@GLIBC_2.2.5`. */
function versionedImports(file: string): Map<string, string[]> {
  const byVersion = new Map<string, string[]>();
  for (const line of readelf('--dyn-syms', file).split('\n')) {
    const m = /\sUND\s+([^@\s]+)@(\S+)/.exec(line);
    if (m === null) continue;
    const [, symbol, version] = m as unknown as [string, string, string];
    byVersion.set(version, [...(byVersion.get(version) ?? []), symbol]);
  }
  return byVersion;
}

function definedExports(file: string): string[] {
  return readelf('--dyn-syms', file)
    .split('\n')
    .map((line) => line.trim().split(/\s+/))
    .filter((f) => f.length >= 8 && /^\d+:$/.test(f[0] as string) && f[6] !== 'UND' && f[4] !== 'LOCAL')
    .map((f) => f[7] as string);
}

const readelfMissing = findTool('readelf') === undefined;

for (const target of TARGETS) {
  const file = join(root, 'prebuilds', `linux-${target.arch}`, 'conntrack.napi.glibc.node');
  const missing = readelfMissing
    ? 'readelf not found (apt-get install binutils)'
    : existsSync(file) ? undefined : `${file} does not exist: run "npm run prebuilds"`;
  const suite = missing !== undefined && !isCI() ? describe.skip : describe;
  if (missing !== undefined && !isCI()) console.warn(`[prebuilds] skipping linux-${target.arch}: ${missing}`);

  suite(`prebuild linux-${target.arch}`, () => {
    it('exists and is built for its architecture', () => {
      if (missing !== undefined) throw new Error(missing);
      expect(readelf('-h', file)).toMatch(new RegExp(`Machine:\\s+${target.machine}\\n`));
    });

    it('needs no shared library that Node does not load', () => {
      const needed = [...readelf('-d', file).matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]);
      expect(needed.length).toBeGreaterThan(0);
      expect(needed.filter((lib) => !target.libraries.includes(lib as string))).toEqual([]);
    });

    it(`asks for no symbol version newer than Node's own binary (GLIBC_${target.newest.GLIBC}, GLIBCXX_${target.newest.GLIBCXX}, CXXABI_${target.newest.CXXABI})`, () => {
      const versions = neededVersions(file);
      expect(versions).toContain(target.arch === 'x64' ? 'GLIBC_2.2.5' : 'GLIBC_2.17'); // the parse found the section
      const imports = versionedImports(file);
      const tooNew = versions.flatMap((version) => {
        const m = /^(GLIBCXX|GLIBC|CXXABI|GCC)_(\d+(?:\.\d+)*)$/.exec(version);
        if (m === null) return [`${version} (not a version Node's libraries define)`];
        const family = m[1] as keyof Target['newest'];
        if (compareVersions(m[2] as string, target.newest[family]) <= 0) return [];
        return [`${version} (newest allowed ${family}_${target.newest[family]}): ${(imports.get(version) ?? []).join(', ')}`];
      });
      expect(tooNew).toEqual([]);
    });

    it('exports only the Node-API entry points (native/exports.map)', () => {
      expect(definedExports(file).sort()).toEqual(['napi_register_module_v1', 'node_api_module_get_api_version_v1']);
    });
  });
}
