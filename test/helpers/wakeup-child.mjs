// A dump of an empty table whose end is read 300 ms after it started, for
// test/integration/table/wakeup.test.ts: gdb holds the dump's decoder thread at its last wake-up
// call meanwhile. Prints 'read: END' when the read settles and 'alive' 1 s later.
//
//   node wakeup-child.mjs BINDING_MODULE NETNS_PATH
const [bindingModule, netns] = process.argv.slice(2);
const { binding } = await import(bindingModule);
const handle = await binding().open(netns);
const dump = handle.startDump(null, 1024);
await new Promise((resolve) => setTimeout(resolve, 300));
console.log(`read: ${JSON.stringify(await dump.read())}`);
// The event loop runs on, so a released wake-up function is freed meanwhile.
await new Promise((resolve) => setTimeout(resolve, 1000));
console.log('alive');
handle.close();
