import { createRequire } from 'node:module';
import type { DataSource, QueryRunner } from 'typeorm';
import { QueryDeadlineExceeded } from './cell-client';
import { kLostError } from './connection-errors';
import { typeQueryRunnerErrors } from './connection-pool';
import { currentContext } from './context';
import { DEFAULTS, type CreateDataSource, type MysqlOptions, type PoolBounds } from './data-source-options';
import { CellBusyError, CellsNotReadyError, MissingDriverError } from './errors';
import { refusesCheckouts } from './checkout-waiters';
import { boundedCheckout } from './bounded-checkout';
import { hidePassword } from './cell-client';
import { connectWithFreshSecret, secretSourceOf, type SecretSource } from './secret-reference';

/**
 * The mysql2 pool of every MySQL or MariaDB DataSource typeorm-cells opens, made safe for shared
 * use, as connection-pool.ts and cell-client.ts make pg's:
 * - `mysql2` is loaded only when such a database is used, once per process, and its absence is a
 *   MissingDriverError naming the package (it is an optional peer dependency);
 * - the wait for a free pooled connection is bounded by `acquireTimeoutMs` (CellBusyError; mysql2's
 *   own queue waits for ever) and, inside a scatter-gather, by the gather's deadline; a caller that
 *   gives up leaves mysql2's queue;
 * - each query has a deadline (`queryTimeoutMs`, the context's or the cell's): one that passes it
 *   fails with QueryTimeoutError and its connection is closed (mysql2 would hand the connection, its
 *   statement still running on the server, to the next caller); a stream's deadline bounds each of
 *   its waits on the server, not the time its consumer holds it paused (see StreamWait);
 * - a stream whose connection is lost fails (mysql2 tells only the connection, not the stream);
 * - a connection is never handed back to the pool inside a transaction, nor after it was lost: it
 *   is destroyed instead;
 * - every connection has an `'error'` listener for its whole life (mysql2's pool listens once);
 * - the password given to TypeORM is a function (so the DataSource's options print none), and
 *   mysql2's copy of it is a non-enumerable getter on its pool's connection config, dropped from each
 *   connection's config once it is authenticated;
 * - a read-only pool's connections run `SET SESSION TRANSACTION READ ONLY` when they open and again
 *   at each later checkout (queued before the caller's first statement), so a raw `SET SESSION
 *   TRANSACTION READ WRITE` of one caller does not make the connection writable for the next.
 * Not applied to MySQL/MariaDB databases: the `maxConnectionsPerServer` budget (server-budget.ts
 * counts pg clients). @internal
 */

/** What is used of the mysql2 module. */
type Mysql2 = object;

let mysql2: Mysql2 | undefined;

/**
 * The `mysql2` module, loaded once per process from where typeorm-cells is installed (TypeORM
 * loads it the same way, from its own location, which npm places beside it).
 * @throws MissingDriverError naming `label` when it is not installed.
 * @internal
 */
export function loadMysql2(label: string): Mysql2 {
  if (mysql2 !== undefined) return mysql2;
  try {
    mysql2 = createRequire(__filename)('mysql2') as Mysql2;
  } catch (error) {
    if ((error as { code?: unknown }).code === 'MODULE_NOT_FOUND') throw new MissingDriverError(label, 'mysql2', { cause: error });
    throw error;
  }
  return mysql2;
}

/** What is used of a mysql2 PoolConnection. */
interface PoolConnection {
  threadId: number | null;
  config: object;
  stream?: { destroy(error?: Error): void; readonly closed?: boolean; once(event: 'close', listener: () => void): unknown };
  query(...args: unknown[]): unknown;
  pause(): void;
  resume(): void;
  release(): void;
  destroy(): void;
  on(event: 'error', listener: (error: unknown) => void): unknown;
  [kLostError]?: unknown;
  [kGuarded]?: true;
  /** Checked out before: a read-only pool sets its session read-only again at each later checkout. */
  [kCheckedOut]?: true;
  /** The stream running on this connection, if any. */
  [kStreamWait]?: StreamWait;
}

/** What is used of a mysql2 Query command: its deadline timer, and its events when it has no callback. */
interface QueryCommand {
  queryTimeout?: NodeJS.Timeout | null;
  on(event: 'fields' | 'result' | 'end' | 'error', listener: () => void): unknown;
  emit(event: 'error', error: unknown): boolean;
}

