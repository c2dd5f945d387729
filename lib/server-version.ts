import type { DataSource } from 'typeorm';
import type { CellClient } from './cell-client';

/**
 * The server version TypeORM's PostgresDriver needs, learnt from the handshake instead of a query.
 *
 * At each open the driver asks the server `SELECT version()` (one round trip, for the features it
 * enables by version, e.g. generated columns from 12) unless `driver.version` is already set.
 * PostgreSQL sends `server_version` in a ParameterStatus message while a connection starts; every
 * pool client (CellClient) records it, and the first connection, which TypeORM opens to try the
 * pool, gives it to the driver before the driver would ask. The other facts the driver queries at
 * an open are left to it: `current_database()` only when the options name no database, and
 * `current_schema()`, which depends on the role and its `search_path` and is not reported in
 * ParameterStatus before PostgreSQL 18. A server that sends no `server_version` (none known)
 * is asked as before. @internal
 */
export function learnServerVersion(dataSource: DataSource): void {
  const driver = dataSource.driver as unknown as {
    version?: string;
    createPool(options: unknown, credentials: unknown): Promise<unknown>;
  };
  const createPool = driver.createPool.bind(driver);
  driver.createPool = async (options, credentials) => {
    const pool = (await createPool(options, credentials)) as { _clients?: Partial<CellClient>[] };
    driver.version ??= versionOf(pool._clients?.[0]?.serverVersion);
    return pool;
  };
}

/**
 * The version as TypeORM reads it from `version()`: the leading dotted number (`15.4` of
 * `15.4 (Debian 15.4-1.pgdg120+1)`), or undefined when there is none.
 */
export function versionOf(serverVersion: string | undefined): string | undefined {
  return serverVersion === undefined ? undefined : /^\d+(?:\.\d+)*/.exec(serverVersion)?.[0];
}
