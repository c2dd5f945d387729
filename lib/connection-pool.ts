import type { Client, PoolClient } from 'pg';
import type { DataSource, QueryRunner } from 'typeorm';
import type { CellClient } from './cell-client';
import { kLostError, translateConnectionError } from './connection-errors';
import { CellBusyError, CellsNotReadyError } from './errors';
import { refusesCheckouts } from './checkout-waiters';
import { boundedCheckout } from './bounded-checkout';
import { kIdleSince, type BudgetPool, type ServerBudget } from './server-budget';
import { connectWithFreshSecret, secretSourceOf } from './secret-reference';
import type { PoolObserver } from './telemetry';

/**
 * The pg pool of every DataSource typeorm-cells opens (cells, the API and the default main
 * database), made safe for shared use (its clients are CellClients, cell-client.ts):
 * - a client is never handed back to the pool inside a transaction: one whose server-reported
 *   transaction status is not idle when released is destroyed, not reused;
 * - the wait for a free pooled connection is bounded by `acquireTimeoutMs` and ends in
 *   CellBusyError, apart from the connect timeout, which bounds only the opening of a connection;
 * - with a server budget (`maxConnectionsPerServer`), idle connections are given back to waiters
 *   of other pools on the same server (server-budget.ts);
 * - every query runner's errors are typed (QueryTimeoutError, CellUnreachableError);
 * - a client of a read-only pool whose session is no longer read-only (a raw `SET
 *   default_transaction_read_only = off` of one caller) is destroyed at release, not reused.
 * @internal
 */

/** What the guard uses of pg-pool's Pool (TypeORM's `driver.master`). */
type ConnectCallback = (error: Error | undefined, client: PoolClient | undefined, release: (error?: unknown) => void) => void;

interface GuardedPool extends BudgetPool {
  readonly totalCount: number;
  readonly idleCount: number;
  readonly waitingCount: number;
  readonly options: { max: number };
  /** pg-pool's waiters (private): each holds the callback given to connect(). */
  readonly _pendingQueue?: Array<{ callback: unknown }>;
  connect(cb: ConnectCallback): void;
}

type Obtain = () => Promise<[PoolClient, (error?: unknown) => void]>;

/**
 * Replaces the pool checkout of `dataSource`'s driver (before `initialize()`) so that it waits at
 * most `acquireTimeoutMs` for a free connection (then CellBusyError naming `label`) and destroys a
 * client released inside a transaction; with `readOnly`, one whose session stopped being read-only.
 * @internal
 */
export function guardPool(
  dataSource: DataSource,
  label: () => string,
  acquireTimeoutMs: number,
  budget?: ServerBudget,
  observer?: PoolObserver,
  readOnly = false,
): void {
  typeQueryRunnerErrors(dataSource, label, readOnly);
  if (budget !== undefined) trackPool(dataSource, budget);
  const driver = dataSource.driver as unknown as { master?: GuardedPool; obtainMasterConnection: Obtain };
  const original = driver.obtainMasterConnection.bind(driver);
  // A password from a secret reference is resolved again once when the server refuses it (rotated).
  const secret = secretSourceOf((dataSource.options as { password?: unknown }).password);
  driver.obtainMasterConnection = () => {
    const pool = driver.master;
    // Closed by force (destroy() past its deadline): no caller gets a new connection.
    if (refusesCheckouts(driver)) return Promise.reject(new CellsNotReadyError('destroyed'));
    if (pool === undefined) return original();
    // Read before connect(), which may add the connection it opens to totalCount. pg-pool queues
    // a checkout when the pool is full or has an idle connection (which another caller may take
    // first); only when it opens a new connection is the wait bounded by the connect timeout.
    const mayQueue = pool.idleCount > 0 || pool.totalCount >= pool.options.max;
    return boundedCheckout<[PoolClient, (error?: unknown) => void]>(driver, { mayQueue, acquireTimeoutMs, observer }, (wait) => {
      const onConnect: ConnectCallback = (error, client, release) => {
        if (!wait.answer()) {
          // The caller gave up waiting: hand the connection straight back.
          if (error === undefined && client !== undefined) release();
          return;
        }
        if (error !== undefined || client === undefined) return wait.reject(error);
        const budgetRelease = budget === undefined ? undefined : () => giveBack(pool, client, budget);
        if (readOnly) watchReadOnly(client);
        wait.resolve([
          client,
          (releaseError?: unknown) =>
            release(releaseError ?? dirtyState(client) ?? (readOnly ? writableSession(client) : undefined) ?? budgetRelease?.()),
        ]);
      };
      const queued = connectWithFreshSecret(secret, (callback: ConnectCallback) => pool.connect(callback), onConnect);
      return {
        // An abandoned waiter left in pg-pool's queue would be handed each freed connection and
        // hand it back at once, recursively for thousands of them (a stack overflow).
        leaveQueue: () => {
          const queue = pool._pendingQueue;
          const index = queue?.findIndex((item) => item.callback === queued || item.callback === onConnect) ?? -1;
          if (index >= 0) queue!.splice(index, 1);
        },
        // Its pool waits for the server's budget, not for its own connections: say so.
        busyError: (waitedMs) =>
          budget?.isWaitedOnBy(pool.options) === true
            ? budget.busyError(label(), waitedMs)
            : new CellBusyError(label(), pool.options.max, waitedMs),
      };
    });
  };
}

