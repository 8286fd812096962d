// One library scenario in a fresh process; run by benchmarks/run.mjs, not meant to be used alone.
//
//   node benchmarks/lib-child.mjs MODE NETNS_PATH [CALLS]
//
// MODE: entries  for await (const e of ct.entries()) n++  (full JS objects), with event-loop
//                delay and RSS growth recorded during the dump
//       ids      the same walk touching only e.id
//       summary  ct.summarize(undefined, { by: ['protocol', 'dport'] }): group-by counts, no entry objects
//       warm     entries, measured on the second dump of the process (compiled code, as in a
//                sidecar that dumps repeatedly)
//       count    one await ct.count()
//       latency  CALLS sequential await ct.count() on one handle (after a warm-up)
//       mirror   ct.mirror(): the fill's time, native bytes per entry (the store's own count) and
//                RSS growth per entry; then mirror.summarize() by protocol and dport: the first
//                call (a scan, which keeps the grouping) and the median of CALLS (default 5) more
//                (from the kept counts), the median of CALLS with top 10, then after changes that
//                moved every group's count (64,512 entries added, one per port, then deleted,
//                three times: the median of the six answers), beside one dump-based
//                ct.summarize() in the same process
//       mirror-events  ct.mirror() at its defaults keeping one live summary (by protocol and
//                dport, as `top --live` does; none with BENCH_NO_LIVE_SUMMARY=1), prints
//                {"ready":true}, then when stdin closes the events it took in, overflows, resyncs,
//                its size and the process's CPU time
//       events   subscribes to new-entry events with a receive buffer of CALLS bytes, prints
//                {"ready":true}, counts events until stdin closes, then prints what it got
//
// Prints one line of JSON. A missing or unloadable build prints {"unavailable": reason}.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
const distEntry = join(here, '..', 'dist', 'lib', 'index.js');
const [mode, netns, callsArg] = process.argv.slice(2);

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