type GetConnectionCallback = (error: Error | null, connection?: PoolConnection) => void;

/** What is used of a mysql2 Pool (TypeORM's `driver.pool`). */
interface Pool {
  config: { connectionLimit: number; connectionConfig: object };
  _allConnections: { length: number; get(index: number): PoolConnection };
  _freeConnections: { length: number };
  /** mysql2 3.x: the copy of `config.connectionConfig` each new connection gets. */
  _createConnectionConfig?: () => object;
  _connectionQueue: { length: number; get(index: number): unknown; removeOne(index: number): unknown };
  getConnection(callback: GetConnectionCallback): void;
  end(callback?: (error?: unknown) => void): void;
  /** 'connection': a new connection, before its first caller gets it. */
  on(event: 'connection', listener: (connection: PoolConnection) => void): unknown;
}

/** What is used of the mysql2 module TypeORM's MysqlDriver holds. */
interface Mysql2Module {
  createPool(config: object): Pool;
}

/** What is used of TypeORM's MysqlDriver (1.1). */
interface MysqlDriverInternals {
  pool?: Pool;
  mysql: Mysql2Module;
  createConnectionOptions(options: object, credentials: object): Record<string, unknown>;
  createPool(connectionOptions: object): Promise<Pool>;
  obtainMasterConnection(): Promise<PoolConnection>;
  prepareDbConnection(connection: PoolConnection): PoolConnection;
  createQueryRunner(mode: unknown): QueryRunner;
}

const kGuarded = Symbol('typeorm-cells.mysqlGuarded');
const kCheckedOut = Symbol('typeorm-cells.mysqlCheckedOut');
const kStreamWait = Symbol('typeorm-cells.mysqlStreamWait');

/**
 * A MySQL/MariaDB DataSource of `options` whose pool is guarded (see above).
 * @throws MissingDriverError when `mysql2` is not installed.
 * @internal
 */
export function guardedMysqlDataSource(
  options: MysqlOptions,
  label: string,
  bounds: PoolBounds,
  create: CreateDataSource,
): DataSource {
  const driverModule = loadMysql2(label);
  const connectTimeout = options.connectTimeout ?? bounds.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs;
  const dataSource = create(
    hidePassword<MysqlOptions>({
      ...options,
      driver: options.driver ?? driverModule,
      connectTimeout,
      poolSize: options.poolSize ?? DEFAULTS.staticPoolSize,
      // mysql2's queue has no bound of its own: the guard below bounds the wait.
      extra: { ...(options.extra as object | undefined), waitForConnections: true, queueLimit: 0 },
    }),
  );
  const driver = dataSource.driver as unknown as MysqlDriverInternals;
  // A password from a secret reference: read from its source by each new connection (a refreshed
  // one then applies), and resolved again once when the server refuses it.
  const secret = secretSourceOf((options as { password?: unknown }).password);
  const buildOptions = driver.createConnectionOptions.bind(driver);
  driver.createConnectionOptions = (driverOptions, credentials) => {
    const built = buildOptions(driverOptions, credentials);
    const password: unknown = built.password;
    if (typeof password === 'function') built.password = (password as () => string)();
    return built;
  };
  const mysqlModule = driver.mysql;
  // mysql2's PoolConfig copies the password into an enumerable field of its ConnectionConfig, which
  // every pooled connection then copies: it is hidden there before the pool makes a connection.
  driver.mysql = Object.create(mysqlModule, {
    createPool: {
      value: (config: object): Pool =>
        endClosesSockets(readOnlySessions(hidePoolPassword(mysqlModule.createPool(config), secret), bounds.readOnly === true)),
      enumerable: false,
    },
  }) as Mysql2Module;
  const createPool = driver.createPool.bind(driver);
  driver.createPool = (connectionOptions) => {
    // Hidden before the pool makes its first connection: each connection copies the config's descriptors.
    const { password } = connectionOptions as { password?: unknown };
    delete (connectionOptions as { password?: unknown }).password;
    return createPool(withHiddenPassword(connectionOptions, password, secret));
  };
  typeQueryRunnerErrors(dataSource, () => label, bounds.readOnly === true);
  guardRelease(dataSource);
  guardCheckout(driver, label, bounds, secret);
  return dataSource;
}

