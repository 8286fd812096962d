#!/usr/bin/env node
// How late `conntrack watch` prints its lines (timer drift), measured, not asserted: the
// integration test only checks that no line comes before its time, which holds on any machine;
// lateness depends on the machine's load. Run as root after `npm run build`:
//
//   node benchmarks/watch-drift.mjs [--interval SECONDS] [--lines N] [--runs N]
//
// Each run starts the built command in this process's network namespace and reads its --jsonl
// lines; line k is due at the first line's time + k·interval. Prints, per run, the lateness of the
// last line (drift: a timer re-armed after each sample falls behind by the sample's time on every
// line) and the latest single line, and their medians over the runs.
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'lib', 'cli', 'main.js');
const { values } = parseArgs({ options: { interval: { type: 'string', default: '0.05' }, lines: { type: 'string', default: '201' }, runs: { type: 'string', default: '5' } } });
const interval = Number(values.interval);
const count = Number(values.lines);
const runs = Number(values.runs);

const median = (list) => [...list].sort((a, b) => a - b)[Math.floor(list.length / 2)];
const lastLate = [];
const worstLate = [];
for (let run = 0; run < runs; run++) {
  const result = spawnSync(process.execPath, [CLI, 'watch', '--interval', String(interval), '--count', String(count), '--jsonl'], { encoding: 'utf8' });
  if (result.status !== 0) throw new Error(`conntrack watch failed (${result.status}): ${result.stderr}`);
  const times = result.stdout.trim().split('\n').map((line) => Date.parse(JSON.parse(line).time));
  const late = times.map((time, k) => time - times[0] - k * interval * 1000);
  lastLate.push(late.at(-1));
  worstLate.push(Math.max(...late));
  console.log(`run ${run + 1}: last line ${late.at(-1)} ms late, latest line ${Math.max(...late)} ms late`);
}
console.log(`${count} lines every ${interval} s, ${runs} runs: median drift ${median(lastLate)} ms, median latest line ${median(worstLate)} ms`);
