import { Client, type ClientConfig } from 'pg';
import { QUERY_DEADLINE_CODE, kLostError } from './connection-errors';
import { currentContext } from './context';
import { kIdleSince, type BudgetClient, type ServerBudget } from './server-budget';

/**
 * The pg Client of every pool typeorm-cells opens (cells, the API and the default main database):
 * - it has an `'error'` listener for its whole life, so a backend terminated while the client is
 *   checked out but idle (failover, `pg_terminate_backend`, a dropped database) is recorded
 *   instead of becoming an uncaught exception that ends the process;
 * - its connect timeout is its own (pg-pool gives one timeout to both the checkout and the
 *   connect), and each of its queries has a deadline that closes the connection when passed;
 * - it drops the password string once authenticated, records the server's version from the
 *   handshake (server-version.ts), and opens only with a permit of its server's budget
 *   (`maxConnectionsPerServer`, server-budget.ts), held until its socket closes.
 * `guardedPoolOptions` gives a pool this client and its settings; connection-pool.ts guards the
 * pool itself. @internal
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
