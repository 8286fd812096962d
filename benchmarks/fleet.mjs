#!/usr/bin/env node
// The fleet scenario (issue 10), as root: `npm run bench:fleet` (or node benchmarks/fleet.mjs).
//
//   node benchmarks/fleet.mjs [--namespaces 20] [--entries 50000] [--scrapes 200] [--reps 3]
//
// Makes N sandbox namespaces (ctfleet-<pid>-<i>) of M UDP entries each with bin/fill, raises the
// global nf_conntrack_max to hold them (restored in finally and on SIGINT/SIGTERM), and measures
// in a fresh process (fleet-child.mjs): the scrape of all N (target 5 ms: counts and statistics
// only, no dump), the breakdown refresh against a dump of the same namespaces (target 1.2x), the
// exporter's RSS, and a scrape with netns 'all'. Holds the machine-wide lock on the global limits
// (the protocol of test/helpers/global-lock.ts and run.mjs) for the whole run. Writes
// benchmarks/results/fleet-latest.md and .json.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const BIN = join(HERE, 'bin');
const RESULTS = join(HERE, 'results');
const MAX_PATH = '/proc/sys/net/netfilter/nf_conntrack_max';
const LOCK = '/run/lock/conntrack-global-limits';
const TARGETS = { scrapeMs: 5, refreshRatio: 1.2 };

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const value = Number(process.argv[i + 1]);
  if (!Number.isInteger(value) || value < 1) {
    console.error(`fleet: --${name} takes a positive integer`);
    process.exit(2);
  }
  return value;
}
const opts = { namespaces: option('namespaces', 20), entries: option('entries', 50_000), scrapes: option('scrapes', 200), reps: option('reps', 3) };

const sh = (cmd, args, input) => execFileSync(cmd, args, { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'] });
const names = [];
let lockHeld = false;
let origMax;
let setMax;

function pidAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return e.code === 'EPERM';
  }
}

function lockOwner() {
  try {
    return Number(readFileSync(`${LOCK}/pid`, 'utf8')) || undefined;
  } catch {
    return undefined;
  }
}

