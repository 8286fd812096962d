/**
 * The kernel log, read from /dev/kmsg: the place where a full conntrack table leaves its only
 * trace ("nf_conntrack: table full, dropping packet"). Each read() of /dev/kmsg returns one record
 * `PRI,SEQ,USEC,FLAGS[,...];MESSAGE`, where USEC is the kernel's clock since boot.
 */
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';

import { ConntrackError } from '../base/errors.js';

export const KMSG_PATH = '/dev/kmsg';

export interface KernelLogRecord {
  /** Syslog priority (0 emergency .. 7 debug). */
  level: number;
  facility: number;
  sequence: number;
  /** Kernel clock at the time of the message, microseconds since boot. */
  bootTimeUs: number;
  /** Wall-clock time, from bootTimeUs and this process's monotonic clock (approximate). */
  time: Date;
  message: string;
}

/** A "table full" line: the kernel drops the packet that would have created an entry. */
export interface TableFullEvent {
  time: Date;
  sequence: number;
  /**
   * The network namespace's inode number, which kernels since 5.x print ("table full in netns N");
   * undefined on kernels that do not name the namespace.
   */
  netnsInode: number | undefined;
  message: string;
}

export type KernelLogResult =
  | { readable: true; records: KernelLogRecord[] }
  | { readable: false; reason: string; code: string | undefined };

/** Microseconds of CLOCK_MONOTONIC now; /dev/kmsg stamps use the same clock on the same boot. */
function monotonicNowUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

/** Parses one /dev/kmsg record; undefined for text that is not one. */
export function parseKmsgRecord(text: string, nowUs = monotonicNowUs(), nowMs = Date.now()): KernelLogRecord | undefined {
  const semicolon = text.indexOf(';');
  if (semicolon < 0) return undefined;
  const fields = text.slice(0, semicolon).split(',');
  if (fields.length < 3) return undefined;
  const [priText, seqText, usecText] = fields as [string, string, string];
  if (!/^\d+$/.test(priText) || !/^\d+$/.test(seqText) || !/^\d+$/.test(usecText)) return undefined;
  const pri = Number(priText);
  const bootTimeUs = Number(usecText);
  // Continuation lines (" KEY=value" dictionary) follow the message after a newline.
  const newline = text.indexOf('\n', semicolon + 1);
  const message = text.slice(semicolon + 1, newline < 0 ? undefined : newline);
  return {
    level: pri & 7,
    facility: pri >> 3,
    sequence: Number(seqText),
    bootTimeUs,
    time: new Date(nowMs - (nowUs - bootTimeUs) / 1000),
    message,
  };
}

const TABLE_FULL = /table full(?: in netns (\d+))?, dropping packet/;

/** The "table full, dropping packet" records among `records`. */
export function tableFullEvents(records: readonly KernelLogRecord[]): TableFullEvent[] {
  const events: TableFullEvent[] = [];
  for (const record of records) {
    const match = TABLE_FULL.exec(record.message);
    if (match === null) continue;
    events.push({
      time: record.time,
      sequence: record.sequence,
      netnsInode: match[1] === undefined ? undefined : Number(match[1]),
      message: record.message,
    });
  }
  return events;
}

export interface ReadKernelLogOptions {
  path?: string;
  /** Keep only records whose message matches (the rest is read and dropped). */
  match?: RegExp;
  signal?: AbortSignal;
}

/**
 * Reads every record the kernel's log buffer still holds, without waiting for new ones.
 * Reading needs CAP_SYSLOG when kernel.dmesg_restrict is 1; that is reported, not thrown.
 */
export async function readKernelLog(options: ReadKernelLogOptions = {}): Promise<KernelLogResult> {
  const path = options.path ?? KMSG_PATH;
  let handle;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const reason = code === 'EPERM' || code === 'EACCES'
      ? `reading ${path} needs CAP_SYSLOG (kernel.dmesg_restrict is on); run as root`
      : `cannot read ${path}: ${(err as Error).message}`;
    return { readable: false, reason, code };
  }
  const records: KernelLogRecord[] = [];
  // One record per read; the kernel caps a record well below this.
  const buffer = Buffer.alloc(16 * 1024);
  const nowUs = monotonicNowUs();
  const nowMs = Date.now();
  try {
    for (;;) {
      if (options.signal?.aborted) throw options.signal.reason;
      let bytesRead: number;
      try {
        ({ bytesRead } = await handle.read(buffer, 0, buffer.length, null));
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EAGAIN') break; // no more records
        if (code === 'EPIPE') continue; // records were overwritten while reading: go on with the next
        throw new ConntrackError('ERR_CONNTRACK_KERNEL', `reading ${path}: ${(err as Error).message}`, { cause: err });
      }
      if (bytesRead === 0) break;
      const text = buffer.toString('utf8', 0, bytesRead);
      if (options.match !== undefined && !options.match.test(text)) continue;
      const record = parseKmsgRecord(text, nowUs, nowMs);
      if (record !== undefined) records.push(record);
    }
  } finally {
    await handle.close();
  }
  return { readable: true, records };
}
