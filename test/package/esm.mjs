// The ES module consumer: the installed package, from a project of its own, in a namespace that
// scripts/check-package.sh filled with one entry through conntrack-tools (the oracle).
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import { Conntrack, kernelDefaults, renderPersistence } from 'conntrack';

const [netns, expected, kind] = process.argv.slice(2);
const { src, dst, dport } = JSON.parse(expected);

// Which binary node-gyp-build picks for this package: the prebuild, or a build from source.
const require = createRequire(import.meta.url);
const addonFile = require('node-gyp-build').resolve(dirname(require.resolve('conntrack/package.json')));
const pattern = kind === 'source' ? /\/build\/Release\/conntrack\.node$/ : /\/prebuilds\/linux-x64\/conntrack\.napi\.glibc\.node$/;
assert.match(addonFile, pattern);

const ct = await Conntrack.open({ netns });
try {
  const count = await ct.count();
  assert.equal(count.entries, 1, `count() in ${netns}`);
  assert.ok(count.max > 0);
  const entries = [];
  for await (const entry of ct.entries()) entries.push(entry);
  assert.equal(entries.length, 1);
  assert.deepEqual(
    { src: entries[0].original.src, dst: entries[0].original.dst, dport: entries[0].original.dport },
    { src, dst, dport },
  );
} finally {
  await ct.close();
}
assert.ok(kernelDefaults({ kernelRelease: '6.1.0', memoryBytes: 2 ** 33 }).max > 0);
assert.ok(renderPersistence({ max: 131072 }).length > 0);
console.log(`esm consumer: count() and entries() answered through ${addonFile}`);
