#!/usr/bin/env node
// Checks the map of native/ drawn in ARCHITECTURE.md: each file belongs to a layer and includes
// only its own layer's files and those of the layers it builds on; only the binding includes
// napi.h, so the codec builds alone for the fuzzer and sanitizers. Exits 1 on a breach.
import { readdirSync, readFileSync } from 'node:fs';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// The folder to check: native/ of this checkout, or another (the unit test gives it broken trees).
const ROOT = resolve(process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), '..', 'native'));

/** Each layer's files (by name without extension) and the layers it may include. */
const LAYERS = {
  errors: { files: ['sys_error'], uses: [] },
  codec: {
    files: ['record_layout', 'wire', 'entry', 'decode', 'filter', 'records', 'dedup', 'requests', 'expectation', 'entry_specs', 'summary', 'batch_sink', 'mirror'],
    uses: ['errors'],
  },
  io: { files: ['netlink_socket', 'netns'], uses: ['errors'] },
  sessions: { files: ['transaction', 'ct_dump', 'ct_mirror', 'pipeline', 'flush_probe', 'bulk_delete', 'bulk_changes'], uses: ['errors', 'codec', 'io'] },
  binding: { files: [/^addon(_|$)/], uses: ['errors', 'codec', 'io', 'sessions'] },
  // Symbols for loading on older glibc (the README's Development section); includes only the C++ library.
  platform: { files: ['glibc_compat'], uses: [] },
  tools: { files: ['tools/decode_bench', 'tools/dump_bench', 'tools/fuzz_decode', 'tools/request_check', 'tools/fuzz_dump_request', 'tools/fuzz_entry_request'], uses: ['errors', 'codec', 'io', 'sessions'] },
};

function layerOf(name) {
  for (const [layer, { files }] of Object.entries(LAYERS)) {
    if (files.some((f) => (typeof f === 'string' ? f === name : f.test(name)))) return layer;
  }
  return undefined;
}

function sources(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) =>
    d.isDirectory() ? sources(join(dir, d.name)) : /\.(h|cc)$/.test(d.name) ? [join(dir, d.name)] : []);
}

const problems = [];
const files = sources(ROOT);
for (const file of files) {
  const path = relative(ROOT, file);
  const name = path.replace(/\.(h|cc)$/, '');
  const layer = layerOf(name);
  if (layer === undefined) {
    problems.push(`native/${path} has no layer in scripts/check-includes.mjs`);
    continue;
  }
  const text = readFileSync(file, 'utf8');
  for (const [, system] of text.matchAll(/^\s*#\s*include\s*<([^>]+)>/gm)) {
    if (system === 'napi.h' && layer !== 'binding') problems.push(`native/${path} (${layer}) includes napi.h: only the binding may`);
  }
  for (const [, local] of text.matchAll(/^\s*#\s*include\s*"([^"]+)"/gm)) {
    const target = relative(ROOT, resolve(dirname(file), local)).replace(/\.(h|cc)$/, '');
    const to = layerOf(target);
    if (to === undefined) {
      problems.push(`native/${path} includes ${local}, which has no layer`);
    } else if (to !== layer && !LAYERS[layer].uses.includes(to)) {
      problems.push(`native/${path} (${layer}) includes ${basename(local)} (${to}): ${layer} builds on ${LAYERS[layer].uses.join(', ') || 'nothing'}`);
    }
  }
}

if (problems.length > 0) {
  console.error(`native/ include map: ${problems.length} problem(s)\n  ${problems.join('\n  ')}`);
  process.exit(1);
}
console.log(`native/ include map: ${files.length} files, every include goes down the layers, napi.h in the binding only`);
