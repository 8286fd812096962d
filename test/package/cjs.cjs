// The CommonJS consumer: require() of the package (an ES module), which Node 20.19+ and 22.12+
// load synchronously when the module graph has no top-level await, as this package's does.
'use strict';
const assert = require('node:assert/strict');
const { Conntrack, ConntrackError, memoryCost } = require('conntrack');

async function main() {
  const [netns] = process.argv.slice(2);
  const ct = await Conntrack.open({ netns });
  try {
    assert.equal((await ct.count()).entries, 1);
    const summary = await ct.summarize(undefined, { by: ['protocol'] });
    assert.equal(summary.total, 1);
  } finally {
    await ct.close();
  }
  await assert.rejects(Conntrack.open({ netns: '/nonexistent' }), (err) => err instanceof ConntrackError && err.code === 'ERR_CONNTRACK_NETNS');
  assert.ok(memoryCost({ max: 262144, buckets: 65536 }).totalBytes > 0);
  console.log('cjs consumer: require() works; count() and summarize() answered');
}
main().catch((err) => {
  console.error(err);
  process.exit(1);
});
