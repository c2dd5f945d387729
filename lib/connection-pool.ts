import { Client, type ClientConfig, type PoolClient } from 'pg';
import type { DataSource, QueryRunner } from 'typeorm';
import { QUERY_DEADLINE_CODE, kLostError, translateConnectionError } from './connection-errors';
import { currentContext, kCallSignal } from './context';
import { CellBusyError } from './errors';
import { kIdleSince, type BudgetClient, type BudgetPool, type ServerBudget } from './server-budget';

/**
 * The pg pool of every DataSource typeorm-cells opens (cells, the API and the default main
 * database), made safe for shared use:
 * - every pg client has an `'error'` listener for its whole life, so a backend terminated while
 *   its client is checked out but idle (failover, `pg_terminate_backend`, a dropped database) is
 *   recorded instead of becoming an uncaught exception that ends the process;
 * - a client is never handed back to the pool inside a transaction: one whose server-reported
 *   transaction status is not idle when released is destroyed, not reused;
 * - the wait for a free pooled connection is bounded by `acquireTimeoutMs` and ends in
 *   CellBusyError, apart from the connect timeout, which bounds only the opening of a connection;
 * - with a server budget (`maxConnectionsPerServer`), a connection opens only with a permit of its
 *   server's budget (server-budget.ts), held until its socket closes.
 * @internal
 */

/** A pg option of our own, read by CellClient: pg-pool gives its one timeout to both waits. */
const CONNECT_TIMEOUT_KEY = 'cellsConnectTimeoutMillis';
/** The default query deadline of a pool's clients, in ms (0: none). */
const QUERY_TIMEOUT_KEY = 'cellsQueryTimeoutMillis';
/** The server budget a pool's clients open under, with how long they wait for it and their label. */
const BUDGET_KEY = 'cellsServerBudget';

/** What a pool's clients need to open under a server budget. @internal */
export interface BudgetTerms {
  budget: ServerBudget;
  /** How long a connection waits for a permit, in ms (`acquireTimeoutMs`; 0: no limit). */
  acquireTimeoutMs: number;
  /** How ServerBusyError names the database. */
  label: string;
}

type CellClientConfig = ClientConfig & {
  [CONNECT_TIMEOUT_KEY]?: number;
  [QUERY_TIMEOUT_KEY]?: number;
  [BUDGET_KEY]?: BudgetTerms;
};
type QueryCallback = (error: Error | null, result?: unknown) => void;

/**
 * What a query that passed its deadline fails with, before typeorm-cells names its database
 * (QueryTimeoutError). @internal
 */
export class QueryDeadlineExceeded extends Error {
  readonly code = QUERY_DEADLINE_CODE;
  constructor(readonly timeoutMs: number) {
    super(`query did not answer within ${timeoutMs} ms; its connection was closed`);
  }
}

/**
 * A pg Client that can never raise an unhandled 'error', whose connect timeout is its own, and
 * whose queries have a deadline: one that passes it closes the connection (a server that stopped
 * answering would otherwise keep it busy, and every statement queued behind it, for ever).
 */
export class CellClient extends Client implements BudgetClient {
  [kLostError]: unknown;
  [kIdleSince]?: number;
  /** The server's `server_version`, from its ParameterStatus message of the handshake (server-version.ts). */
  serverVersion: string | undefined;
  private readonly queryTimeoutMs: number;
  private readonly budgetTerms: BudgetTerms | undefined;
  /** The options of the pool that made this client (pg-pool passes its own): names the pool to the budget. */
  private readonly poolOptions: object | undefined;

  constructor(config?: CellClientConfig) {
    super(withConnectTimeout(config));
    this.queryTimeoutMs = config?.[QUERY_TIMEOUT_KEY] ?? 0;
    this.budgetTerms = config?.[BUDGET_KEY];
    this.poolOptions = config;
    this.on('error', (error: unknown) => {
      this[kLostError] ??= error;
    });
    (this as unknown as { connection: NodeJS.EventEmitter }).connection.on('parameterStatus', recordServerVersion.bind(this));
  }

