/**
 * Netlink sockets this process holds, for tests that check handles and dumps give theirs back.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import type { Netns } from './netns.js';

/** Inodes of the netlink sockets listed in a /proc/net/netlink text. */
export function netlinkInodes(text: string): Set<string> {
  const inodes = new Set<string>();
  for (const line of text.split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    const inode = fields[fields.length - 1];
    if (fields.length >= 10 && inode !== undefined) inodes.add(inode);
  }
  return inodes;
}

/** Netlink sockets this process holds, in its own namespace or in `ns`. */
export async function netlinkSockets(ns: Netns): Promise<number> {
  const inodes = new Set([
    ...netlinkInodes(readFileSync('/proc/self/net/netlink', 'utf8')),
    ...netlinkInodes((await ns.exec('cat', ['/proc/net/netlink'])).stdout),
  ]);
  let count = 0;
  for (const fd of readdirSync('/proc/self/fd')) {
    let target: string;
    try {
      target = readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      continue; // closed meanwhile
    }
    const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
    if (inode !== undefined && inodes.has(inode)) count++;
  }
  return count;
}
