/**
 * Kernel messages recorded into test/fixtures/kernel by the record-*-fixtures scripts (rawdump
 * --save): each datagram as [u32 LE length][bytes].
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export const KERNEL_FIXTURES = join(import.meta.dirname, '..', 'fixtures', 'kernel');

/** The datagrams of one capture file, in order. */
export function readCapture(name: string): Buffer[] {
  const data = readFileSync(join(KERNEL_FIXTURES, name));
  const out: Buffer[] = [];
  for (let offset = 0; offset + 4 <= data.length;) {
    const length = data.readUInt32LE(offset);
    out.push(data.subarray(offset + 4, offset + 4 + length));
    offset += 4 + length;
  }
  return out;
}
