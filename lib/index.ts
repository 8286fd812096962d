export { Conntrack, type DumpCounters, type EntryIterator } from './conntrack.js';
export { ConntrackError, type ConntrackErrorCode } from './errors.js';
export { STATUS_FLAGS, TCP_STATES, SCTP_STATES, DCCP_STATES, PROTOCOL_NUMBERS } from './records.js';
export {
  readSysctl, readAllSysctls, writeSysctl, describeSysctl, KNOWN_SYSCTLS,
  type SysctlDescription, type SysctlOptions,
} from './sysctl.js';
export {
  kernelDefaults, memoryCost, recommend, readSlabObjectSize, DEFAULT_OBJECT_SIZE,
} from './sizing.js';
export { renderPersistence, applyPersistence, detectConntrackLinkage } from './persist.js';
export type * from './types.js';