  // pg's overloads cannot be restated here; the override keeps its behaviour for both forms.
  override connect(...args: unknown[]): never {
    if (this.budgetTerms !== undefined) return this.connectWithinBudget(this.budgetTerms, args[0]);
    return this.connectNow(args[0]);
  }

  /**
   * Opens the connection once its server's budget gives a permit (at once when one is free), held
   * until the socket closes ('end', which pg emits after a failed connect too) or the connect fails,
   * whichever comes first. Waiting for the permit does not count against the connect timeout.
   */
  private connectWithinBudget(terms: BudgetTerms, callback: unknown): never {
    const { budget } = terms;
    let held = false;
    const giveBack = (): void => {
      if (!held) return;
      held = false;
      budget.release(this);
    };
    const open = async (): Promise<void> => {
      const taken = budget.acquire(this.poolOptions, terms.acquireTimeoutMs, terms.label);
      if (taken !== true) await taken;
      held = true;
      this.once('end', giveBack);
      try {
        await (this.connectNow(undefined) as unknown as Promise<void>);
      } catch (error) {
        giveBack();
        throw error;
      }
    };
    if (typeof callback === 'function') {
      open().then(
        () => (callback as (error: unknown) => void)(null),
        (error: unknown) => (callback as (error: unknown) => void)(error),
      );
      return undefined as never;
    }
    return open() as never;
  }

  private connectNow(callback: unknown): never {
    const connect = super.connect as (...a: unknown[]) => unknown;
    if (typeof callback === 'function') {
      return connect.call(this, (error: unknown) => {
        this.forgetPassword();
        (callback as (error: unknown) => void)(error);
      }) as never;
    }
    return (connect.call(this) as Promise<void>).finally(() => this.forgetPassword()) as never;
  }

  /**
   * pg keeps the password it resolved as a string on the client and its connection parameters
   * (hidden from plain inspect, shown with `showHidden`); once authenticated it never reads it
   * again. It becomes a function, which no inspect option or JSON form prints.
   */
  private forgetPassword(): void {
    const targets = [this, (this as unknown as { connectionParameters?: object }).connectionParameters];
    for (const target of targets) {
      if (target !== undefined) hidePassword(target, false);
    }
  }

  // pg's overloads cannot be restated here; the override keeps its behaviour for every form.
  override query(...args: unknown[]): never {
    const [config, values, callback] = args;
    const timeoutMs = currentContext()?.queryTimeoutMs ?? this.queryTimeoutMs;
    const submittable = typeof (config as { submit?: unknown } | null)?.submit === 'function';
    if (timeoutMs > 0 && submittable) this.boundCursor(config, timeoutMs);
    // Submittable queries and callback calls keep pg's own behaviour (a cursor's waits bounded above).
    if (timeoutMs <= 0 || submittable || typeof values === 'function' || typeof callback === 'function') {
      return (super.query as (...a: unknown[]) => never)(...args);
    }
    return new Promise((resolve, reject) => {
      const clear = this.armDeadline(timeoutMs);
      const done: QueryCallback = (error, result) => {
        clear();
        if (error) reject(error);
        else resolve(result);
      };
      (super.query as (...a: unknown[]) => unknown)(config, values, done);
    }) as never;
  }

  /**
   * Starts a deadline for one wait on the server; returns what ends it. Passed, it closes the
   * connection: that fails the query and every one queued behind it, and frees the server's backend.
   */
  private armDeadline(timeoutMs: number, onExpired?: (error: Error) => void): () => void {
    const timer = setTimeout(() => {
      const error = new QueryDeadlineExceeded(timeoutMs);
      this[kLostError] ??= error;
      (this as unknown as { connection: { stream: { destroy(error?: Error): void } } }).connection.stream.destroy(error);
      onExpired?.(error);
    }, timeoutMs);
    return () => clearTimeout(timer);
  }

