#!/usr/bin/env node
// Checks the map of lib/ drawn in ARCHITECTURE.md: each folder imports only from folders below it
// (its rank is lower), and no module imports itself through a chain of others. Exits 1 on a breach.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

// The folder to check: lib/ of this checkout, or another (the unit test gives it broken trees).
const ROOT = resolve(process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), '..', 'lib'));

/** Lower ranks are imported by higher ones, never the other way; equal ranks do not import each other. */
const RANKS = { base: 0, binding: 1, tuning: 2, table: 3, doctor: 4, metrics: 4, cli: 5, '.': 6 };

function sources(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) =>
    d.isDirectory() ? sources(join(dir, d.name)) : d.name.endsWith('.ts') ? [join(dir, d.name)] : []);
}

function importsOf(file) {
  const text = readFileSync(file, 'utf8');
  const specs = [...text.matchAll(/(?:\bfrom\s+|\bimport\s*\(\s*|^\s*import\s+)['"](\.{1,2}\/[^'"]+)['"]/gm)].map((m) => m[1]);
  return specs.map((s) => resolve(dirname(file), s).replace(/\.js$/, '.ts'));
}

const folderOf = (file) => relative(ROOT, dirname(file)) || '.';
const files = sources(ROOT);
const graph = new Map(files.map((f) => [f, importsOf(f)]));
const problems = [];

for (const [file, targets] of graph) {
  const from = folderOf(file);
  if (!(from in RANKS)) problems.push(`${relative(ROOT, file)}: folder lib/${from} has no rank in scripts/check-imports.mjs`);
  for (const target of targets) {
    if (!graph.has(target)) {
      problems.push(`${relative(ROOT, file)} imports ${relative(ROOT, target)}, which does not exist`);
      continue;
    }
    const to = folderOf(target);
    if (from !== to && !(RANKS[to] < RANKS[from])) {
      problems.push(`lib/${relative(ROOT, file)} (lib/${from}) imports lib/${relative(ROOT, target)} (lib/${to}): imports go down the map only`);
    }
  }
}

// Cycles between modules, by depth-first search.
const state = new Map();
const stack = [];
function visit(file) {
  state.set(file, 'open');
  stack.push(file);
  for (const target of graph.get(file) ?? []) {
    if (state.get(target) === 'open') {
      const cycle = stack.slice(stack.indexOf(target)).concat(target).map((f) => relative(ROOT, f));
      problems.push(`import cycle: ${cycle.join(' -> ')}`);
    } else if (!state.has(target) && graph.has(target)) {
      visit(target);
    }
  }
  stack.pop();
  state.set(file, 'done');
}
for (const file of files) if (!state.has(file)) visit(file);

if (problems.length > 0) {
  console.error(`lib/ import map: ${problems.length} problem(s)\n  ${problems.join('\n  ')}`);
  process.exit(1);
}
console.log(`lib/ import map: ${files.length} modules, no cycle, every import goes down the map`);