/**
 * `connectionOptions` with `password` as a getter on a prototype of its own: mysql2 copies its
 * config's own property descriptors (and keeps its prototype) into each connection's config, so
 * every connection reads it, and no `util.inspect` (not even with `showHidden` and `getters`) or
 * JSON prints it. With a secret reference, it reads the source's current password, so a password
 * resolved again reaches the next new connection.
 */
function withHiddenPassword(connectionOptions: object, password: unknown, secret: SecretSource | undefined): object {
  if (secret === undefined && password === undefined) return connectionOptions;
  const read = secret === undefined ? () => password : () => secret.current();
  const holder = Object.create(Object.getPrototypeOf(connectionOptions) as object | null, {
    password: { get: read, enumerable: false, configurable: true },
  }) as object;
  Object.setPrototypeOf(connectionOptions, holder);
  return connectionOptions;
}

/**
 * `pool` with no password in its connection config: each new connection's copy of the config
 * (mysql2's `_createConnectionConfig`, 3.x) gets it as a plain non-enumerable value, read then
 * (from the secret source, with a reference), and drops it once authenticated (guardConnection),
 * so no `util.inspect` option shows it on the pool or an open connection. A mysql2 without that
 * method shares the config: it keeps the password as a hidden getter (withHiddenPassword).
 */
function hidePoolPassword(pool: Pool, secret: SecretSource | undefined): Pool {
  const config = pool.config.connectionConfig as { password?: unknown };
  const { password } = config;
  delete config.password;
  const copyConfig = pool._createConnectionConfig?.bind(pool);
  if (copyConfig === undefined) {
    withHiddenPassword(config, password, secret);
    return pool;
  }
  const read = secret === undefined ? () => password : () => secret.current();
  pool._createConnectionConfig = () => {
    const copy = copyConfig();
    Object.defineProperty(copy, 'password', { value: read(), enumerable: false, writable: true, configurable: true });
    return copy;
  };
  return pool;
}

/**
 * How long a pool's end waits for the server to close each connection after its COM_QUIT, in ms;
 * then the socket is destroyed (a server that stopped answering never closes it).
 */
const SOCKET_CLOSE_WAIT_MS = 1_000;

/**
 * `pool` whose `end()` calls back once every connection's socket is closed: mysql2's calls back as
 * soon as it queued each connection's COM_QUIT, before it is even written, so a DataSource's
 * `destroy()` resolved with sockets still open (a handle keeping the process alive, a server still
 * listing the connection). Each socket gets at most SOCKET_CLOSE_WAIT_MS to close, then is destroyed.
 */
function endClosesSockets(pool: Pool): Pool {
  const end = pool.end.bind(pool);
  pool.end = (callback) => {
    const streams = Array.from({ length: pool._allConnections.length }, (_, i) => pool._allConnections.get(i).stream);
    end((error) => {
      const open = streams.filter((stream): stream is NonNullable<typeof stream> => stream !== undefined && stream.closed !== true);
      if (open.length === 0) return callback?.(error);
      let timer: NodeJS.Timeout | undefined;
      const closed = open.map((stream) => new Promise<void>((resolve) => stream.once('close', resolve)));
      const bound = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, SOCKET_CLOSE_WAIT_MS);
      });
      void Promise.race([Promise.all(closed), bound]).then(() => {
        clearTimeout(timer);
        for (const stream of open) if (stream.closed !== true) stream.destroy();
        callback?.(error);
      });
    });
  };
  return pool;
}

/**
 * With `readOnly`, runs `SET SESSION TRANSACTION READ ONLY` first on each new connection of `pool`
 * (mysql2 runs a connection's queries in order, so no statement of a caller runs before it); a
 * connection that refuses it is destroyed rather than used writable.
 */
function readOnlySessions(pool: Pool, readOnly: boolean): Pool {
  if (!readOnly) return pool;
  pool.on('connection', setSessionReadOnly);
  return pool;
}

/** Queues `SET SESSION TRANSACTION READ ONLY` on `connection`, destroying it if the statement fails. */
function setSessionReadOnly(connection: PoolConnection): void {
  connection.query('SET SESSION TRANSACTION READ ONLY', (error: unknown) => {
    if (error) connection.destroy();
  });
}

/**
 * Sets a read-only pool's reused `connection` read-only again (its first checkout follows
 * readOnlySessions' statement): one statement queued before the caller's, which a connection that
 * refuses it does not survive. The cost of a round trip per checkout, on read-only cells only.
 */