  /**
   * A stream (pg-query-stream's `cursor`, pg-cursor's `read` and `close`) waits on the server once
   * per batch of rows and once to close: each such wait gets the query deadline. Time the consumer
   * takes between batches is its own, so a long export of many batches is not cut short.
   */
  private boundCursor(config: unknown, timeoutMs: number): void {
    const cursor = (config as { cursor?: unknown }).cursor ?? config;
    const target = cursor as Partial<Record<'read' | 'close', (...a: unknown[]) => unknown>>;
    // pg-cursor may drop a queued read's callback when the cursor closes: every deadline of the
    // cursor ends with its close, so none outlives it to cut a later query on this connection.
    const armed = new Set<() => void>();
    const clearAll = (): void => {
      for (const clear of armed) clear();
      armed.clear();
    };
    for (const method of ['read', 'close'] as const) {
      const original = target[method];
      if (typeof original !== 'function') continue;
      target[method] = (...callArgs: unknown[]) => {
        const last = callArgs.length - 1;
        const callback = callArgs[last];
        if (typeof callback !== 'function') return original.apply(cursor, callArgs);
        let called = false;
        const settle = (...results: unknown[]): unknown => {
          if (called) return undefined;
          called = true;
          clear();
          armed.delete(clear);
          if (method === 'close') clearAll();
          return (callback as (...r: unknown[]) => unknown)(...results);
        };
        // A closing cursor ignores the error of its lost connection (pg-cursor's handleError
        // returns once the cursor is 'done'), so its callback is answered here.
        const clear = this.armDeadline(timeoutMs, method === 'close' ? (error) => settle(error) : undefined);
        armed.add(clear);
        callArgs[last] = settle;
        return original.apply(cursor, callArgs);
      };
    }
  }
}

/** Keeps `server_version` of a ParameterStatus message on the client it is bound to. */
function recordServerVersion(this: CellClient, message: { parameterName?: string; parameterValue?: string }): void {
  if (message.parameterName === 'server_version') this.serverVersion = message.parameterValue;
}

/**
 * Replaces a string `password` property of `target` by a function returning it (pg and TypeORM
 * take either): `util.inspect` at any depth, with `showHidden` or `getters`, and `JSON.stringify`
 * then show no password. It stays enumerable unless `enumerable` is false: TypeORM copies its
 * credentials with `Object.assign`, which would drop it. Returns `target`.
 * @internal
 */
export function hidePassword<T extends object>(target: T, enumerable = true): T {
  const secret = (target as { password?: unknown }).password;
  if (typeof secret === 'string') {
    Object.defineProperty(target, 'password', {
      value: function password(): string {
        return secret;
      },
      enumerable,
      writable: true,
      configurable: true,
    });
  }
  return target;
}

/**
 * A copy of the pool's client config with our connect timeout. pg-pool keeps the password as a
 * non-enumerable property (so it is not logged): copied the same way, not by a spread.
 */
function withConnectTimeout(config: CellClientConfig | undefined): ClientConfig | undefined {
  if (config === undefined) return undefined;
  const copy: ClientConfig = { ...config, connectionTimeoutMillis: config[CONNECT_TIMEOUT_KEY] ?? config.connectionTimeoutMillis };
  if ('password' in config) {
    Object.defineProperty(copy, 'password', { value: config.password, enumerable: false, writable: true, configurable: true });
  }
  return copy;
}

/**
 * The pg-pool options (TypeORM's `extra`) of a guarded pool: `CellClient`, `poolSize` connections,
 * the connect timeout on each new connection and no pg-pool queue timeout (the guard bounds it).
 * @internal
 */
export function guardedPoolOptions(
  extra: object | undefined,
  poolSize: number,
  connectTimeoutMs: number,
  queryTimeoutMs: number,
  budget?: BudgetTerms,
): Record<string, unknown> {
  return {
    ...extra,
    max: poolSize,
    Client: CellClient,
    connectionTimeoutMillis: 0,
    [CONNECT_TIMEOUT_KEY]: connectTimeoutMs,
    [QUERY_TIMEOUT_KEY]: queryTimeoutMs,
    ...(budget === undefined ? {} : { [BUDGET_KEY]: budget }),
  };
}

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
 * client released inside a transaction.
 * @internal
 */
