/**
 * The errors a process at its limits gets: the addon's errors for a thread that cannot start, for
 * descriptors and memory run out, and for a lost namespace descriptor, as ConntrackErrors.
 */
import { describe, expect, it } from 'vitest';
import { ConntrackError, resourceError } from '../../../lib/base/errors.js';
import { toConntrackError } from '../../../lib/table/conntrack.js';

/** An error as native/addon.cc toJsError makes it. */
function nativeError(syscall: string, errno: number | undefined, message = `${syscall}: failed`): Error {
  return Object.assign(new Error(message), errno === undefined ? { syscall } : { syscall, errno });
}

describe('resourceError', () => {
  it('a thread that cannot start (EAGAIN) names the limits that cause it', () => {
    const err = resourceError(nativeError('create thread', 11));
    expect(err).toBeInstanceOf(ConntrackError);
    expect(err).toMatchObject({ code: 'ERR_CONNTRACK_RESOURCE', errno: 11, syscall: 'create thread' });
    expect(err?.message).toContain('EAGAIN');
    expect(err?.message).toContain('pids.max');
  });

  it('descriptors: EMFILE points at ulimit -n, ENFILE at fs.file-max; Node-style negative errnos too', () => {
    expect(resourceError(nativeError('dup netns', 24))?.message).toContain('ulimit -n');
    expect(resourceError(nativeError('eventfd', 23))?.message).toContain('fs.file-max');
    expect(resourceError(Object.assign(new Error('EMFILE'), { errno: -24, code: 'EMFILE', syscall: 'open' }))).toMatchObject({ code: 'ERR_CONNTRACK_RESOURCE', errno: 24 });
  });

  it("memory: ENOMEM from this process and node-addon-api's bad_alloc, but not the kernel's ENOMEM to a ctnetlink request", () => {
    expect(resourceError(nativeError('dump decoder', 12))).toMatchObject({ code: 'ERR_CONNTRACK_RESOURCE', errno: 12 });
    expect(resourceError(new Error('std::bad_alloc'))).toMatchObject({ code: 'ERR_CONNTRACK_RESOURCE', errno: undefined });
    // A full table refuses create() with ENOMEM: that is the kernel's table, not this process.
    expect(resourceError(nativeError('ctnetlink request', 12))).toBeUndefined();
    expect(resourceError(nativeError('ctnetlink dump', 1))).toBeUndefined();
  });
});

describe('toConntrackError at the limits', () => {
  it('maps resource errors first, whatever call failed', () => {
    expect(toConntrackError(nativeError('open netns', 24), '/run/netns/x')).toMatchObject({ code: 'ERR_CONNTRACK_RESOURCE', syscall: 'open netns' });
    expect(toConntrackError(nativeError('create thread', 11), undefined)).toMatchObject({ code: 'ERR_CONNTRACK_RESOURCE' });
  });

  it("a namespace descriptor that cannot be copied is ERR_CONNTRACK_NETNS, not a read of another table", () => {
    const err = toConntrackError(nativeError('dup netns', 9, 'dup netns: Bad file descriptor'), '/run/netns/x');
    expect(err).toMatchObject({ code: 'ERR_CONNTRACK_NETNS', errno: 9, syscall: 'dup netns' });
    expect(err.message).toContain('/run/netns/x');
    expect(err.message).toContain('open a new handle');
  });
});
