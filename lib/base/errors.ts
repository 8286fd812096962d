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
