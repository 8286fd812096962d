export { Conntrack, type DumpCounters, type EntryIterator } from './table/conntrack.js';
export { Mirror, type MirrorChange, type MirrorLagged, type MirrorOptions, type MirrorResync } from './table/mirror.js';
export type { TextChunk, TextLayout } from './table/text.js';
export { ConntrackError, type ConntrackErrorCode } from './base/errors.js';
export { STATUS_FLAGS, TCP_STATES, SCTP_STATES, DCCP_STATES, PROTOCOL_NUMBERS } from './table/records.js';
export {
  readSysctl, readAllSysctls, writeSysctl, describeSysctl, KNOWN_SYSCTLS,
  type SysctlDescription, type SysctlOptions,
} from './tuning/sysctl.js';
export {
  kernelDefaults, memoryCost, recommend, readSlabObjectSize, DEFAULT_OBJECT_SIZE,
} from './tuning/sizing.js';
export { renderPersistence, applyPersistence, detectConntrackLinkage } from './tuning/persist.js';
export {
  diagnose, evaluate, worstSeverity, USAGE_WARNING, USAGE_CRITICAL,
  type Diagnosis, type DiagnosisFacts, type DiagnoseOptions, type Finding, type Fix, type Severity, type EntryBreakdown,
} from './doctor/diagnose.js';
export { readKernelLog, tableFullEvents, type KernelLogRecord, type TableFullEvent } from './doctor/kmsg.js';
export { findConntrackDependents, type ConntrackDependents, type RuleMatch } from './doctor/dependents.js';
export {
  collectMetrics, renderMetrics, renderFamilies, metricFamilies, sampleNamespace, failedNamespace, readBucketCount, escapeLabelValue,
  METRICS_CONTENT_TYPE,
  type MetricsSnapshot, type NamespaceSample, type NamespaceReading, type NamespaceFailure, type RenderOptions, type MetricFamily,
} from './metrics/metrics.js';
export {
  createExporter, createMetricsCollector, DEFAULT_EXPORTER_HOST, DEFAULT_EXPORTER_PORT,
  type Exporter, type ExporterOptions, type MetricsCollector, type CollectorOptions,
} from './metrics/exporter.js';
export { DEFAULT_MAX_NAMESPACES, DEFAULT_FORGET_AFTER_SECONDS } from './metrics/collector.js';
export { discoverNamespaces, type DiscoveredNamespace, type Discovery } from './metrics/discovery.js';
export { parseBreakdownKey, computeBreakdown, type Breakdown, type BreakdownKey } from './metrics/breakdown.js';
export { timeToFull, GrowthTracker } from './metrics/growth.js';
export { loadWebConfig, type WebConfig } from './metrics/web-config.js';
export { verifyBcrypt } from './metrics/bcrypt.js';
export { registerConntrackMetrics, type PromClientCollector, type PromClientRegistry } from './metrics/prom-client.js';
export type * from './base/types.js';
export {
  SUMMARY_KEYS, type Summary, type SummaryGroup, type SummaryGroupKey, type SummaryKey, type SummarizeOptions,
} from './table/summary.js';
