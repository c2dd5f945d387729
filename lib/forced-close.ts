import { Connection } from 'pg';
import type { DataSource } from 'typeorm';
import { abandonCheckouts } from './checkout-waiters';
import { CellsNotReadyError } from './errors';
import { loadMysql2 } from './mysql-pool';

/**
 * The close of a DataSource's pool by force, for a destroy() whose deadline passed: no caller gets
 * a connection any more, the callers waiting for one fail at once, the statements still running
 * are stopped on the server (a closed socket alone does not stop PostgreSQL's pg_sleep or
 * MariaDB's SLEEP, which would hold their server connections until they end), and every socket is
 * closed. The DataSource's own `destroy()` may follow: it then waits for this close.
 */

/**
 * How long a forced close waits for the server to stop a running statement and let its connection
 * go before it destroys the socket (a server that stopped answering never does).
 */
const SERVER_RELEASE_WAIT_MS = 500;

/**
 * Closes `dataSource`'s pool by force (see above): later checkouts and waiting callers fail with
 * CellsNotReadyError, the pool is ended, running statements are cancelled (PostgreSQL's cancel
 * request; MySQL's KILL CONNECTION on a connection of its own), and each socket is destroyed once
 * the server let it go or after 500 ms. Ending the pool again (TypeORM's `destroy()`) resolves once
 * all this is done. Never throws. @internal
 */
export function forceClose(dataSource: DataSource): void {
  const driver = dataSource.driver as object | undefined;
  if (driver === undefined) return;
  abandonCheckouts(driver, () => new CellsNotReadyError('destroyed'));
  if (dataSource.options.type === 'postgres') forceClosePg(driver as { master?: PgPool });
  else forceCloseMysql(driver as { pool?: MysqlPool });
}

/** What is used of a pg Client of the pool (private fields of pg). */
interface PgClient {
  readonly processID: number | null;
  readonly secretKey: number | null;
  readonly host: string;
  readonly port: number;
  readonly connection?: { stream?: { destroy(): void; destroyed?: boolean } };
  _getActiveQuery?(): unknown;
  once(event: 'end', listener: () => void): unknown;
}

/** What is used of pg-pool's Pool: its clients, idle ones, and its end (private fields of pg-pool). */
interface PgPool {
  readonly _clients?: readonly PgClient[];
  readonly _idle?: ReadonlyArray<{ client: PgClient }>;
  readonly ending?: boolean;
  end(callback?: (error?: Error) => void): Promise<void> | undefined;
}

function forceClosePg(driver: { master?: PgPool }): void {
  const pool = driver.master;
  if (pool === undefined) return;
  const idle = new Set((pool._idle ?? []).map((item) => item.client));
  const released: Array<Promise<void>> = [];
  for (const client of pool._clients ?? []) {
    // Idle ones end gracefully with the pool; a server that stopped answering never closes them.
    if (idle.has(client)) {
      const ended = new Promise<void>((resolve) => client.once('end', resolve));
      released.push(Promise.race([ended, wait(SERVER_RELEASE_WAIT_MS)]).then(() => client.connection?.stream?.destroy()));
      continue;
    }
    const running = client._getActiveQuery?.() != null && client.processID !== null && client.secretKey !== null;
    if (!running) {
      // Between statements (or still connecting): the server notices the closed socket at once.
      client.connection?.stream?.destroy();
      continue;
    }
    // The cancelled statement fails, its caller releases the client, and the ending pool ends it.
    const ended = new Promise<void>((resolve) => client.once('end', resolve));
    released.push(
      Promise.race([Promise.all([cancelPg(client), ended]), wait(SERVER_RELEASE_WAIT_MS)]).then(() => client.connection?.stream?.destroy()),
    );
  }
  if (pool.ending !== true) endPgOnce(pool, Promise.all(released));
}

/**
 * Sends a CancelRequest for `client`'s running statement on a connection of its own (as pg's
 * `Client.cancel` does); resolves once the server closed that connection, or after the wait bound.
 */
