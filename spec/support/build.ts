import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../../dev/repo-root';

/**
 * Set by global setup when `tsc -p tsconfig.build.json` failed: the CLI specs, which run the built
 * binary, fail with this message; the other specs still run.
 */
export const BUILD_ERROR_VARIABLE = 'CELLS_TEST_BUILD_ERROR';

/**
 * Compiles lib/ (and entities, migrations, examples) to dist/ with `tsc -p tsconfig.build.json`, so
 * the CLI specs and benchmarks run the binary a user runs, dist/lib/cli/main.js.
 * @throws Error with tsc's output when the build fails.
 */
export async function compileDist(): Promise<void> {
  const tsc = require.resolve('typescript/bin/tsc', { paths: [REPO_ROOT] });
  try {
    await promisify(execFile)(process.execPath, [tsc, '-p', 'tsconfig.build.json'], {
      cwd: REPO_ROOT,
      maxBuffer: 16 << 20,
    });
  } catch (error) {
    const output = (error as { stdout?: string }).stdout?.trim() || (error as Error).message;
    throw new Error(
      `'tsc -p tsconfig.build.json' failed, so dist/ (the CLI binary) may be stale:\n${output}`,
      { cause: error },
    );
  }
}

/**
 * `compileDist()` once for the test run. A failure is printed and recorded in
 * `CELLS_TEST_BUILD_ERROR` rather than thrown, so it fails only the specs that need dist/.
 */
export async function buildDist(): Promise<void> {
  try {
    await compileDist();
    delete process.env[BUILD_ERROR_VARIABLE];
  } catch (error) {
    const message = (error as Error).message;
    process.stderr.write(`\n[global-setup] ${message}\n`);
    process.env[BUILD_ERROR_VARIABLE] = message;
  }
}
