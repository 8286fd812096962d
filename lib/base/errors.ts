/**
 * Every error this library throws is a ConntrackError with a stable `code`
 * and a message that says what to do about it.
 */

export type ConntrackErrorCode =
  /** The operation needs a capability the process lacks; `capability` names it. */
  | 'ERR_CONNTRACK_PERMISSION'
  /** The kernel has no conntrack (or no ctnetlink) in this namespace. */
  | 'ERR_CONNTRACK_UNAVAILABLE'
  /** The network namespace given does not exist or is not a network namespace. */
  | 'ERR_CONNTRACK_NETNS'
  /** A filter given to entries()/stream()/list is invalid. */
  | 'ERR_CONNTRACK_INVALID_FILTER'
  /** Any other bad argument (option out of range, wrong type). */
  | 'ERR_CONNTRACK_INVALID_ARGUMENT'
  /** An unknown sysctl name, or a value the setting does not accept. */
  | 'ERR_CONNTRACK_SYSCTL'
  /** The handle was closed. */
  | 'ERR_CONNTRACK_CLOSED'
  /** The kernel sent a message this library cannot frame (truncated, misaligned, wrong size). */
  | 'ERR_CONNTRACK_PROTOCOL'
  /**
   * The native addon is missing for this platform or does not load here; the message names the
   * platform, the file, and the remedies (a platform with prebuilds, or a compiler).
   */
  | 'ERR_CONNTRACK_NATIVE'
  /** Any other error from the kernel; `errno` and `syscall` say which. */
  | 'ERR_CONNTRACK_KERNEL'
  /** The exporter could not listen on the address given (in use, not local, no permission). */
  | 'ERR_CONNTRACK_LISTEN'
  /** create(): an entry with this tuple exists already. */
  | 'ERR_CONNTRACK_EXISTS'
  /** The process ran out of threads, file descriptors or memory; `errno` and `syscall` say which. */
  | 'ERR_CONNTRACK_RESOURCE'
  /** A bulk change's item named an entry (or an expectation's master) that does not exist. */
  | 'ERR_CONNTRACK_NOT_FOUND';

export interface ConntrackErrorDetails {
  errno?: number;
  syscall?: string;
  capability?: 'CAP_NET_ADMIN' | 'CAP_SYS_ADMIN';
  cause?: unknown;
}

export class ConntrackError extends Error {
  override readonly name = 'ConntrackError';
  readonly code: ConntrackErrorCode;
  readonly errno: number | undefined;
  readonly syscall: string | undefined;
  readonly capability: 'CAP_NET_ADMIN' | 'CAP_SYS_ADMIN' | undefined;

  constructor(code: ConntrackErrorCode, message: string, details: ConntrackErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.code = code;
    this.errno = details.errno;
    this.syscall = details.syscall;
    this.capability = details.capability;
  }
}

/**
 * The error for a process that ran out of threads, file descriptors or memory, or undefined when
 * `err` (an error from the addon or from Node) is something else. The addon reports a thread it
 * could not start as syscall 'create thread' (EAGAIN: a pids limit), a failed allocation as
 * ENOMEM; node-addon-api names an allocation failure it converts itself 'std::bad_alloc'.
 */
export function resourceError(err: unknown, details: ConntrackErrorDetails = {}): ConntrackError | undefined {
  const e = (err ?? {}) as { errno?: unknown; syscall?: unknown; message?: unknown };
  const errno = typeof e.errno === 'number' ? Math.abs(e.errno) : undefined;
  const syscall = typeof e.syscall === 'string' ? e.syscall : '';
  const withCause = { errno, syscall: syscall || undefined, ...details, cause: err };
  if (syscall === 'create thread') {
    return new ConntrackError('ERR_CONNTRACK_RESOURCE', `cannot start a thread (${errno === 11 ? 'EAGAIN' : `errno ${errno}`}): this process is at its limit of threads (a cgroup's pids.max, ulimit -u or kernel.threads-max)`, withCause);
  }
  if (errno === 24 /* EMFILE */ || errno === 23 /* ENFILE */) {
    const limit = errno === 24 ? 'this process has as many open files as ulimit -n allows' : 'the system has as many open files as fs.file-max allows';
    return new ConntrackError('ERR_CONNTRACK_RESOURCE', `out of file descriptors${syscall ? ` (${syscall})` : ''}: ${limit}`, withCause);
  }
  // The kernel's own ENOMEM to a ctnetlink request (a full table refuses create()) is not this process's.
  if ((errno === 12 /* ENOMEM */ && !syscall.startsWith('ctnetlink')) || (errno === undefined && e.message === 'std::bad_alloc')) {
    return new ConntrackError('ERR_CONNTRACK_RESOURCE', `out of memory${syscall ? ` (${syscall})` : ''}: this process could not allocate what the operation needs`, withCause);
  }
  return undefined;
}

export function invalidArgument(message: string): ConntrackError {
  return new ConntrackError('ERR_CONNTRACK_INVALID_ARGUMENT', message);
}

export function invalidFilter(message: string): ConntrackError {
  return new ConntrackError('ERR_CONNTRACK_INVALID_FILTER', `invalid filter: ${message}`);
}

export function closedError(): ConntrackError {
  return new ConntrackError('ERR_CONNTRACK_CLOSED', 'the conntrack handle is closed');
}

/** The error an aborted iteration rejects with, as Node's own APIs do. */
export function abortError(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  const err = new Error('The operation was aborted', { cause: reason }) as Error & { code: string };
  err.name = 'AbortError';
  err.code = 'ABORT_ERR';
  return err;
}
