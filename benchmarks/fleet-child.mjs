// The fleet scenario's measurements in a fresh process; run by benchmarks/fleet.mjs, not alone.
//
//   node --expose-gc benchmarks/fleet-child.mjs '{"paths":[...], "breakdownBy":"dport", "scrapes":200, "reps":3, "rawdump":"bin/rawdump", "port":9791}'
//
// With an exporter serving the given namespaces (breakdown by `breakdownBy`, on its own timer set
// far away so that only the measured refreshes run):
//   scrape    collect() timed, `scrapes` times in a row (the scrape path: counts and statistics of
//             every namespace, rendering; no dump)
//   http      the same over HTTP, from another process (keep-alive GETs, as Prometheus scrapes)
//   refresh   refreshBreakdowns(): one summarize() per namespace, one after the other, against
//             the dumps of the same namespaces, one after the other: bin/rawdump (the floor) and
//             the library's batches() counting entries; interleaved, `reps` times
//   rss       the process's RSS after start, after the breakdowns, while serving
//   all       a collector with netns 'all' (discovery on every scrape), collect() timed
// Prints one line of JSON.
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const lib = await import(pathToFileURL(join(here, '..', 'dist', 'lib', 'index.js')).href);
const opts = JSON.parse(process.argv[2]);
const seconds = (from) => Number(process.hrtime.bigint() - from) / 1e9;
const mib = (bytes) => bytes / 1048576;
const vm = (field) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? NaN) * 1024;
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const percentile = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))];

globalThis.gc?.();
const rssStart = process.memoryUsage.rss();
const exporter = await lib.createExporter({
  netns: opts.paths, host: '127.0.0.1', port: opts.port, breakdownBy: opts.breakdownBy, breakdownTop: 10, breakdownIntervalSeconds: 86_400,
});
await exporter.refreshBreakdowns(); // the first one starts with the exporter: wait for it
globalThis.gc?.();
const rssServing = process.memoryUsage.rss();

// The scrape path, in process.
const first = await exporter.collect();
const entries = [...first.matchAll(/^conntrack_entries\{netns="[^"]+"\} (\d+)$/gm)].map((m) => Number(m[1]));
const scrapeTimes = [];
for (let i = 0; i < opts.scrapes; i++) {
  const t = process.hrtime.bigint();
  await exporter.collect();
  scrapeTimes.push(seconds(t));
}
const reported = Number(/^conntrack_scrape_duration_seconds (\S+)$/m.exec(await exporter.collect())?.[1]);

// Over HTTP from another process, as Prometheus would scrape.
const CLIENT = `
const [url, n] = process.argv.slice(1);
(async () => {
  const times = [];
  for (let i = 0; i < Number(n); i++) {
    const t = process.hrtime.bigint();
    const r = await fetch(url);
    await r.text();
    times.push(Number(process.hrtime.bigint() - t) / 1e9);
  }
  process.stdout.write(JSON.stringify(times));
})();`;
const httpTimes = await new Promise((resolve, reject) => {
  const child = spawn(process.execPath, ['-e', CLIENT, `http://127.0.0.1:${opts.port}/metrics`, String(opts.scrapes)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.on('close', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`http client exit ${code}`))));
});
const rssAfterScrapes = process.memoryUsage.rss();

// Breakdown refresh against dumps of the same namespaces, interleaved.
const floorDump = () => {
  const t = process.hrtime.bigint();
  let total = 0;
  for (const path of opts.paths) total += JSON.parse(execFileSync(opts.rawdump, ['--netns', path], { encoding: 'utf8' }).trim().split('\n').pop()).messages;
  return { seconds: seconds(t), total };
};
const handles = await Promise.all(opts.paths.map((netns) => lib.Conntrack.open({ netns })));
const libraryDump = async () => {
  const t = process.hrtime.bigint();
  let total = 0;
  for (const ct of handles) for await (const batch of ct.batches()) total += batch.length;
  return { seconds: seconds(t), total };
};
const refresh = async () => {
  const t = process.hrtime.bigint();
  await exporter.refreshBreakdowns();
  return { seconds: seconds(t) };
};
const reps = [];
for (let rep = 0; rep < opts.reps; rep++) {
  const floorBefore = floorDump();
  const dump = await libraryDump();
  const r = await refresh();
  const floorAfter = floorDump();
  const floor = (floorBefore.seconds + floorAfter.seconds) / 2;
  reps.push({ floor, floorTotal: floorBefore.total, library: dump.seconds, libraryTotal: dump.total, refresh: r.seconds,
    refreshOverFloor: r.seconds / floor, refreshOverLibrary: r.seconds / dump.seconds });
}
await Promise.all(handles.map((ct) => ct.close()));
const groups = [...(await exporter.collect()).matchAll(/^conntrack_top_entries\{netns="([^"]+)",key="[^"]+",group="([^"]+)"\} (\d+)$/gm)];
const top = groups.filter((m) => m[1] === opts.paths[0]).map((m) => [m[2], Number(m[3])]);
const rssAfterRefresh = process.memoryUsage.rss();
const hwm = vm('VmHWM');
await exporter.close();

// Every namespace of the host, discovered on each scrape.
const all = await lib.createMetricsCollector({ netns: 'all', breakdownBy: false });
const allText = await all.collect();
const allTimes = [];
for (let i = 0; i < opts.scrapes; i++) {
  const t = process.hrtime.bigint();
  await all.collect();
  allTimes.push(seconds(t));
}
await all.close();

const stats = (xs) => ({ median: median(xs), p95: percentile(xs, 95), max: Math.max(...xs) });
process.stdout.write(`${JSON.stringify({
  namespaces: opts.paths.length,
  entries,
  scrape: stats(scrapeTimes),
  scrapeReported: reported,
  http: stats(httpTimes),
  refresh: {
    reps,
    floor: median(reps.map((r) => r.floor)),
    library: median(reps.map((r) => r.library)),
    refresh: median(reps.map((r) => r.refresh)),
    overFloor: median(reps.map((r) => r.refreshOverFloor)),
    overLibrary: median(reps.map((r) => r.refreshOverLibrary)),
  },
  breakdownBy: opts.breakdownBy,
  topOfFirstNamespace: top,
  topSeriesPerNamespace: groups.length / opts.paths.length,
  rss: { start: mib(rssStart), serving: mib(rssServing), afterScrapes: mib(rssAfterScrapes), afterRefreshes: mib(rssAfterRefresh), peak: mib(hwm) },
  all: { found: Number(/^conntrack_namespaces_found (\d+)$/m.exec(allText)?.[1]), scrape: stats(allTimes) },
})}\n`);
