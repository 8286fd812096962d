export { Conntrack, type DumpCounters, type EntryIterator } from './conntrack.js';
export { ConntrackError, type ConntrackErrorCode } from './errors.js';
export { STATUS_FLAGS, TCP_STATES, SCTP_STATES, DCCP_STATES, PROTOCOL_NUMBERS } from './records.js';
export type * from './types.js';
