/**
 * Prometheus's own checks (Debian's `prometheus` package brings promtool): every exposition a
 * test produces goes through `promtool check metrics`, which parses it as Prometheus does and
 * lints names, types and help.
 */
import { run } from './netns.js';
import { requireTool } from './tools.js';

/** Resolves when promtool accepts `text`; rejects with promtool's complaints otherwise. */
export async function expectPromtoolAccepts(text: string): Promise<void> {
  try {
    await run(requireTool('promtool'), ['check', 'metrics'], { input: text });
  } catch (err) {
    throw new Error(`promtool check metrics refused the exposition: ${(err as Error).message}`, { cause: err });
  }
}
