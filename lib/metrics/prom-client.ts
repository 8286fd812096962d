/**
 * For applications that already serve a prom-client registry: the conntrack metrics as metrics of
 * that registry, collected when the registry is asked (`register.metrics()`), one collection per
 * request however many families it reads. prom-client is an optional peer dependency: nothing here
 * imports it; the registry is taken as it is handed over.
 */
import { invalidArgument } from '../base/errors.js';
import { createMetricsCollector, type CollectorOptions, type MetricsCollector } from './collector.js';
import type { MetricFamily } from './metrics.js';

/** What this needs of a prom-client Registry. */
export interface PromClientRegistry {
  registerMetric(metric: never): void;
  removeSingleMetric(name: string): void;
  getSingleMetric(name: string): unknown;
}

/** The shape prom-client reads from a metric's get(). */
interface PromClientMetricValue {
  name: string;
  help: string;
  type: 'gauge' | 'counter';
  values: Array<{ labels: Record<string, string>; value: number }>;
  aggregator: 'first';
}

export interface PromClientCollector extends MetricsCollector {
  /** The metric names registered. */
  readonly names: readonly string[];
}

/**
 * Registers every conntrack family in `registry` (failing, with nothing registered, if one of the
 * names is taken) and returns the collector behind them. close() removes them again and closes
 * the handles.
 */
export async function registerConntrackMetrics(registry: PromClientRegistry, options: CollectorOptions = {}): Promise<PromClientCollector> {
  if (registry === null || typeof registry !== 'object' || typeof registry.registerMetric !== 'function' ||
      typeof registry.removeSingleMetric !== 'function' || typeof registry.getSingleMetric !== 'function') {
    throw invalidArgument('registry must be a prom-client Registry (register, or new Registry())');
  }
  const collector = await createMetricsCollector(options);
  const catalog = collector.familyCatalog();
  const taken = catalog.find((family) => registry.getSingleMetric(family.name) !== undefined);
  if (taken !== undefined) {
    await collector.close();
    throw invalidArgument(`the registry already has a metric named ${taken.name}`);
  }
  // Every family's get() of one registry.metrics() call starts in the same tick: they share
  // the collector's running collection.
  const valuesOf = async (name: string): Promise<MetricFamily | undefined> => (await collector.collectFamilies()).find((f) => f.name === name);
  for (const family of catalog) {
    const metric = {
      name: family.name,
      help: family.help,
      type: family.type,
      aggregator: 'first' as const, // every cluster worker would report the same table
      async get(): Promise<PromClientMetricValue> {
        const current = await valuesOf(family.name);
        return {
          name: family.name,
          help: family.help,
          type: family.type,
          aggregator: 'first',
          values: (current?.samples ?? []).map((s) => ({ labels: Object.fromEntries(s.labels), value: s.value })),
        };
      },
      reset(): void {
        // Values come from the kernel; there is nothing to reset.
      },
    };
    registry.registerMetric(metric as never);
  }
  const names = catalog.map((f) => f.name);
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      for (const name of names) registry.removeSingleMetric(name);
      await collector.close();
    })();
    return closing;
  };
  return { ...collector, names, close, [Symbol.asyncDispose]: close };
}
