// Terminates worker threads that use the library at every moment of every operation, then reports
// whether the descriptors and threads of this process came back to their count before the first
// worker. Started by test/integration/table/workers.test.ts in a child process: an abort fails the
// test instead of ending vitest. Prints one JSON line.
//
//   node worker-child.mjs DIST_INDEX NETNS_PATH ROUNDS OP[,OP...]
import { readdirSync, readlinkSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';

const [dist, netns, roundsText, opsText] = process.argv.slice(2);
const rounds = Number(roundsText);
const ops = opsText.split(',');
const DELAYS_MS = [0, 1, 5, 50];
const OP_SCRIPT = new URL('./worker-op.mjs', import.meta.url);

const fds = () => readdirSync('/proc/self/fd').length;
/** What each descriptor is, to name the ones left over. */
function descriptors() {
  const targets = new Map();
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      targets.set(fd, readlinkSync(`/proc/self/fd/${fd}`));
    } catch {
      // the listing's own descriptor, closed by now
    }
  }
  return targets;
}
const threads = () => readdirSync('/proc/self/task').length;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Before the first worker: the addon loaded and libuv's pool started, here in the main thread, and
// one worker that does not use the library (Node keeps a /dev/null descriptor after the first).
const { Conntrack } = await import(dist);
await (await Conntrack.open({ netns })).close();
await readFile('/proc/self/status');
const plain = new Worker(new URL(`data:text/javascript,${encodeURIComponent("import { parentPort } from 'node:worker_threads'; parentPort.postMessage('ready');")}`));
await once(plain, 'message');
await plain.terminate();
const before = { fds: fds(), threads: threads() };
const descriptorsBefore = descriptors();

const failures = [];
/** 'fd target' -> the operation and delay after whose worker it was first seen. */
const openedBy = new Map();
let workers = 0;
for (let round = 0; round < rounds; round++) {
  for (const op of ops) {
    for (const delay of DELAYS_MS) {
      const worker = new Worker(OP_SCRIPT, { workerData: { dist, netns, op, index: workers++ } });
      const failed = once(worker, 'error').then(([err]) => {
        failures.push({ op, delay, message: String(err?.stack ?? err) });
      });
      // 'ready': the operation's loop has begun; an error first means it never did.
      await Promise.race([once(worker, 'message'), failed]);
      if (delay > 0) await sleep(delay);
      await worker.terminate();
      // Name the operation that left a descriptor behind (rare races need the culprit named).
      for (const [fd, target] of descriptors()) {
        if (descriptorsBefore.get(fd) !== target && !openedBy.has(`${fd} ${target}`)) openedBy.set(`${fd} ${target}`, `${op} after ${delay} ms`);
      }
    }
  }
}

// Terminated workers' threads are joined before terminate() resolves; give stragglers a moment.
let after = { fds: fds(), threads: threads() };
for (let i = 0; i < 100 && (after.fds > before.fds || after.threads > before.threads); i++) {
  await sleep(50);
  after = { fds: fds(), threads: threads() };
}
const leftOver = [...descriptors()].filter(([fd, target]) => descriptorsBefore.get(fd) !== target).map(([fd, target]) => `${fd} ${target} (first seen after ${openedBy.get(`${fd} ${target}`) ?? 'the last worker'})`);
process.stdout.write(`${JSON.stringify({ before, after, leftOver, workers, failures })}\n`);
