#!/usr/bin/env node
// Bulk changes side by side with conntrack-tools (issue 11). Run as root: `npm run bench:bulk`
// (also the last group of `npm run bench`).
//
//   node benchmarks/bulk.mjs [--size 100000] [--reps 5] [--inserts 2000]
//
// In a sandbox namespace of its own, each repetition fills the table the same way (SIZE UDP
// entries with mark 7, and SIZE/10 TCP entries no row deletes) and empties it once per row:
//
//   delete rows  conntrack -D -p udp          deleteMatching({ protocol: 'udp' })  (native scan)
//                conntrack -D -m 7            deleteMatching({ mark: 7 })          (filtered flush)
//                conntrack -F (everything)
//   create rows  createMany() of SIZE entries, await create() in a loop of SIZE entries, and
//                conntrack -I once per entry (INSERTS processes, one after the other)
//
// Library times are taken inside a fresh child process around the call alone (benchmarks/bulk-child.mjs);
// conntrack-tools' times are the whole command, as a script would run it. After each row the
// table must hold what the row leaves (checked with conntrack -C), or the run fails. Prints a
// markdown table with medians and ratios, and writes benchmarks/results/bulk-latest.{md,json}.
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { acquireGlobalLimits } from '../scripts/global-limits-lock.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(HERE, '..');
const RESULTS = join(HERE, 'results');
const CHILD = join(HERE, 'bulk-child.mjs');
const TARGETS = { deleteVsTool: 2, flushVsTool: 1.5, createPerSecond: 300_000 };

function parseArgs(argv) {
  const o = { size: 100_000, reps: 5, inserts: 2000 };
  for (let i = 0; i < argv.length; i++) {
    const [key, inline] = argv[i].split('=');
    const value = Number(inline ?? argv[++i]);
    if (!['--size', '--reps', '--inserts'].includes(key) || !Number.isInteger(value) || value < 1) {
      console.error('usage: node benchmarks/bulk.mjs [--size N] [--reps N] [--inserts N]');
      process.exit(2);
    }
    o[key.slice(2)] = value;
  }
  return o;
}

