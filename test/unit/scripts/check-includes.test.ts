/**
 * scripts/check-includes.mjs guards the map of native/ (ARCHITECTURE.md): it must pass on this tree
 * and fail on a tree where the codec includes napi.h or a layer includes one above it.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';

const SCRIPT = fileURLToPath(new URL('../../../scripts/check-includes.mjs', import.meta.url));

function check(dir?: string): { status: number | null; output: string } {
  const r = spawnSync(process.execPath, dir ? [SCRIPT, dir] : [SCRIPT], { encoding: 'utf8' });
  return { status: r.status, output: r.stdout + r.stderr };
}

let tree: string | undefined;
function makeTree(files: Record<string, string>): string {
  tree = mkdtempSync(join(tmpdir(), 'ct-includes-'));
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

describe('scripts/check-includes.mjs', () => {
  it('passes on native/ as it is', () => {
    const r = check();
    expect(r.output).toContain('every include goes down the layers');
    expect(r.status).toBe(0);
  });

  it('fails when the codec includes napi.h', () => {
    const r = check(makeTree({ 'decode.cc': '#include <napi.h>\n' }));
    expect(r.status).toBe(1);
    expect(r.output).toContain('native/decode.cc (codec) includes napi.h');
  });

  it('fails on an include that goes up the layers', () => {
    const r = check(makeTree({ 'wire.h': '#include "netlink_socket.h"\n', 'netlink_socket.h': '' }));
    expect(r.status).toBe(1);
    expect(r.output).toContain('native/wire.h (codec) includes netlink_socket.h (io)');
  });

  it('fails on a file the map does not know', () => {
    const r = check(makeTree({ 'util.h': '' }));
    expect(r.status).toBe(1);
    expect(r.output).toContain('native/util.h has no layer');
  });
});
