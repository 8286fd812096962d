/**
 * Vitest global setup of the integration project: compiles lib/ into dist/ once per run, always.
 * The CLI, exporter, watch, leak and privilege tests run the built JavaScript as users do; a dist/
 * left from an older checkout would make them test that instead of the code beside them.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('../..', import.meta.url));

export default async function buildDist(): Promise<void> {
  const tsc = fileURLToPath(new URL('../../node_modules/typescript/bin/tsc', import.meta.url));
  await new Promise<void>((resolve, reject) => {
    execFile(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { cwd: REPO, timeout: 300_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`building dist/ (tsc -p tsconfig.build.json) failed: ${`${stdout}${stderr}`.trim() || err.message}`));
      else resolve();
    });
  });
}
