// Run by an arm64 Node under qemu-user: the arm64 prebuild loads and answers. qemu's user mode
// may refuse netfilter netlink sockets, so open() either works or fails with a coded kernel-side
// error, never with ERR_CONNTRACK_NATIVE.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { Conntrack, ConntrackError, kernelDefaults } from 'conntrack';

assert.equal(process.arch, 'arm64');
const require = createRequire(import.meta.url);
const gypBuild = require('node-gyp-build');
const file = gypBuild.resolve(process.argv[2]);
assert.match(file, /prebuilds\/linux-arm64\/conntrack\.napi\.glibc\.node$/);
const addon = require(file);
assert.ok(Object.keys(addon.layout).length > 0, 'the addon answers');
assert.ok(kernelDefaults({ kernelRelease: '6.1.0', memoryBytes: 2 ** 33, pageSize: 65536 }).max > 0);
let outcome;
try {
  const ct = await Conntrack.open();
  outcome = `open() worked, ${(await ct.count()).entries} entries`;
  await ct.close();
} catch (err) {
  assert.ok(err instanceof ConntrackError, String(err));
  assert.notEqual(err.code, 'ERR_CONNTRACK_NATIVE', err.message);
  outcome = `open() failed with ${err.code} (${err.message})`;
}
console.log(`arm64 under qemu: ${file} loaded; ${outcome}`);