/**
 * An Error (so pg-pool closes the connection) when a connection of another pool on the server
 * waits for a permit and no caller of `pool` waits for this one; else stamps it idle.
 */
function giveBack(pool: GuardedPool, client: PoolClient, budget: ServerBudget): Error | undefined {
  const tracked = client as unknown as CellClient;
  if (pool.waitingCount === 0 && budget.takeBack(tracked)) return new Error('connection given back to the server budget');
  tracked[kIdleSince] = performance.now();
  return undefined;
}

/**
 * Tracks the pool of `dataSource` in `budget` from its creation (TypeORM's `createPool`, in
 * `initialize()`) until it ends, so its idle connections can be given back to other cells.
 */
function trackPool(dataSource: DataSource, budget: ServerBudget): void {
  const driver = dataSource.driver as unknown as { createPool(...args: unknown[]): Promise<BudgetPool & { end(...a: unknown[]): unknown }> };
  const create = driver.createPool.bind(driver);
  driver.createPool = async (...args) => {
    const pool = await create(...args);
    // Its first connection, idle until the callers that opened the cell take it: the newest idle.
    for (const item of pool._idle ?? []) item.client[kIdleSince] ??= performance.now();
    budget.track(pool);
    const end = pool.end.bind(pool);
    pool.end = (...endArgs: unknown[]) => {
      budget.untrack(pool);
      return end(...endArgs);
    };
    return pool;
  };
}

/**
 * An Error (so pg-pool destroys the client) when `client` is not idle on the server: inside a
 * transaction, an aborted one, or lost. Undefined when it may be reused.
 */
function dirtyState(client: PoolClient): Error | undefined {
  if ((client as unknown as Partial<CellClient>)[kLostError] !== undefined) return new Error('connection lost');
  const status = (client as { getTransactionStatus?: () => string | null }).getTransactionStatus?.();
  // null: no ReadyForQuery yet (cannot happen after a query); 'I': idle; 'T'/'E': in a transaction.
  if (status === 'T' || status === 'E') return new Error(`connection released inside a transaction (${status})`);
  return undefined;
}

/** The last `default_transaction_read_only` the server reported for a client (PostgreSQL 14+ reports it). */
const kReadOnlySetting = Symbol('typeorm-cells.readOnlySetting');

type WatchedClient = PoolClient & {
  [kReadOnlySetting]?: string;
  connection?: { on(event: 'parameterStatus', listener: (message: { parameterName: string; parameterValue: string }) => void): void };
};

/**
 * Follows the `default_transaction_read_only` that the server reports for `client` (a ParameterStatus
 * message after every change: `SET`, `SET SESSION CHARACTERISTICS`, `set_config`, `RESET`), from its
 * first checkout, when it is `on` (the connection's startup option). pg-native clients report none.
 */
function watchReadOnly(client: PoolClient): void {
  const watched = client as WatchedClient;
  if (watched[kReadOnlySetting] !== undefined || watched.connection === undefined) return;
  watched[kReadOnlySetting] = 'on';
  watched.connection.on('parameterStatus', ({ parameterName, parameterValue }) => {
    if (parameterName === 'default_transaction_read_only') watched[kReadOnlySetting] = parameterValue;
  });
}

/** An Error (so pg-pool destroys the client) when a read-only pool's client reported a writable session. */
function writableSession(client: PoolClient): Error | undefined {
  const setting = (client as WatchedClient)[kReadOnlySetting];
  return setting === undefined || setting === 'on' ? undefined : new Error('connection of a read-only cell made writable');
}

/**
 * Ends a standalone pg client gracefully, or destroys its socket when the server has not let it go
 * within `ms` (a paused server never answers the close). Never rejects. @internal
 */
export async function endClient(client: Client, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const ended = client.end().then(
    () => true,
    () => true,
  );
  const late = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  const graceful = await Promise.race([ended, late]);
  clearTimeout(timer);
  if (!graceful) (client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
}

/**
 * Every query runner of `dataSource` (routed calls', and those of the TypeORM managers a routed
 * repository hands out, `repo.manager.query(...)` included) fails typed: a passed deadline as
 * QueryTimeoutError, a lost connection as CellUnreachableError, never as TypeORM's untyped
 * QueryFailedError; with `readOnly` (a read-only cell's), the server's refusal of a write as
 * CellReadOnlyError; other errors pass with their secrets masked.
 */
export function typeQueryRunnerErrors(dataSource: DataSource, label: () => string, readOnly = false): void {
  const driver = dataSource.driver as unknown as { createQueryRunner(mode: unknown): QueryRunner };
  const create = driver.createQueryRunner.bind(driver);
  driver.createQueryRunner = (mode) => {
    const runner = create(mode);
    const query = runner.query.bind(runner) as (...args: unknown[]) => Promise<unknown>;
    // No async frame of its own: every query of the cell passes here.
    (runner as { query: (...args: unknown[]) => Promise<unknown> }).query = (...args) =>
      query(...args).catch((error: unknown) => {
        throw translateConnectionError(error, label(), runner, readOnly);
      });
    return runner;
  };
}
