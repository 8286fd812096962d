/**
 * toConntrackError(): how the addon's errors become ConntrackErrors a person can act on. The
 * protocol and kernel errors are real ones, raised by the native decoder on damaged and NLMSG_ERROR
 * messages; the others have the shape native/addon.cc toJsError() gives every system-call failure
 * ({ message, errno, syscall, detail? }) with the operation names the native layers use.
 */
import { describe, expect, it } from 'vitest';
import { binding, type NativeError } from '../../../lib/binding/native.js';
import { ConntrackError } from '../../../lib/base/errors.js';
import { toConntrackError } from '../../../lib/table/conntrack.js';

const NETNS = '/run/netns/example';

/** What the native decoder throws for `datagram`. */
function nativeErrorOf(datagram: Buffer): NativeError {
  try {
    binding().decode(datagram, null);
  } catch (err) {
    return err as NativeError;
  }
  throw new Error('the decoder accepted the datagram');
}

/** An NLMSG_ERROR message carrying -errno, as the kernel answers a refused request. */
function nlmsgError(errno: number): Buffer {
  const message = Buffer.alloc(36);
  message.writeUInt32LE(36, 0);
  message.writeUInt16LE(2, 4); // NLMSG_ERROR
  message.writeInt32LE(-errno, 16);
  return message;
}

/** An error shaped as toJsError() makes it for a failed system call or request. */
function sysError(syscall: string, errno: number, message = `${syscall}: errno ${errno}`): NativeError {
  return Object.assign(new Error(message), { errno, syscall });
}

describe('toConntrackError', () => {
  it('a message the decoder cannot frame is ERR_CONNTRACK_PROTOCOL, with the decoder\'s words', () => {
    const cause = nativeErrorOf(Buffer.from([1, 2, 3]));
    expect(cause.protocol).toBe(true);
    const err = toConntrackError(cause, NETNS);
    expect(err).toBeInstanceOf(ConntrackError);
    expect(err.code).toBe('ERR_CONNTRACK_PROTOCOL');
    expect(err.message).toMatch(/^the kernel sent a message this library cannot decode: .*stray bytes/);
    expect(err.errno).toBeUndefined();
    expect(err.cause).toBe(cause);
  });

  it('a refusal the kernel gives no meaning to here is ERR_CONNTRACK_KERNEL with errno and operation', () => {
    const cause = nativeErrorOf(nlmsgError(22)); // EINVAL
    expect(cause.protocol).toBeUndefined();
    const err = toConntrackError(cause, NETNS);
    expect(err).toMatchObject({ code: 'ERR_CONNTRACK_KERNEL', errno: 22, syscall: cause.syscall });
    expect(err.message).toBe(`conntrack request failed in network namespace ${NETNS}: ${cause.message}`);
    expect(toConntrackError(cause, undefined).message).toContain('in this network namespace');
  });

  it('EPERM from ctnetlink is ERR_CONNTRACK_PERMISSION naming CAP_NET_ADMIN', () => {
    const err = toConntrackError(nativeErrorOf(nlmsgError(1)), NETNS);
    expect(err).toMatchObject({ code: 'ERR_CONNTRACK_PERMISSION', capability: 'CAP_NET_ADMIN', errno: 1 });
    expect(err.message).toContain('CAP_NET_ADMIN');
  });

  it('EOPNOTSUPP or ENOENT from ctnetlink is ERR_CONNTRACK_UNAVAILABLE (no conntrack, or no ctnetlink, there)', () => {
    for (const errno of [95, 2]) {
      const err = toConntrackError(nativeErrorOf(nlmsgError(errno)), NETNS);
      expect(err, `errno ${errno}`).toMatchObject({ code: 'ERR_CONNTRACK_UNAVAILABLE', errno });
      expect(err.message).toContain(`conntrack is not available in network namespace ${NETNS}`);
    }
  });

  it('a kernel without netfilter netlink sockets is ERR_CONNTRACK_UNAVAILABLE', () => {
    for (const errno of [93, 97]) { // EPROTONOSUPPORT, EAFNOSUPPORT
      const err = toConntrackError(sysError('socket(NETLINK_NETFILTER)', errno), undefined);
      expect(err, `errno ${errno}`).toMatchObject({ code: 'ERR_CONNTRACK_UNAVAILABLE', errno });
      expect(err.message).toContain('CONFIG_NETFILTER_NETLINK');
    }
  });

  it('events: EPERM is a permission error, ENOENT / EOPNOTSUPP unavailable events', () => {
    expect(toConntrackError(sysError('subscribe to conntrack events', 1), NETNS))
      .toMatchObject({ code: 'ERR_CONNTRACK_PERMISSION', capability: 'CAP_NET_ADMIN' });
    for (const errno of [2, 95]) {
      const err = toConntrackError(sysError('subscribe to conntrack events', errno), NETNS);
      expect(err).toMatchObject({ code: 'ERR_CONNTRACK_UNAVAILABLE', errno });
      expect(err.message).toContain('CONFIG_NF_CONNTRACK_EVENTS');
    }
  });

  it('namespaces: missing is ERR_CONNTRACK_NETNS, not ours to open or enter is a permission error', () => {
    expect(toConntrackError(sysError('open netns', 2), NETNS)).toMatchObject({ code: 'ERR_CONNTRACK_NETNS', message: `network namespace ${NETNS} does not exist` });
    expect(toConntrackError(sysError('open netns', 13), NETNS)).toMatchObject({ code: 'ERR_CONNTRACK_PERMISSION', capability: 'CAP_SYS_ADMIN' });
    expect(toConntrackError(sysError('open netns', 22, 'open netns: Invalid argument'), NETNS).code).toBe('ERR_CONNTRACK_NETNS');
    expect(toConntrackError(sysError('setns', 1), NETNS)).toMatchObject({ code: 'ERR_CONNTRACK_PERMISSION', capability: 'CAP_SYS_ADMIN' });
  });

  it('other failures of the same operations stay ERR_CONNTRACK_KERNEL, with errno, syscall and cause', () => {
    for (const [syscall, errno] of [['ctnetlink dump', 105], ['socket(NETLINK_NETFILTER)', 22], ['poll', 4], ['subscribe to conntrack events', 22]] as const) {
      const cause = sysError(syscall, errno);
      expect(toConntrackError(cause, NETNS), syscall).toMatchObject({ code: 'ERR_CONNTRACK_KERNEL', errno, syscall, cause });
    }
  });

  it('keeps a ConntrackError as it is, and wraps anything else', () => {
    const already = new ConntrackError('ERR_CONNTRACK_CLOSED', 'closed');
    expect(toConntrackError(already, NETNS)).toBe(already);
    expect(toConntrackError('a string', undefined)).toMatchObject({ code: 'ERR_CONNTRACK_KERNEL', message: 'conntrack request failed in this network namespace: a string' });
  });
});