function readOnlyAgain(connection: PoolConnection): void {
  if (connection[kCheckedOut] !== true) {
    connection[kCheckedOut] = true;
    return;
  }
  setSessionReadOnly(connection);
}

/**
 * Wraps the driver's checkout: bounded by `acquireTimeoutMs` and by a scatter-gather's deadline,
 * and each connection guarded once (error listener, query deadlines, password dropped).
 */
function guardCheckout(driver: MysqlDriverInternals, label: string, bounds: PoolBounds, secret: SecretSource | undefined): void {
  const original = driver.obtainMasterConnection.bind(driver);
  driver.obtainMasterConnection = () => {
    const pool = driver.pool;
    // Closed by force (destroy() past its deadline): no caller gets a new connection.
    if (refusesCheckouts(driver)) return Promise.reject(new CellsNotReadyError('destroyed'));
    if (pool === undefined) return original();
    // mysql2 queues a checkout only when the pool is full and has no free connection; a new
    // connection's wait is bounded by the connect timeout.
    const mayQueue = pool._freeConnections.length === 0 && pool._allConnections.length >= pool.config.connectionLimit;
    const { acquireTimeoutMs, observer } = bounds;
    return boundedCheckout<PoolConnection>(driver, { mayQueue, acquireTimeoutMs, observer }, (wait) => {
      const onConnection: GetConnectionCallback = (error, connection) => {
        if (!wait.answer()) {
          // The caller gave up waiting: hand the connection straight back.
          if (error === null && connection !== undefined) connection.release();
          return;
        }
        if (error !== null || connection === undefined) return wait.reject(error ?? new Error('no connection'));
        if (bounds.readOnly === true) readOnlyAgain(connection);
        wait.resolve(driver.prepareDbConnection(guardConnection(connection, bounds.queryTimeoutMs)));
      };
      const queued = connectWithFreshSecret(secret, (callback: GetConnectionCallback) => pool.getConnection(callback), onConnection);
      return {
        leaveQueue: () => {
          const queue = pool._connectionQueue;
          for (let index = 0; index < queue.length; index++) {
            if (queue.get(index) === queued || queue.get(index) === onConnection) {
              queue.removeOne(index);
              break;
            }
          }
        },
        busyError: (waitedMs) => new CellBusyError(label, pool.config.connectionLimit, waitedMs),
      };
    });
  };
}

/** Guards `connection` once: error listener, password dropped, query deadlines. */
function guardConnection(connection: PoolConnection, queryTimeoutMs: number): PoolConnection {
  if (connection[kGuarded] === true) return connection;
  connection[kGuarded] = true;
  connection.on('error', (error) => {
    connection[kLostError] ??= error;
    connection[kStreamWait]?.fail(error);
  });
  // mysql2's stream pauses the connection while its consumer does not read: that time is not a wait on the server.
  const pause = connection.pause.bind(connection);
  connection.pause = () => {
    connection[kStreamWait]?.pause();
    pause();
  };
  const resume = connection.resume.bind(connection);
  connection.resume = () => {
    connection[kStreamWait]?.resume();
    resume();
  };
  // Authenticated: mysql2 reads the password again only for changeUser, which TypeORM never sends.
  Object.defineProperty(connection.config, 'password', { value: undefined, enumerable: false, writable: true, configurable: true });
  const query = connection.query.bind(connection);
  connection.query = (...args: unknown[]) => {
    const timeoutMs = currentContext()?.queryTimeoutMs ?? queryTimeoutMs;
    const last = args.length - 1;
    const callback = args[last];
    if (typeof callback !== 'function') return StreamWait.start(connection, query(...args) as QueryCommand, timeoutMs);
    if (timeoutMs <= 0) return query(...args);
    const [sql] = args;
    const own = typeof sql === 'object' && sql !== null ? (sql as { timeout?: number }).timeout : undefined;
    const limit = own !== undefined && own > 0 ? Math.min(own, timeoutMs) : timeoutMs;
    args[0] = typeof sql === 'object' && sql !== null ? { ...sql, timeout: limit } : { sql, timeout: limit };
    // Filled once query() returns (mysql2 may answer within the call, on a closed connection).
    const sent: { command?: QueryCommand } = {};
    let answered = false;
    args[last] = (error: unknown, ...results: unknown[]) => {
      // mysql2 answers a query whose connection is lost without clearing its deadline timer: the
      // timer would hold the process until it fires, then answer the query a second time.
      if (answered) return;
      answered = true;
      const timer = sent.command?.queryTimeout;
      if (timer != null) {
        clearTimeout(timer);
        sent.command!.queryTimeout = null;
      }
      if ((error as { code?: unknown } | null)?.code === 'PROTOCOL_SEQUENCE_TIMEOUT') {
        // The statement may still run on the server and answer later: this connection cannot be reused.
        const deadline = new QueryDeadlineExceeded(limit);
        connection[kLostError] ??= deadline;
        connection.stream?.destroy();
        return (callback as (...r: unknown[]) => unknown)(deadline);
      }
      return (callback as (...r: unknown[]) => unknown)(error, ...results);
    };
    sent.command = query(...args) as QueryCommand;
    return sent.command;
  };
  return connection;
}

