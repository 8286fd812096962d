// The installed package where no prebuild matches (run with LIBC=musl, as on Alpine): the addon's
// absence is ERR_CONNTRACK_NATIVE with the way out, and what needs no addon still works.
import assert from 'node:assert/strict';
import { Conntrack, evaluate, kernelDefaults, renderMetrics, renderPersistence } from 'conntrack';

await assert.rejects(Conntrack.open(), (err) => {
  assert.equal(err.code, 'ERR_CONNTRACK_NATIVE');
  assert.match(err.message, /missing for linux-\w+ \(musl\)/);
  assert.match(err.message, /prebuilds\/linux-\w+\/conntrack\.napi\.musl\.node/);
  assert.match(err.message, /apk add build-base python3 linux-headers/);
  return true;
});
assert.ok(kernelDefaults({ kernelRelease: '5.15.0', memoryBytes: 2 ** 32 }).buckets > 0);
assert.match(renderPersistence({ max: 65536 })[0].content, /nf_conntrack_max = 65536/);
assert.match(
  renderMetrics({ buckets: 64, namespaces: [{ netns: '', up: true, entries: 3, max: 100, counters: {}, unknownCounters: {} }] }),
  /conntrack_entries\{netns=""\} 3/,
);
const facts = {
  netns: null, netnsInode: 1, netnsSince: undefined, initialNetns: true, source: 'procfs',
  time: new Date(), intervalMs: 1000, kernelRelease: '6.1.0', memoryBytes: 2 ** 33, linkage: 'module',
  before: { count: { entries: 99, max: 100 }, stats: {} }, after: { count: { entries: 100, max: 100 }, stats: {} },
  buckets: 64, objectSize: 256, tcpTimeoutEstablished: 432000, tcpTimeoutTimeWait: 120,
  kernelLog: { readable: true, events: [] }, breakdown: undefined, breakdownSkipped: 'not asked',
  dependents: { rules: [], rulesUnknown: [], containerInterfaces: [], interfaces: ['lo'] }, expectedConnections: undefined,
};
assert.equal(evaluate(facts).severity, 'critical');
console.log('no-addon consumer: ERR_CONNTRACK_NATIVE, and sizing, persistence, evaluate() and metrics work');
