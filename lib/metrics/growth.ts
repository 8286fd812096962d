/**
 * Time until a table is full, from its recent growth: a least-squares line through the counts of
 * the last few minutes, extended to the limit. A single burst does not make an estimate: it needs
 * counts spread over MIN_SPAN_SECONDS at least. Not growing is +Inf (never full at this rate).
 */
export const DEFAULT_GROWTH_WINDOW_SECONDS = 300;
/** Fewer seconds of history than this give no estimate: two counts a moment apart are noise. */
export const MIN_SPAN_SECONDS = 5;
/** Samples kept; older ones are thinned out first. */
const MAX_SAMPLES = 120;

export interface CountSample {
  /** Seconds on a monotonic clock. */
  at: number;
  entries: number;
}

/** Seconds until `max` at the growth rate of `samples` (oldest first); undefined when there is too little history. */
export function timeToFull(samples: readonly CountSample[], max: number): number | undefined {
  if (max <= 0 || samples.length < 2) return undefined;
  const first = samples[0] as CountSample;
  const last = samples[samples.length - 1] as CountSample;
  if (last.at - first.at < MIN_SPAN_SECONDS) return undefined;
  if (last.entries >= max) return 0;
  let sumT = 0;
  let sumE = 0;
  for (const s of samples) {
    sumT += s.at - first.at;
    sumE += s.entries;
  }
  const meanT = sumT / samples.length;
  const meanE = sumE / samples.length;
  let covariance = 0;
  let variance = 0;
  for (const s of samples) {
    const dt = s.at - first.at - meanT;
    covariance += dt * (s.entries - meanE);
    variance += dt * dt;
  }
  const perSecond = covariance / variance;
  if (!(perSecond > 0)) return Infinity;
  return (max - last.entries) / perSecond;
}

/** The counts of one table over a sliding window. */
export class GrowthTracker {
  readonly #window: number;
  #samples: CountSample[] = [];

  constructor(windowSeconds = DEFAULT_GROWTH_WINDOW_SECONDS) {
    this.#window = windowSeconds;
  }

  add(at: number, entries: number): void {
    const samples = this.#samples;
    if (samples.length > 0 && at <= (samples[samples.length - 1] as CountSample).at) return;
    samples.push({ at, entries });
    let drop = 0;
    while (drop < samples.length - 1 && at - (samples[drop] as CountSample).at > this.#window) drop++;
    if (drop > 0) samples.splice(0, drop);
    // Frequent scrapes: keep every other sample of the older half rather than an unbounded list.
    if (samples.length > MAX_SAMPLES) this.#samples = samples.filter((_, i) => i >= MAX_SAMPLES / 2 || i % 2 === 0);
  }

  timeToFull(max: number): number | undefined {
    return timeToFull(this.#samples, max);
  }

  get samples(): readonly CountSample[] {
    return this.#samples;
  }
}