/**
 * The waits on the server of a query sent without a callback (TypeORM's `stream()`), which mysql2
 * answers only with events ('fields', 'result' per row, 'end', 'error'):
 * - each wait (until its first row, each next row, its end) has the deadline `timeoutMs`, as
 *   cell-client.ts bounds each batch of a PostgreSQL cursor; the time its connection is paused (its
 *   stream's consumer does not read) is not counted. A wait that passes the deadline records the
 *   loss (QueryDeadlineExceeded), destroys the connection's socket and fails the query with it;
 * - a connection lost while it runs fails it: mysql2 gives the error of a query without a callback
 *   to its connection only, and the query's stream would wait for ever.
 * The stream then fails (typed by query-builder.ts) and its release destroys the connection.
 */
class StreamWait {
  private timer: NodeJS.Timeout | undefined;
  private paused = false;
  private done = false;

  private constructor(
    private readonly connection: PoolConnection,
    private readonly command: QueryCommand,
    private readonly timeoutMs: number,
  ) {}

  /** Bounds the waits of `command`, just sent on `connection`; returns `command`. */
  static start(connection: PoolConnection, command: QueryCommand, timeoutMs: number): QueryCommand {
    const wait = new StreamWait(connection, command, timeoutMs);
    // Each row or column list ends a wait and starts the next.
    command.on('fields', () => wait.arm());
    command.on('result', () => wait.arm());
    // Also an 'error' listener for the query's whole life: emitted after its stream was destroyed,
    // an error without one would be thrown.
    command.on('end', () => wait.finish());
    command.on('error', () => wait.finish());
    connection[kStreamWait] = wait;
    wait.arm();
    const lost = connection[kLostError];
    // A closed connection answers within query(): failed once TypeORM has made the query's stream.
    if (lost !== undefined) process.nextTick(() => wait.fail(lost));
    return command;
  }

  /** The consumer stopped reading: no wait on the server until it reads again. */
  pause(): void {
    this.paused = true;
    this.clear();
  }

  resume(): void {
    this.paused = false;
    this.arm();
  }

  /** Fails the query with `error` (once; not after it ended). */
  fail(error: unknown): void {
    if (this.done) return;
    this.finish();
    this.command.emit('error', error);
  }

  private arm(): void {
    this.clear();
    if (this.done || this.paused || this.timeoutMs <= 0) return;
    this.timer = setTimeout(() => this.expire(), this.timeoutMs);
  }

  private expire(): void {
    // The statement may still run on the server and answer later: this connection cannot be reused.
    const deadline = new QueryDeadlineExceeded(this.timeoutMs);
    this.connection[kLostError] ??= deadline;
    this.connection.stream?.destroy();
    this.fail(deadline);
  }

  private finish(): void {
    this.done = true;
    this.clear();
    if (this.connection[kStreamWait] === this) this.connection[kStreamWait] = undefined;
  }

  private clear(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }
}

/**
 * Every query runner of `dataSource` destroys its connection, rather than handing it back to the
 * pool, when released inside a transaction (TypeORM's `isTransactionActive`) or after it was lost.
 */
function guardRelease(dataSource: DataSource): void {
  const driver = dataSource.driver as unknown as MysqlDriverInternals;
  const create = driver.createQueryRunner.bind(driver);
  driver.createQueryRunner = (mode) => {
    const runner = create(mode);
    const release = runner.release.bind(runner);
    runner.release = () => {
      const connection = (runner as unknown as { databaseConnection?: PoolConnection }).databaseConnection;
      if (connection !== undefined && (runner.isTransactionActive || connection[kLostError] !== undefined)) {
        connection.destroy();
      }
      return release();
    };
    return runner;
  };
}
