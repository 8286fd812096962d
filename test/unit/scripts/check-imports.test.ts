/**
 * scripts/check-imports.mjs guards the map of lib/ (ARCHITECTURE.md): it must pass on this tree and
 * fail on a tree with a cycle or an import that goes up the map.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';

const SCRIPT = fileURLToPath(new URL('../../../scripts/check-imports.mjs', import.meta.url));

function check(dir?: string): { status: number | null; output: string } {
  const r = spawnSync(process.execPath, dir ? [SCRIPT, dir] : [SCRIPT], { encoding: 'utf8' });
  return { status: r.status, output: r.stdout + r.stderr };
}

let tree: string | undefined;
function makeTree(files: Record<string, string>): string {
  tree = mkdtempSync(join(tmpdir(), 'ct-imports-'));
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(tree, path)), { recursive: true });
    writeFileSync(join(tree, path), text);
  }
  return tree;
}
afterEach(() => {
  if (tree) rmSync(tree, { recursive: true, force: true });
  tree = undefined;
});

describe('scripts/check-imports.mjs', () => {
  it('passes on lib/ as it is', () => {
    const r = check();
    expect(r.output).toContain('no cycle');
    expect(r.status).toBe(0);
  });

  it('fails on a cycle inside one folder', () => {
    const r = check(makeTree({
      'table/a.ts': "import { b } from './b.js';\nexport const a = b;\n",
      'table/b.ts': "import { a } from './a.js';\nexport const b = 1; void a;\n",
    }));
    expect(r.status).toBe(1);
    expect(r.output).toMatch(/import cycle: table\/(a|b)\.ts -> /);
  });

  it('fails on an import that goes up the map', () => {
    const r = check(makeTree({
      'tuning/sysctl.ts': "import { x } from '../table/conntrack.js';\nexport const y = x;\n",
      'table/conntrack.ts': 'export const x = 1;\n',
    }));
    expect(r.status).toBe(1);
    expect(r.output).toContain('lib/tuning/sysctl.ts (lib/tuning) imports lib/table/conntrack.ts (lib/table)');
  });

  it('fails on a folder the map does not know', () => {
    const r = check(makeTree({ 'misc/util.ts': 'export const z = 1;\n' }));
    expect(r.status).toBe(1);
    expect(r.output).toContain('folder lib/misc has no rank');
  });
});