async function takeLock() {
  mkdirSync(dirname(LOCK), { recursive: true });
  for (let said = false; ; said = true) {
    try {
      mkdirSync(LOCK);
      writeFileSync(`${LOCK}/pid`, String(process.pid));
      lockHeld = true;
      return;
    } catch (e) {
      if (e.code !== 'EEXIST') throw e;
      const owner = lockOwner();
      let age = 0;
      try {
        age = Date.now() - statSync(LOCK).mtimeMs;
      } catch {
        continue;
      }
      if (owner === undefined ? age > 10_000 : !pidAlive(owner)) {
        rmSync(LOCK, { recursive: true, force: true });
        continue;
      }
      if (!said) console.error(`fleet: waiting for ${LOCK} (pid ${owner ?? '?'})`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

function cleanup() {
  for (const name of names.splice(0)) {
    try {
      sh('ip', ['netns', 'del', name]);
    } catch (e) {
      console.error(`fleet: could not delete netns ${name}: ${e.message}`);
    }
  }
  if (origMax !== undefined && Number(readFileSync(MAX_PATH, 'utf8')) === setMax) writeFileSync(MAX_PATH, String(origMax));
  origMax = undefined;
  if (lockHeld && lockOwner() === process.pid) rmSync(LOCK, { recursive: true, force: true });
  lockHeld = false;
}

function sandbox(i) {
  const name = `ctfleet-${process.pid}-${i}`;
  sh('ip', ['netns', 'add', name]);
  names.push(name);
  const path = `/run/netns/${name}`;
  const inNs = (cmd, args, input) => sh('nsenter', [`--net=${path}`, cmd, ...args], input);
  inNs('ip', ['link', 'set', 'lo', 'up']);
  // As run.mjs: tracked at output, the looped-back packets dropped before conntrack sees them again.
  inNs('nft', ['-f', '-'], [
    'table ip ctbench {',
    '  chain out { type filter hook output priority 0; policy accept; ct state new counter; }',
    '  chain pre { type filter hook prerouting priority -300; policy accept; iif "lo" ip saddr 127.0.0.1 ip daddr 127.0.0.0/8 udp sport 40000-40015 counter drop; }',
    '}',
    '',
  ].join('\n'));
  inNs('sysctl', ['-q', '-w', 'net.netfilter.nf_conntrack_udp_timeout=3600']);
  inNs('sysctl', ['-q', '-w', 'net.netfilter.nf_conntrack_udp_timeout_stream=3600']);
  sh('nsenter', [`--net=${path}`, join(BIN, 'fill'), String(opts.entries)]);
  const count = Number(inNs('conntrack', ['-C']).trim());
  if (count !== opts.entries) throw new Error(`${name} holds ${count} entries, wanted ${opts.entries}`);
  return path;
}

const fmt = (s) => (s * 1000).toFixed(2);

function report(meta, r) {
  const L = [];
  L.push('# conntrack fleet benchmark', '');
  L.push('| | |', '|---|---|');
  L.push(`| Date | ${meta.date} |`, `| Kernel | ${meta.kernel} |`, `| CPU | ${meta.cpu} × ${meta.ncpu} |`, `| Node | ${meta.node} |`);
  L.push(`| Load average before | ${meta.loadavg} |`);
  L.push(`| Namespaces | ${r.namespaces} × ${opts.entries.toLocaleString('en-US')} UDP entries (verified with \`conntrack -C\` in each) |`);
  L.push(`| Breakdown | by protocol, TCP state, zone and the top 10 of a key: dport (every entry has its own: ${opts.entries.toLocaleString('en-US')} groups per namespace, the worst case) or sport (one group up to 64,512 entries) |`, '');
  L.push('| Measurement | median | p95 | max | target | |', '|---|---:|---:|---:|---|---|');
  const row = (label, s, target, ok) => L.push(`| ${label} | ${fmt(s.median)} ms | ${fmt(s.p95)} ms | ${fmt(s.max)} ms | ${target} | ${ok === undefined ? '' : ok ? 'PASS' : 'FAIL'} |`);
  row(`scrape of ${r.namespaces} namespaces, \`collect()\` (${opts.scrapes} in a row)`, r.scrape, `≤ ${TARGETS.scrapeMs} ms`, r.scrape.median * 1000 <= TARGETS.scrapeMs);
  row('the same over HTTP from another process (keep-alive GET)', r.http, '', undefined);
  row(`scrape with \`netns: 'all'\` (${r.all.found} namespaces found, discovery included)`, r.all.scrape, '', undefined);
  L.push('', `The exporter's own \`conntrack_scrape_duration_seconds\` said ${fmt(r.scrapeReported)} ms.`, '');
  L.push(`| ${r.namespaces} namespaces, one after the other (median of ${opts.reps}) | s | × floor | × library dump | target | |`, '|---|---:|---:|---:|---|---|');
  L.push(`| raw ctnetlink dumps (\`bin/rawdump\`, the floor) | ${r.refresh.floor.toFixed(3)} | 1.00 | | | |`);
  L.push(`| library dumps (\`ct.batches()\`, counting entries) | ${r.refresh.library.toFixed(3)} | ${(r.refresh.library / r.refresh.floor).toFixed(2)} | 1.00 | | |`);
  for (const [label, m] of [[`dport, ${opts.entries.toLocaleString('en-US')} groups each`, r], [`sport, ${r.sport.topSeriesPerNamespace - 1} group(s) each`, r.sport]]) {
    const ok = m.refresh.overLibrary <= TARGETS.refreshRatio;
    L.push(`| **breakdown refresh**, by ${label} (\`summarize()\` by protocol, tcpState, zone, key; top 10 + other) | ${m.refresh.refresh.toFixed(3)} | ${m.refresh.overFloor.toFixed(2)} | ${m.refresh.overLibrary.toFixed(2)} | ≤ ${TARGETS.refreshRatio}× dump | ${ok ? 'PASS' : 'FAIL'} |`);
  }
  L.push('', `Top-N series per namespace: ${r.topSeriesPerNamespace} (dport), ${r.sport.topSeriesPerNamespace} (sport). Each dump walks the whole shared hash table (${(opts.namespaces * opts.entries).toLocaleString('en-US')} entries here), whichever namespace asks, and skips the other namespaces' entries in the kernel.`, '');
  L.push('| Exporter process RSS, MiB | by dport | by sport |', '|---|---:|---:|');
  for (const [label, key] of [['before creating it', 'start'], ['serving, after the first breakdowns', 'serving'], [`after ${opts.scrapes * 2} scrapes`, 'afterScrapes'],
    [`after ${opts.reps + 1} breakdown refreshes`, 'afterRefreshes'], ['peak (VmHWM)', 'peak']]) {
    L.push(`| ${label} | ${r.rss[key].toFixed(1)} | ${r.sport.rss[key].toFixed(1)} |`);
  }
  L.push('');
  return L.join('\n');
}

async function main() {
  if (process.getuid?.() !== 0) throw new Error('run as root: needs CAP_NET_ADMIN and CAP_SYS_ADMIN');
  if (!existsSync(join(HERE, '..', 'dist', 'lib', 'index.js'))) throw new Error('dist/lib/index.js is missing: npm run build first');
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => { cleanup(); process.exit(130); });
  process.on('exit', cleanup);
  mkdirSync(BIN, { recursive: true });
  mkdirSync(RESULTS, { recursive: true });
  for (const prog of ['rawdump', 'fill']) sh(process.env.CC || 'cc', ['-O2', '-Wall', '-o', join(BIN, prog), join(HERE, `${prog}.c`)]);
  await takeLock();
  origMax = Number(readFileSync(MAX_PATH, 'utf8'));
  const others = Number(readFileSync('/proc/sys/net/netfilter/nf_conntrack_count', 'utf8'));
  const want = opts.namespaces * opts.entries + others + 100_000;
  setMax = Math.max(origMax, want);
  if (setMax !== origMax) writeFileSync(MAX_PATH, String(setMax));
  const meta = {
    date: new Date().toISOString(), kernel: os.release(), cpu: os.cpus()[0]?.model ?? 'unknown', ncpu: os.cpus().length, node: process.version,
    loadavg: readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' '),
  };
  const paths = [];
  for (let i = 0; i < opts.namespaces; i++) {
    paths.push(sandbox(i));
    process.stderr.write(`fleet: namespace ${i + 1}/${opts.namespaces} filled\n`);
  }
  // Breakdown keys: dport, a group per entry here (the worst case), and sport, which the fill
  // keeps the same for its first 64,512 entries: the usual shape of a table, few groups.
  const measure = async (breakdownBy) => {
    const child = spawn(process.execPath, ['--expose-gc', join(HERE, 'fleet-child.mjs'), JSON.stringify({
      paths, breakdownBy, scrapes: opts.scrapes, reps: opts.reps, rawdump: join(BIN, 'rawdump'), port: 9791,
    })], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const code = await new Promise((resolve) => child.on('close', resolve));
    if (code !== 0) throw new Error(`fleet-child exited ${code}`);
    const r = JSON.parse(out.trim().split('\n').pop());
    if (r.entries.some((n) => n !== opts.entries)) throw new Error(`the exporter counted ${r.entries.join(', ')}`);
    process.stderr.write(`fleet: ${breakdownBy} measured\n`);
    return r;
  };
  const result = await measure('dport');
  result.sport = await measure('sport');
  cleanup();
  const md = report(meta, result);
  process.stdout.write(`${md}\n`);
  writeFileSync(join(RESULTS, 'fleet-latest.md'), `${md}\n`);
  writeFileSync(join(RESULTS, 'fleet-latest.json'), `${JSON.stringify({ meta, opts, result }, null, 2)}\n`);
}

main().catch((err) => {
  cleanup();
  console.error(`fleet: ${err?.stack ?? err}`);
  process.exit(1);
});
