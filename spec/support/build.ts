import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';

/**
 * Set by global setup when `tsc -p tsconfig.build.json` failed: the CLI specs, which run the built
 * binary, fail with this message; the other specs still run.
 */
export const BUILD_ERROR_VARIABLE = 'CELLS_TEST_BUILD_ERROR';

/**
 * Compiles lib/ (and entities, migrations, examples) to dist/ once, so the CLI specs run the
 * binary a user runs, dist/lib/cli/main.js. A failure is printed and recorded in
 * `CELLS_TEST_BUILD_ERROR` rather than thrown, so it fails only the specs that need dist/.
 */
export async function buildDist(): Promise<void> {
  const root = join(__dirname, '..', '..');
  const tsc = require.resolve('typescript/bin/tsc', { paths: [root] });
  try {
    await promisify(execFile)(process.execPath, [tsc, '-p', 'tsconfig.build.json'], {
      cwd: root,
      maxBuffer: 16 << 20,
    });
    delete process.env[BUILD_ERROR_VARIABLE];
  } catch (error) {
    const output = (error as { stdout?: string }).stdout?.trim() || (error as Error).message;
    const message = `'tsc -p tsconfig.build.json' failed, so dist/ (the CLI binary) may be stale:\n${output}`;
    process.stderr.write(`\n[global-setup] ${message}\n`);
    process.env[BUILD_ERROR_VARIABLE] = message;
  }
}