/** Seconds a synchronous call takes. */
function secondsOf(call) {
  const start = process.hrtime.bigint();
  call();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

/** The middle value (the mean of the two middle ones for an even count). */
function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

function vm(field) {
  // VmRSS / VmHWM in bytes, from /proc/self/status.
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

if (!existsSync(distEntry)) {
  out({ unavailable: 'dist/lib/index.js not built (npm run build)' });
  process.exit(0);
}
let Conntrack;
try {
  ({ Conntrack } = await import(pathToFileURL(distEntry).href));
} catch (err) {
  out({ unavailable: `import dist/lib/index.js failed: ${err?.message ?? err}` });
  process.exit(0);
}
if (typeof Conntrack?.open !== 'function') {
  out({ unavailable: 'dist/lib/index.js has no Conntrack.open' });
  process.exit(0);
}

const t0 = process.hrtime.bigint();
const ct = await Conntrack.open({ netns });
const openSeconds = Number(process.hrtime.bigint() - t0) / 1e9;

async function closeHandle() {
  try {
    await ct.close?.();
  } catch {
    /* closing is not what is measured */
  }
}

if (mode === 'count') {
  const s = process.hrtime.bigint();
  const c = await ct.count();
  const seconds = Number(process.hrtime.bigint() - s) / 1e9;
  await closeHandle();
  out({ seconds, entries: c?.entries, max: c?.max, openSeconds });
} else if (mode === 'latency') {
  const calls = Number(callsArg ?? 100000);
  for (let i = 0; i < Math.min(1000, calls); i++) await ct.count();
  const s = process.hrtime.bigint();
  let last;
  for (let i = 0; i < calls; i++) last = await ct.count();
  const seconds = Number(process.hrtime.bigint() - s) / 1e9;
  await closeHandle();
  out({ seconds, calls, nsPerCall: (seconds * 1e9) / calls, entries: last?.entries, openSeconds });
} else if (mode === 'entries' || mode === 'ids' || mode === 'warm') {
  if (mode === 'warm') for await (const e of ct.entries()) void e;
  globalThis.gc?.();
  // Reset the peak-RSS mark so VmHWM measures this dump only (Linux >= 4.0).
  try {
    writeFileSync('/proc/self/clear_refs', '5');
  } catch {
    /* not fatal: hwmGrowth is then an upper bound */
  }
  const baseline = process.memoryUsage.rss();
  let peak = baseline;
  const sampler = setInterval(() => {
    const r = process.memoryUsage.rss();
    if (r > peak) peak = r;
  }, 50);
  const eld = monitorEventLoopDelay({ resolution: 1 });
  let n = 0;
  let sink = 0;
  eld.enable();
  const s = process.hrtime.bigint();
  if (mode === 'entries' || mode === 'warm') {
    for await (const e of ct.entries()) {
      n++;
      sink ^= e.original.dport ?? 0;
    }
  } else {
    for await (const e of ct.entries()) {
      n++;
      sink ^= e.id;
    }
  }
  const seconds = Number(process.hrtime.bigint() - s) / 1e9;
  eld.disable();
  clearInterval(sampler);
  const end = process.memoryUsage.rss();
  if (end > peak) peak = end;
  const hwm = vm('VmHWM');
  await closeHandle();
  const ms = (ns) => ns / 1e6;
  out({
    seconds,
    entries: n,
    sink,
    openSeconds,
    eventLoop: { p50: ms(eld.percentile(50)), p99: ms(eld.percentile(99)), max: ms(eld.max) },
    rssBaseline: baseline,
    rssGrowth: peak - baseline,
    hwmGrowth: hwm - baseline,
  });
} else if (mode === 'summary') {
  const s = process.hrtime.bigint();
  const summary = await ct.summarize(undefined, { by: ['protocol', 'dport'] });
  const seconds = Number(process.hrtime.bigint() - s) / 1e9;
  await closeHandle();
  out({ seconds, entries: summary.total, groups: summary.groups.length, openSeconds });
} else if (mode === 'mirror') {
  // Changes are made by a shell started now, while the heap is small: a process spawned later
  // would fork this one and leave every page it then writes to a copy-on-write fault, which
  // would be measured as the library's.
  const { spawn } = await import('node:child_process');
  const shell = spawn('bash', [], { stdio: ['pipe', 'pipe', 'inherit'] });
  let shellOut = '';
  let shellDone;
  shell.stdout.setEncoding('utf8').on('data', (d) => {
    shellOut += d;
    const end = /DONE (\d+)\n/.exec(shellOut);
    if (end) {
      shellOut = '';
      shellDone?.(Number(end[1]));
    }
  });
  const inShell = (command) => new Promise((resolve, reject) => {
    shellDone = (code) => (code === 0 ? resolve() : reject(new Error(`${command}: exit ${code}`)));
    shell.stdin.write(`${command} >/dev/null 2>&1; echo DONE $?\n`);
  });
  globalThis.gc?.();
  const rssBefore = vm('VmRSS');
  const s = process.hrtime.bigint();
  const mirror = await ct.mirror(undefined, { resyncInterval: 0 });
  const fillSeconds = Number(process.hrtime.bigint() - s) / 1e9;
  globalThis.gc?.();
  const rssGrowth = vm('VmRSS') - rssBefore;
  const entries = mirror.size;
  const nativeBytes = mirror.nativeBytes;
  const byPort = { by: ['protocol', 'dport'] };
  // The first call scans the mirror and keeps the grouping; the later ones answer from it.
  const firstSeconds = secondsOf(() => mirror.summarize(byPort));
  const calls = Number(callsArg ?? 5);
  let summary;
  const times = Array.from({ length: calls }, () => secondsOf(() => (summary = mirror.summarize(byPort))));
  const groups = summary.groups.length;
  // What `top --live` asks: the 10 largest groups, chosen natively.
  const topTimes = Array.from({ length: calls }, () => secondsOf(() => mirror.summarize({ ...byPort, top: 10 })));
  // Every group's count moved: benchmarks/fill tuples k * 64,512 .. (k + 1) * 64,512 - 1 take one
  // destination and every port once (k far above what the run's fills reach), then go.
  const changedTimes = [];
  const fill = join(here, 'bin', 'fill');
  const until = async (done) => {
    for (let waited = 0; !done(); waited += 10) {
      if (waited > 60_000) throw new Error(`the mirror did not follow the changes (size ${mirror.size})`);
      await sleep(10);
    }
  };
  for (let rep = 0; rep < 3; rep++) {
    const k = 50_000 + rep;
    const before = mirror.size;
    await inShell(`nsenter --net=${netns} ${fill} 64512 --start ${k * 64512} --jobs 1`);
    await until(() => mirror.size >= before + 64512);
    changedTimes.push(secondsOf(() => mirror.summarize(byPort)));
    await inShell(`nsenter --net=${netns} conntrack -D -p udp -d 127.${1 + (k >> 16)}.${(k >> 8) & 255}.${k & 255}`);
    await until(() => mirror.size <= before);
    changedTimes.push(secondsOf(() => mirror.summarize(byPort)));
  }
  shell.stdin.end();
  const t = process.hrtime.bigint();
  const dumped = await ct.summarize(undefined, byPort);
  const dumpSummarySeconds = Number(process.hrtime.bigint() - t) / 1e9;
  if (dumped.total !== summary.total) out({ warning: `mirror counted ${summary.total}, the dump ${dumped.total}` });
  mirror.close();
  await closeHandle();
  out({
    seconds: median(times), firstSeconds, groups, topSeconds: median(topTimes), changedSeconds: median(changedTimes), entries, fillSeconds, dumpSummarySeconds,
    nativeBytesPerEntry: nativeBytes / entries, rssGrowthPerEntry: rssGrowth / entries, openSeconds,
  });
} else if (mode === 'mirror-events') {
  const mirror = await ct.mirror(undefined, { resyncInterval: 0 });
  if (process.env.BENCH_NO_LIVE_SUMMARY !== '1') mirror.summarize({ by: ['protocol', 'dport'] });
  const cpuBefore = process.cpuUsage();
  out({ ready: true });
  process.stdin.resume();
  await new Promise((resolve) => process.stdin.once('end', resolve));
  const cpu = process.cpuUsage(cpuBefore);
  const counters = mirror.counters();
  const result = { received: counters.events, overflows: counters.overflows, resyncs: mirror.resyncs, size: mirror.size,
    cpuSeconds: (cpu.user + cpu.system) / 1e6, openSeconds };
  mirror.close();
  await closeHandle();
  out(result);
} else if (mode === 'events') {
  const stop = new AbortController();
  const events = ct.events(undefined, { types: ['new'], receiveBufferBytes: Number(callsArg), signal: stop.signal });
  let received = 0;
  let overflowNotices = 0;
  let first;
  let last;
  const consumed = (async () => {
    try {
      for await (const event of events) {
        if (event.type === 'overflow') {
          overflowNotices++;
          continue;
        }
        received++;
        last = process.hrtime.bigint();
        first ??= last;
      }
    } catch (err) {
      if (err?.name !== 'AbortError') throw err;
    }
  })();
  // The subscription is made on a native thread within a millisecond; leave it ample time.
  await sleep(300);
  out({ ready: true });
  process.stdin.resume();
  await new Promise((resolve) => process.stdin.once('end', resolve));
  stop.abort();
  await consumed;
  const counters = events.counters();
  await closeHandle();
  const seconds = first === undefined ? 0 : Number(last - first) / 1e9;
  out({ received, overflowNotices, overflows: counters.overflows, seconds, openSeconds });
} else {
  out({ error: `unknown mode ${mode}` });
  process.exit(2);
}
