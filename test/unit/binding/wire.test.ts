/**
 * The end of a dump as the kernel words a failure: NLMSG_DONE carrying a negative errno and, with
 * NETLINK_EXT_ACK (which every socket of ours sets), the reason as an NLMSGERR_ATTR_MSG attribute
 * after it (netlink_dump_done()). The reason reaches the error, as an NLMSG_ERROR's does.
 */
import { describe, expect, it } from 'vitest';
import { binding } from '../../../lib/binding/native.js';

const NLMSG_DONE = 3;
const NLM_F_MULTI = 0x2;
const NLM_F_ACK_TLVS = 0x200;
const NLMSGERR_ATTR_MSG = 1;

function done(code: number, text?: string): Uint8Array {
  const parts: Buffer[] = [];
  const codeBytes = Buffer.alloc(4);
  codeBytes.writeInt32LE(code);
  parts.push(codeBytes);
  if (text !== undefined) {
    const payload = Buffer.from(`${text}\0`);
    const header = Buffer.alloc(4);
    header.writeUInt16LE(4 + payload.length, 0);
    header.writeUInt16LE(NLMSGERR_ATTR_MSG, 2);
    parts.push(header, payload, Buffer.alloc((4 - (payload.length % 4)) % 4));
  }
  const body = Buffer.concat(parts);
  const header = Buffer.alloc(16);
  header.writeUInt32LE(16 + body.length, 0);
  header.writeUInt16LE(NLMSG_DONE, 4);
  header.writeUInt16LE(NLM_F_MULTI | (text === undefined ? 0 : NLM_F_ACK_TLVS), 6);
  return new Uint8Array(Buffer.concat([header, body]));
}

function thrown(run: () => unknown): Record<string, unknown> {
  try {
    run();
  } catch (err) {
    return err as Record<string, unknown>;
  }
  throw new Error('nothing was thrown');
}

describe('NLMSG_DONE with an error', () => {
  it('keeps the kernel\'s text', () => {
    const err = thrown(() => binding().decode(done(-22, 'CTA_FILTER: unsupported attribute'), null));
    expect(err).toMatchObject({ errno: 22, syscall: 'ctnetlink dump', detail: 'CTA_FILTER: unsupported attribute' });
    expect(String(err.message)).toContain('(CTA_FILTER: unsupported attribute)');
  });

  it('without text is the errno alone; a clean end is no error', () => {
    const err = thrown(() => binding().decode(done(-4), null));
    expect(err).toMatchObject({ errno: 4, syscall: 'ctnetlink dump' });
    expect(err.detail).toBeUndefined();
    expect(binding().decode(done(0), null).count).toBe(0);
  });

  it('a malformed attribute after the code loses the text, not the error', () => {
    const bytes = done(-22, 'x');
    new DataView(bytes.buffer).setUint16(20, 200, true); // the attribute's length runs past the message
    expect(thrown(() => binding().decode(bytes, null))).toMatchObject({ errno: 22, syscall: 'ctnetlink dump' });
  });
});
