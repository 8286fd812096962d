// Types of global-limits-lock.mjs (plain JavaScript, so the benchmark can load it too).

export declare const GLOBAL_LIMITS_LOCK: string;
export declare const MAX_PATH: string;

export type GlobalLimitsMode = 'shared' | 'exclusive';

export interface GlobalLimitsLock {
  readonly mode: GlobalLimitsMode;
  /** nf_conntrack_max now. */
  readMax(): number;
  /** Exclusive only: sets nf_conntrack_max, recording the original in the lock first. */
  setMax(value: number): void;
  /** Exclusive only: raises nf_conntrack_max to at least `value`; returns the limit in force. */
  ensureMax(value: number): number;
  /** Restores what setMax() changed and lets go (synchronous). Idempotent. */
  release(): void;
}

export interface GlobalLimitsOptions {
  /** How long to wait for other holders (default 600,000 ms). */
  timeoutMs?: number;
  /** The lock file (default GLOBAL_LIMITS_LOCK). */
  path?: string;
  /** The limit's file (default MAX_PATH); tests of the lock itself use a scratch file. */
  maxPath?: string;
  /** Where recoveries are reported (default stderr). */
  log?: (line: string) => void;
}

export declare function readMax(path?: string): number;
export declare function acquireGlobalLimits(mode: GlobalLimitsMode, options?: GlobalLimitsOptions): Promise<GlobalLimitsLock>;
export declare function withGlobalLimits<T>(mode: GlobalLimitsMode, fn: (lock: GlobalLimitsLock) => Promise<T>, options?: GlobalLimitsOptions): Promise<T>;