function run(cmd, args, { quiet = false } = {}) {
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    const child = spawn(cmd, args, { stdio: ['ignore', quiet ? 'ignore' : 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout?.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    child.on('error', reject);
    child.on('close', (code) => {
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      if (code !== 0) reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${err.trim().slice(-400)}`));
      else resolve({ out, err, seconds });
    });
  });
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) throw new Error('run as root: the benchmark makes a network namespace and changes its table');
  if (!existsSync(join(ROOT, 'dist', 'lib', 'index.js'))) throw new Error('dist/ is missing: npm run build first');
  const conntrack = execFileSync('sh', ['-c', 'command -v conntrack'], { encoding: 'utf8' }).trim();
  const others = Math.ceil(opts.size / 10);

  // The sandbox holds SIZE + SIZE/10 entries, and createMany() SIZE more beside the loop's: make
  // room under the lock the tests use (restored on release, or by the next taker if killed).
  const lock = await acquireGlobalLimits('exclusive', { timeoutMs: 3_600_000 });
  const ns = `ctbench-bulk-${process.pid}`;
  const path = `/run/netns/${ns}`;
  const cleanup = () => {
    try { execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' }); } catch { /* not made yet */ }
    lock.release();
  };
  process.once('SIGINT', () => { cleanup(); process.exit(130); });
  process.once('SIGTERM', () => { cleanup(); process.exit(143); });
  try {
    lock.ensureMax(2 * opts.size + others + 10_000);
    execFileSync('ip', ['netns', 'add', ns]);
    const inNs = (cmd, args, o) => run('nsenter', [`--net=${path}`, cmd, ...args], o);
    await inNs('ip', ['link', 'set', 'lo', 'up']);
    const count = async () => Number((await inNs(conntrack, ['-C'])).out.trim());
    const child = async (mode, n = 0) => {
      const r = await run(process.execPath, [CHILD, mode, path, String(n)]);
      return JSON.parse(r.out.trim().split('\n').pop());
    };
    const expectCount = async (want, what) => {
      const have = await count();
      if (have !== want) throw new Error(`${what}: the table holds ${have} entries, expected ${want}`);
    };
    const fill = async () => {
      await inNs(conntrack, ['-F'], { quiet: true }).catch(() => undefined);
      const udp = await child('fill', opts.size);
      const tcp = await child('fill-other', others);
      if (udp.result.failed || tcp.result.failed) throw new Error(`fill failed: ${udp.result.firstFailure ?? tcp.result.firstFailure}`);
      await expectCount(opts.size + others, 'after the fill');
    };

    const rows = {
      toolDeleteProto: [], libDeleteProto: [], toolDeleteMark: [], libDeleteMark: [], toolFlush: [],
      createMany: [], createLoop: [], toolInsert: [],
    };
    let kernelFlushUsed;
    for (let rep = 0; rep < opts.reps; rep++) {
      process.stderr.write(`bench:bulk: repetition ${rep + 1} of ${opts.reps}\n`);
      await fill();
      rows.toolDeleteProto.push((await inNs(conntrack, ['-D', '-p', 'udp'], { quiet: true })).seconds);
      await expectCount(others, 'after conntrack -D -p udp');
      await fill();
      const proto = await child('delete-proto');
      if (proto.result.deleted !== opts.size) throw new Error(`deleteMatching protocol deleted ${proto.result.deleted}`);
      rows.libDeleteProto.push(proto.seconds);
      await expectCount(others, 'after deleteMatching({ protocol })');
      await fill();
      rows.toolDeleteMark.push((await inNs(conntrack, ['-D', '-m', '7'], { quiet: true })).seconds);
      await expectCount(others, 'after conntrack -D -m 7');
      await fill();
      const mark = await child('delete-mark');
      kernelFlushUsed = mark.result.kernelFlush;
      rows.libDeleteMark.push(mark.seconds);
      await expectCount(others, 'after deleteMatching({ mark })');
      await fill();
      rows.toolFlush.push((await inNs(conntrack, ['-F'], { quiet: true })).seconds);
      await expectCount(0, 'after conntrack -F');

      const many = await child('create-many', opts.size);
      if (many.result.succeeded !== opts.size) throw new Error(`createMany made ${many.result.succeeded}: ${many.result.firstFailure}`);
      rows.createMany.push(opts.size / many.seconds);
      await inNs(conntrack, ['-F'], { quiet: true });
      const loop = await child('create-loop', opts.size);
      rows.createLoop.push(opts.size / loop.seconds);
      await inNs(conntrack, ['-F'], { quiet: true });
      // One conntrack -I process per entry, as a shell script makes them.
      const script = `for i in $(seq 0 ${opts.inserts - 1}); do ${conntrack} -I -p udp -s 198.18.200.$((i / 60000)) -d 198.19.0.1 ` +
        `--sport $((1024 + i % 60000)) --dport 53 -t 3600 >/dev/null 2>&1 || exit 1; done`;
      rows.toolInsert.push(opts.inserts / (await inNs('sh', ['-c', script], { quiet: true })).seconds);
      await expectCount(opts.inserts, 'after conntrack -I');
      await inNs(conntrack, ['-F'], { quiet: true });
    }

    const m = Object.fromEntries(Object.entries(rows).map(([k, v]) => [k, median(v)]));
    // Ratios paired by repetition: both sides of a pair ran within seconds of each other.
    const paired = (a, b) => median(rows[a].map((x, i) => x / rows[b][i]));
    const deleteSpeedup = paired('toolDeleteProto', 'libDeleteProto');
    const markVsFlush = paired('libDeleteMark', 'toolFlush');
    const s = (x) => `${x.toFixed(3)} s`;
    const rate = (x) => `${Math.round(x).toLocaleString('en')}/s`;
    const pass = (ok) => (ok ? 'PASS' : 'not met');
    const lines = [
      '# conntrack bulk-changes benchmark',
      '',
      `${new Date().toISOString()} · kernel ${os.release()} · ${os.cpus()[0]?.model ?? '?'} × ${os.cpus().length} · Node ${process.version} · ` +
        `${opts.size.toLocaleString('en')} UDP entries (mark 7) + ${others.toLocaleString('en')} TCP entries · median of ${opts.reps}`,
      '',
      '| Delete (the table refilled before each row) | time | ratio | target | |',
      '|---|---:|---:|---|---|',
      `| \`conntrack -D -p udp\` | ${s(m.toolDeleteProto)} | 1.00 | | |`,
      `| \`deleteMatching({ protocol: 'udp' })\` (native scan, pipelined deletes) | ${s(m.libDeleteProto)} | ${deleteSpeedup.toFixed(2)}× faster | ≥ ${TARGETS.deleteVsTool}× faster | ${pass(deleteSpeedup >= TARGETS.deleteVsTool)} |`,
      `| \`conntrack -D -m 7\` | ${s(m.toolDeleteMark)} | ${paired('toolDeleteMark', 'libDeleteMark').toFixed(2)}× ours | | |`,
      `| \`deleteMatching({ mark: 7 })\` (${kernelFlushUsed ? 'one filtered kernel flush' : 'native scan: this kernel was not probed to honour a filtered flush'}) | ${s(m.libDeleteMark)} | ${markVsFlush.toFixed(2)}× \`conntrack -F\` | ≤ ${TARGETS.flushVsTool}× \`conntrack -F\` | ${pass(markVsFlush <= TARGETS.flushVsTool)} |`,
      `| \`conntrack -F\` (everything) | ${s(m.toolFlush)} | 1.00 | | |`,
      '',
      '| Create | entries per second | target | |',
      '|---|---:|---|---|',
      `| \`createMany()\`, ${opts.size.toLocaleString('en')} entries | ${rate(m.createMany)} | ≥ ${rate(TARGETS.createPerSecond)} | ${pass(m.createMany >= TARGETS.createPerSecond)} |`,
      `| \`await create()\` in a loop, ${opts.size.toLocaleString('en')} entries | ${rate(m.createLoop)} | | |`,
      `| \`conntrack -I\`, one process per entry, ${opts.inserts.toLocaleString('en')} entries | ${rate(m.toolInsert)} | | |`,
      '',
    ];
    const text = lines.join('\n');
    process.stdout.write(`${text}\n`);
    mkdirSync(RESULTS, { recursive: true });
    writeFileSync(join(RESULTS, 'bulk-latest.md'), `${text}\n`);
    writeFileSync(join(RESULTS, 'bulk-latest.json'), `${JSON.stringify({ opts, rows, medians: m, deleteSpeedup, markVsFlush, kernelFlushUsed }, null, 2)}\n`);
  } finally {
    cleanup();
  }
}

main().catch((err) => {
  console.error(`bench:bulk: ${err.message}`);
  process.exit(1);
});
