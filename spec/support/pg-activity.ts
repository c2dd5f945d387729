import type { QueryResultRow } from 'pg';
import { adminQuery } from './databases';

/** A server backend of a test database, as `pg_stat_activity` shows it. */
export interface Backend {
  pid: number;
  state: string | null;
  query: string;
}

/** States of a backend that holds a transaction open while no statement runs on it. */
const IN_TRANSACTION_STATES = ['idle in transaction', 'idle in transaction (aborted)'];

/**
 * Backends of database `dbName` that sit idle inside a transaction: a pooled connection returned to
 * its pool in that state holds locks and fails, or silently joins, the next request that borrows it.
 *
 * @param dbName - database name, as `TestDatabase.name`.
 */
export function connectionsInTransaction(dbName: string): Promise<Backend[]> {
  return adminQuery<Backend>(
    `SELECT pid, state, query FROM pg_stat_activity
      WHERE datname = $1 AND pid <> pg_backend_pid() AND state = ANY($2)`,
    [dbName, IN_TRANSACTION_STATES],
  );
}

/**
 * Asserts that no backend of database `dbName` is idle inside a transaction (plain or aborted).
 * Call it once the requests under test have settled: a transaction still running is legitimately
 * "idle in transaction" between its statements.
 *
 * @param dbName - database name, as `TestDatabase.name`.
 */
export async function expectNoConnectionInTransaction(dbName: string): Promise<void> {
  const backends = await connectionsInTransaction(dbName);
  expect(backends.map((b) => `${b.state}: ${b.query}`)).toEqual([]);
}

/** Anything that runs a query as pg's `Pool` and `Client` do. */
interface Queryable {
  query<R extends QueryResultRow>(sql: string, params: unknown[]): Promise<{ rows: R[] }>;
}

/**
 * Counts the backends of databases `dbNames` that sit idle inside a transaction (plain or aborted),
 * over `admin`, an open connection to another database: for checks run after every one of many
 * programs, where opening a client per check (as `connectionsInTransaction` does) costs too much.
 *
 * @param admin - a pg Pool or Client connected to a database not in `dbNames`.
 * @param dbNames - database names, as `TestDatabase.name`.
 */
export async function countConnectionsInTransaction(
  admin: Queryable,
  dbNames: readonly string[],
): Promise<number> {
  const { rows } = await admin.query<{ count: number }>(
    `SELECT count(*)::int AS count FROM pg_stat_activity WHERE datname = ANY($1) AND state = ANY($2)`,
    [[...dbNames], IN_TRANSACTION_STATES],
  );
  return rows[0]?.count ?? 0;
}
