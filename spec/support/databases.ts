import { randomBytes } from 'node:crypto';
import { Client, escapeIdentifier, escapeLiteral, type QueryResultRow } from 'pg';

const SERVER_URL_VARIABLE = 'CELLS_TEST_DATABASE_URL';
const MAX_IDENTIFIER_LENGTH = 63;

/** A database created for one test file; `drop()` removes it even while clients are connected. */
export interface TestDatabase {
  /** The database name, a safe lowercase identifier. */
  name: string;
  /** Connection URL for the database, with the server's credentials. */
  url: string;
  /** Terminates every connection to the database and drops it; safe to call twice. */
  drop(): Promise<void>;
}

/**
 * The URL of the PostgreSQL server the tests run against, from `CELLS_TEST_DATABASE_URL`
 * (set by global setup, or by the caller to use an existing server).
 *
 * @throws Error when the variable is unset, e.g. when a spec runs outside Jest's global setup.
 */
export function testServerUrl(): string {
  const url = process.env[SERVER_URL_VARIABLE];
  if (!url) {
    throw new Error(
      `${SERVER_URL_VARIABLE} is not set. Run the tests through Jest (its global setup starts an ` +
        `embedded PostgreSQL) or set it to a server URL such as postgres://postgres@127.0.0.1:5432/postgres.`,
    );
  }
  return url;
}

/**
 * The test server's URL with its database replaced by `name`.
 *
 * @param name - database name, used as is.
 */
export function testDatabaseUrl(name: string): string {
  const url = new URL(testServerUrl());
  url.pathname = `/${encodeURIComponent(name)}`;
  return url.toString();
}

/**
 * Returns `url` with its password replaced. On the embedded server only roles made by
 * {@link createRole} accept a password you choose; for sentinel-password tests, use the URL
 * `createRole` returns.
 *
 * @param url - any PostgreSQL URL.
 * @param password - the new password, percent-encoded as needed.
 */
export function withPassword(url: string, password: string): string {
  const parsed = new URL(url);
  parsed.password = encodeURIComponent(password);
  return parsed.toString();
}

/**
 * Opens a plain pg `Client` to `url`, runs one statement, closes the client and returns the rows.
 *
 * @param url - connection URL of the database to query.
 * @param sql - one SQL statement, with `$1`-style placeholders for `params`.
 * @param params - placeholder values; defaults to none.
 * @throws the pg error of a failed connect or query; connect errors name the host and database.
 */
export async function rowsIn<Row extends QueryResultRow = QueryResultRow>(
  url: string,
  sql: string,
  params: readonly unknown[] = [],
): Promise<Row[]> {
  const client = new Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
  // An idle client whose backend is terminated emits 'error'; unhandled, that kills the worker.
  client.on('error', () => undefined);
  try {
    await client.connect();
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new Error(`Could not connect to ${redacted(url)}: ${reason}`, { cause: error });
  }
  try {
    const result = await client.query<Row>(sql, params as unknown[]);
    return result.rows;
  } finally {
    await client.end();
  }
}

/**
 * Runs one statement on the test server's `postgres` database and returns the rows.
 *
 * @param sql - one SQL statement, with `$1`-style placeholders for `params`.
 * @param params - placeholder values; defaults to none.
 */
export function adminQuery<Row extends QueryResultRow = QueryResultRow>(
  sql: string,
  params: readonly unknown[] = [],
): Promise<Row[]> {
  return rowsIn<Row>(testDatabaseUrl('postgres'), sql, params);
}

/**
 * Creates an empty database with a unique name, `cells_<label>_<pid>_<random>`.
 *
 * @param label - names the test that owns the database; lowercased, other characters become `_`.
 */
export async function createTestDatabase(label: string): Promise<TestDatabase> {
  const name = uniqueName(label);
  // template0 is never connected to, so parallel workers never see "source database is being accessed".
  await adminQuery(`CREATE DATABASE ${escapeIdentifier(name)} TEMPLATE template0`);
  return { name, url: testDatabaseUrl(name), drop: () => dropDatabase(name) };
}

/**
 * Creates `count` databases in parallel, as {@link createTestDatabase} does.
 *
 * @param label - shared by all the names.
 * @param count - how many databases.
 */
export function createTestDatabases(label: string, count: number): Promise<TestDatabase[]> {
  return Promise.all(Array.from({ length: count }, () => createTestDatabase(label)));
}

/**
 * Creates a login superuser role with `password`, or resets the password if the role exists,
 * and returns the server URL that logs in as it.
 *
 * @param name - role name, used as is (quoted).
 * @param password - the role's password.
 */
export async function createRole(name: string, password: string): Promise<string> {
  const options = `LOGIN SUPERUSER PASSWORD ${escapeLiteral(password)}`;
  try {
    await adminQuery(`CREATE ROLE ${escapeIdentifier(name)} ${options}`);
  } catch (error) {
    // 42710: the role exists; 23505: another worker created it at the same moment.
    const code = (error as { code?: unknown }).code;
    if (code !== '42710' && code !== '23505') throw error;
    await adminQuery(`ALTER ROLE ${escapeIdentifier(name)} ${options}`);
  }
  const url = new URL(testServerUrl());
  url.username = encodeURIComponent(name);
  return withPassword(url.toString(), password);
}

/**
 * A `connectionUrl` rewrite (createCellWorld's, createExampleApp's): the same database as each URL
 * it gets, logged in as the role of `roleUrl` (a URL {@link createRole} returned) with `password`.
 */
export function asRole(roleUrl: string, password: string): (url: string) => string {
  const { username } = new URL(roleUrl);
  return (url) => {
    const u = new URL(url);
    u.username = username;
    u.password = password;
    return u.toString();
  };
}

/**
 * Number of server connections to database `name`, not counting the one asking.
 *
 * @param name - database name.
 */
export async function countConnections(name: string): Promise<number> {
  const [row] = await adminQuery<{ count: number }>(
    'SELECT count(*)::int AS count FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()',
    [name],
  );
  return row?.count ?? 0;
}

async function dropDatabase(name: string): Promise<void> {
  await adminQuery(
    'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()',
    [name],
  );
  // FORCE also ends connections a pool opened between the terminate and the drop.
  await adminQuery(`DROP DATABASE IF EXISTS ${escapeIdentifier(name)} WITH (FORCE)`);
}

function uniqueName(label: string): string {
  const suffix = `_${process.pid}_${randomBytes(4).toString('hex')}`;
  const room = MAX_IDENTIFIER_LENGTH - 'cells_'.length - suffix.length;
  const safeLabel = label
    .toLowerCase()
    .replace(/[^a-z0-9_]+/g, '_')
    .slice(0, room);
  return `cells_${safeLabel}${suffix}`;
}

/** The URL without its password, for error messages. */
function redacted(url: string): string {
  try {
    const parsed = new URL(url);
    parsed.password = '';
    return parsed.toString();
  } catch {
    return 'the database (unparseable URL)';
  }
}