function cancelPg(client: PgClient): Promise<void> {
  return new Promise<void>((resolve) => {
    const connection = new Connection() as unknown as {
      stream: { destroy(): void };
      connect(port: number | string, host?: string): void;
      cancel(processID: number, secretKey: number): void;
      on(event: string, listener: () => void): void;
    };
    const done = (): void => {
      clearTimeout(timer);
      connection.stream.destroy();
      resolve();
    };
    const timer = setTimeout(done, SERVER_RELEASE_WAIT_MS);
    connection.on('connect', () => connection.cancel(client.processID!, client.secretKey!));
    connection.on('end', done);
    connection.on('error', done);
    if (client.host.startsWith('/')) connection.connect(`${client.host}/.s.PGSQL.${client.port}`);
    else connection.connect(client.port, client.host);
  });
}

/**
 * Ends `pool` now and makes a later `end()` (TypeORM's, in `DataSource.destroy()`) wait for this one
 * and for `released`, rather than fail with pg-pool's "Called end on pool more than once".
 */
function endPgOnce(pool: PgPool, released: Promise<unknown>): void {
  const ended = Promise.all([Promise.resolve(pool.end()).catch(() => undefined), released]).then(() => undefined);
  (pool as { end: PgPool['end'] }).end = (callback) => {
    if (callback === undefined) return ended;
    void ended.then(() => callback());
    return undefined;
  };
}

/** What is used of a mysql2 PoolConnection. */
interface MysqlConnection {
  threadId: number | null;
  stream?: { destroy(): void };
}

/** What is used of a mysql2 Pool (private fields of mysql2). */
interface MysqlPool {
  _closed?: boolean;
  _allConnections: { length: number; get(index: number): MysqlConnection };
  _freeConnections: { length: number; get(index: number): MysqlConnection };
  _createConnectionConfig(): object;
  end(callback?: (error?: unknown) => void): void;
}

/** What is used of a mysql2 Connection opened to kill the busy ones. */
interface MysqlKiller {
  query(sql: string, callback: (error: unknown) => void): void;
  end(callback: () => void): void;
  destroy(): void;
  on(event: 'error', listener: () => void): void;
}

function forceCloseMysql(driver: { pool?: MysqlPool }): void {
  const pool = driver.pool;
  if (pool === undefined) return;
  const free = new Set(Array.from({ length: pool._freeConnections.length }, (_, i) => pool._freeConnections.get(i)));
  const busy = Array.from({ length: pool._allConnections.length }, (_, i) => pool._allConnections.get(i)).filter((c) => !free.has(c));
  const threads = busy.flatMap((c) => (c.threadId === null ? [] : [c.threadId]));
  // Stop their statements on the server (a closed socket does not stop a running one), then close.
  const killed = threads.length === 0 ? Promise.resolve() : killMysql(pool, threads);
  // Every socket, idle ones included: the pool's end sent them COM_QUIT, but a server that stopped
  // answering never closes them (the end would wait its own bound, past destroy()'s).
  const all = Array.from({ length: pool._allConnections.length }, (_, i) => pool._allConnections.get(i));
  const released = Promise.race([killed, wait(SERVER_RELEASE_WAIT_MS)]).then(() => {
    for (const connection of all) connection.stream?.destroy();
  });
  // Already ending (a graceful close that did not finish): its sockets are destroyed all the same.
  if (pool._closed === true) return;
  const ended = Promise.all([new Promise<void>((resolve) => pool.end(() => resolve())), released]).then(() => undefined);
  pool.end = (callback) => void ended.then(() => callback?.());
}

/** Kills the server connections `threads` from a connection of the pool's configuration; never rejects. */
function killMysql(pool: MysqlPool, threads: readonly number[]): Promise<void> {
  return new Promise<void>((resolve) => {
    let killer: MysqlKiller;
    try {
      const { Connection: MysqlConnectionClass } = loadMysql2('mysql') as { Connection: new (options: object) => MysqlKiller };
      killer = new MysqlConnectionClass({ config: pool._createConnectionConfig() });
    } catch {
      return resolve();
    }
    const done = (): void => {
      clearTimeout(timer);
      killer.destroy();
      resolve();
    };
    const timer = setTimeout(done, SERVER_RELEASE_WAIT_MS);
    killer.on('error', done);
    let left = threads.length;
    for (const thread of threads) {
      killer.query(`KILL CONNECTION ${Number(thread)}`, () => {
        if (--left === 0) killer.end(done);
      });
    }
  });
}

function wait(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