export function guardPool(dataSource: DataSource, label: () => string, acquireTimeoutMs: number, budget?: ServerBudget): void {
  typeQueryRunnerErrors(dataSource, label);
  if (budget !== undefined) trackPool(dataSource, budget);
  const driver = dataSource.driver as unknown as { master?: GuardedPool; obtainMasterConnection: Obtain };
  const original = driver.obtainMasterConnection.bind(driver);
  driver.obtainMasterConnection = () => {
    const pool = driver.master;
    if (pool === undefined) return original();
    // Read before connect(), which may add the connection it opens to totalCount. pg-pool queues
    // a checkout when the pool is full or has an idle connection (which another caller may take
    // first); only when it opens a new connection is the wait bounded by the connect timeout.
    const mayQueue = pool.idleCount > 0 || pool.totalCount >= pool.options.max;
    // Inside a scatter-gather, the wait also ends at the gather's deadline.
    const signal = mayQueue ? currentContext()?.[kCallSignal] : undefined;
    return new Promise((resolve, reject) => {
      let settled = false;
      let timer: NodeJS.Timeout | undefined;
      let giveUp = (): void => undefined;
      const onConnect: ConnectCallback = (error, client, release) => {
        if (settled) {
          // The caller gave up waiting: hand the connection straight back.
          if (error === undefined && client !== undefined) release();
          return;
        }
        settled = true;
        if (timer !== undefined) clearTimeout(timer);
        signal?.removeEventListener('abort', giveUp);
        if (error !== undefined || client === undefined) return reject(error);
        if (budget === undefined) {
          resolve([client, (releaseError?: unknown) => release(releaseError ?? dirtyState(client))]);
          return;
        }
        resolve([client, (releaseError?: unknown) => release(releaseError ?? dirtyState(client) ?? giveBack(pool, client, budget))]);
      };
      pool.connect(onConnect);
      if (!mayQueue) return;
      const started = performance.now();
      giveUp = (): void => {
        if (settled) return;
        settled = true;
        if (timer !== undefined) clearTimeout(timer);
        signal?.removeEventListener('abort', giveUp);
        // Leave pg-pool's queue too: an abandoned waiter would be handed each freed connection and
        // hand it back at once, recursively for thousands of them (a stack overflow), and the
        // queue would only grow while the pool stays saturated.
        const queue = pool._pendingQueue;
        const index = queue?.findIndex((item) => item.callback === onConnect) ?? -1;
        if (index >= 0) queue!.splice(index, 1);
        const waitedMs = Math.round(performance.now() - started);
        // Its pool waits for the server's budget, not for its own connections: say so.
        if (budget?.isWaitedOnBy(pool.options) === true) reject(budget.busyError(label(), waitedMs));
        else reject(new CellBusyError(label(), pool.options.max, waitedMs));
      };
      if (acquireTimeoutMs > 0) timer = setTimeout(giveUp, acquireTimeoutMs);
      if (signal !== undefined) {
        if (signal.aborted) giveUp();
        else signal.addEventListener('abort', giveUp, { once: true });
      }
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

/** What forceClose uses of pg-pool's Pool: its clients (a private field of pg-pool). */
interface PoolClients {
  readonly _clients?: ReadonlyArray<{ connection?: { stream?: { destroy(): void } } }>;
}

/**
 * Destroys the socket of every connection of `dataSource`'s pool: their queries fail at once and the
 * pool drops them. For a shutdown whose deadline passed (a server that stopped answering never
 * acknowledges a graceful close). @internal
 */
export function forceClose(dataSource: DataSource): void {
  const pool = (dataSource.driver as { master?: PoolClients } | undefined)?.master;
  for (const client of pool?._clients ?? []) client.connection?.stream?.destroy();
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
 * QueryFailedError; other errors pass with their secrets masked.
 */
function typeQueryRunnerErrors(dataSource: DataSource, label: () => string): void {
  const driver = dataSource.driver as unknown as { createQueryRunner(mode: unknown): QueryRunner };
  const create = driver.createQueryRunner.bind(driver);
  driver.createQueryRunner = (mode) => {
    const runner = create(mode);
    const query = runner.query.bind(runner) as (...args: unknown[]) => Promise<unknown>;
    // No async frame of its own: every query of the cell passes here.
    (runner as { query: (...args: unknown[]) => Promise<unknown> }).query = (...args) =>
      query(...args).catch((error: unknown) => {
        throw translateConnectionError(error, label(), runner);
      });
    return runner;
  };
}
