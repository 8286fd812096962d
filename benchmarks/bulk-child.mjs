// One bulk-change measurement in a fresh process; run by benchmarks/bulk.mjs, not meant to be used alone.
//
//   node benchmarks/bulk-child.mjs MODE NETNS_PATH [N]
//
// MODE: fill          createMany() of N UDP entries (mark 7), untimed set-up for the delete rows
//       fill-other    createMany() of N TCP entries (mark 0) that no delete row selects
//       delete-proto  deleteMatching({ protocol: 'udp' }): the native scan and pipelined deletes
//       delete-mark   deleteMatching({ mark: 7 }): one filtered kernel flush where the kernel can
//       create-many   createMany() of N UDP entries
//       create-loop   await create() of N UDP entries, one after the other
//
// Times only the operation (process start, open and set-up excluded) and prints one line of JSON:
// { seconds, result }.
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
const { Conntrack } = await import(pathToFileURL(join(here, '..', 'dist', 'lib', 'index.js')).href);
const [mode, netns, nArg] = process.argv.slice(2);
const n = Number(nArg ?? 0);

/** N distinct UDP tuples in 198.18.0.0/15 (RFC 2544's benchmarking range). */
function* udpEntries(count, mark, firstSource = 0) {
  for (let i = 0; i < count; i++) {
    const s = firstSource + Math.floor(i / 60000);
    yield {
      original: { protocol: 'udp', src: `198.18.${s >> 8}.${s & 255}`, dst: '198.19.0.1', sport: 1024 + (i % 60000), dport: 53 },
      timeout: 3600,
      mark,
    };
  }
}

function* tcpEntries(count) {
  for (let i = 0; i < count; i++) {
    yield {
      original: { protocol: 'tcp', src: `198.19.${1 + Math.floor(i / 60000)}.1`, dst: '198.19.0.2', sport: 1024 + (i % 60000), dport: 443 },
      timeout: 3600,
      tcpState: 'ESTABLISHED',
    };
  }
}

async function timed(fn) {
  const start = process.hrtime.bigint();
  const result = await fn();
  return { seconds: Number(process.hrtime.bigint() - start) / 1e9, result };
}

const ct = await Conntrack.open({ netns });
try {
  let out;
  switch (mode) {
    case 'fill':
      out = await timed(() => ct.createMany(udpEntries(n, 7)));
      break;
    case 'fill-other':
      out = await timed(() => ct.createMany(tcpEntries(n)));
      break;
    case 'delete-proto':
      out = await timed(() => ct.deleteMatching({ protocol: 'udp' }));
      break;
    case 'delete-mark':
      out = await timed(() => ct.deleteMatching({ mark: 7 }));
      break;
    case 'create-many':
      out = await timed(() => ct.createMany(udpEntries(n, 0, 1000), process.env.BULK_BATCH ? { batchSize: Number(process.env.BULK_BATCH) } : {}));
      break;
    case 'create-loop':
      out = await timed(async () => {
        for (const entry of udpEntries(n, 0, 2000)) await ct.create(entry);
        return { succeeded: n };
      });
      break;
    default:
      throw new Error(`unknown mode ${mode}`);
  }
  const { failures, ...rest } = out.result ?? {};
  process.stdout.write(`${JSON.stringify({ seconds: out.seconds, result: { ...rest, firstFailure: failures?.[0]?.message } })}\n`);
} finally {
  await ct.close();
}
