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
