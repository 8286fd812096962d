// Runs the library at the edge of a process's resources and reports what each operation did, for
// test/integration/table/limits.test.ts. Prints one JSON line; every outcome is
// { ok: true, value? } or { code, syscall, errno, message }.
//
//   node limits-child.mjs DIST_INDEX NETNS_PATH threads CGROUP_DIR
//     Moves this process into the pids cgroup CGROUP_DIR, allows 0 then 1 more task than it has,
//     and tries a dump, a subscription, open() and a namespace file read each time; then lifts the
//     limit and does it all again.
//   node limits-child.mjs DIST_INDEX NETNS_PATH descriptors
//     Opens files until the descriptor limit (run it under a small `ulimit -n`), then starts a dump
//     with 0, 1 and 2 descriptors free; then frees them and dumps again.
//   node limits-child.mjs DIST_INDEX NETNS_PATH lost-netns-fd
//     Closes the handle's namespace descriptor behind its back, then starts a dump and a subscription.
import { closeSync, fstatSync, openSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';

const [dist, netns, mode, cgroup] = process.argv.slice(2);
const { Conntrack, readSysctl } = await import(dist);

const fds = () => readdirSync('/proc/self/fd').length;
const threads = () => readdirSync('/proc/self/task').length;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function outcome(action) {
  try {
    const value = await action();
    return { ok: true, ...(value === undefined ? {} : { value }) };
  } catch (err) {
    return { code: err.code, syscall: err.syscall, errno: err.errno, message: err.message };
  }
}

async function dump(ct) {
  let entries = 0;
  for await (const entry of ct.entries()) if (entry.id !== undefined) entries++;
  return entries;
}

/** The first read of a subscription: refused at once, or quiet (subscribed) for 100 ms. */
async function subscribe(ct) {
  const events = ct.events();
  const first = events.next();
  const quiet = await Promise.race([first.then(() => false), sleep(100).then(() => true)]);
  await events.return();
  await first.catch(() => undefined);
  if (!quiet) await first;
}

async function everything(ct) {
  return {
    dump: await outcome(() => dump(ct)),
    events: await outcome(() => subscribe(ct)),
    open: await outcome(async () => (await Conntrack.open({ netns })).close()),
    sysctl: await outcome(() => readSysctl('nf_conntrack_udp_timeout', { netns })),
    count: await outcome(async () => (await ct.count()).entries),
  };
}

const ct = await Conntrack.open({ netns });
// Warm up: the addon, libuv's pool and every kind of thread the library starts have run once.
const warm = await everything(ct);
await sleep(50);
const before = { fds: fds(), threads: threads() };
const report = { warm, before };

if (mode === 'threads') {
  writeFileSync(`${cgroup}/cgroup.procs`, String(process.pid));
  const current = () => Number(readFileSync(`${cgroup}/pids.current`, 'utf8'));
  for (const headroom of [0, 1]) {
    writeFileSync(`${cgroup}/pids.max`, String(current() + headroom));
    report[`headroom${headroom}`] = await everything(ct);
  }
  writeFileSync(`${cgroup}/pids.max`, 'max');
  report.lifted = await everything(ct);
} else if (mode === 'descriptors') {
  const fillers = [];
  for (;;) {
    try {
      fillers.push(openSync('/dev/null', 'r'));
    } catch (err) {
      if (err.code !== 'EMFILE') throw err;
      break;
    }
  }
  for (const free of [0, 1, 2]) {
    for (let i = 0; i < free; i++) closeSync(fillers.pop());
    report[`free${free}`] = { dump: await outcome(() => dump(ct)), events: await outcome(() => subscribe(ct)) };
    for (let i = 0; i < free; i++) fillers.push(openSync('/dev/null', 'r'));
  }
  for (const fd of fillers) closeSync(fd);
  report.freed = await everything(ct);
} else if (mode === 'lost-netns-fd') {
  // The handle's own descriptor of the namespace: the one that names the namespace's inode.
  const { dev, ino } = statSync(netns);
  const nsFd = readdirSync('/proc/self/fd').map(Number).find((fd) => {
    try {
      const stat = fstatSync(fd);
      return stat.dev === dev && stat.ino === ino;
    } catch {
      return false; // the listing's own descriptor, closed by now
    }
  });
  if (nsFd === undefined) throw new Error('the handle holds no descriptor of the namespace');
  closeSync(nsFd);
  report.lost = { dump: await outcome(() => dump(ct)), events: await outcome(() => subscribe(ct)), count: await outcome(async () => (await ct.count()).entries) };
} else {
  throw new Error(`unknown mode ${mode}`);
}

await ct.close();
await sleep(50);
report.after = { fds: fds(), threads: threads() };
process.stdout.write(`${JSON.stringify(report)}\n`);
