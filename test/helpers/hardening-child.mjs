// Native details a test reads from outside the process, for test/integration/table/hardening.test.ts.
//
//   node hardening-child.mjs BINDING_MODULE NETNS_PATH nice
//     An event subscription's decoder thread (named ct-decode once its priority is set): prints
//     { process, decoder }, the nice values of the main thread and of the decoder.
//   node --expose-gc --trace-gc-verbose hardening-child.mjs BINDING_MODULE NETNS_PATH external
//     A dump started and closed, with a full GC before, during and after: V8's "External memory
//     reported" lines show what the binding reported meanwhile.
import { readdirSync, readFileSync } from 'node:fs';

const [bindingModule, netns, mode] = process.argv.slice(2);
const { binding } = await import(bindingModule);
const handle = await binding().open(netns);

/** Field 19 of /proc/self/task/TID/stat (fields counted after the command name's parenthesis). */
function niceOf(tid) {
  const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
}

function threadNamed(name) {
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      if (readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim() === name) return tid;
    } catch {
      // the thread ended meanwhile
    }
  }
  return undefined;
}

if (mode === 'nice') {
  const events = handle.startEvents(null, 16, 1, 1 << 20);
  let decoder;
  for (let i = 0; i < 500 && (decoder = threadNamed('ct-decode')) === undefined; i++) await new Promise((resolve) => setTimeout(resolve, 10));
  console.log(JSON.stringify({ process: niceOf(process.pid), decoder: decoder === undefined ? null : niceOf(decoder) }));
  events.close();
} else if (mode === 'external') {
  globalThis.gc();
  const dump = handle.startDump(null, 1024);
  globalThis.gc();
  dump.close();
  globalThis.gc();
  // The dump object is still reachable here: what was reported went back at close(), not at its collection.
  globalThis.keep = dump;
} else {
  throw new Error(`unknown mode ${mode}`);
}
handle.close();
