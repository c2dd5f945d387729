import { inspect } from 'node:util';
import {
  DataSource,
  type EntityManager,
  type EntityTarget,
  type ObjectLiteral,
  type Repository,
} from 'typeorm';
import type { IsolationLevel } from 'typeorm/driver/types/IsolationLevel';
import type { CellMapping } from '../entities';
import { functionArg, objectArg } from './arguments';
import { CellDataSources } from './cell-data-sources';
import { cellQueryTimeouts, shutdownTimeout, validateOptions, type CellsOptions, type CellsStats } from './cells-options';
import { forceClose } from './forced-close';
import {
  DEFAULTS,
  apiDataSourceOptions,
  cellDataSourceOptions,
  closeDataSource,
  connect,
  guardedDataSource,
  databaseOptions,
  secretSettings,
  sharedOptionsFor,
  type CreateDataSource,
  type DatabaseOptions,
} from './data-source-options';
import { MetadataTemplate } from './metadata-template';
import { migrateLocked } from './migration-lock';
import {
  RequestContext,
  bindContext,
  cellUuidOf,
  targetCell,
  type CellRef,
  currentContext,
  kApiTransaction,
  kMainTransaction,
} from './context';
import {
  CellsNotReadyError,
  InvalidArgumentError,
  NoContextError,
  NoTargetCellError,
} from './errors';
import { CellMappings, openedFrom } from './mappings';
import { CellReaders } from './cell-readers';
import { scatterGather, type CellTask, type ScatterGatherAllOptions, type ScatterGatherOptions, type ScatterGatherResult } from './scatter';
import type { DataSourceRegistry } from './registry';
import { API_KEY, API_LABEL, MAIN_KEY, MAIN_LABEL, StaticRoute, routeKey, type Route } from './route';
import { createRoutedRepository, type DatabaseSelector } from './repository';
import { ServerBudgets } from './server-budget';
import { TransactionRoute, runTransaction } from './transaction';
import { Telemetry } from './telemetry';
import { RouteTelemetry } from './telemetry-attributes';
import { SchemaGate } from './schema-gate';

/**
 * The `Cells` facade: its lifecycle (initialize, destroy) and its public entry points, each a few
 * lines over the modules that do the work. Longer than ~300 lines because every public method
 * carries its TSDoc. The route of a call is chosen in `route()` from route.ts's pieces; the cell
 * DataSources live in cell-data-sources.ts, their options in data-source-options.ts, the options of
 * Cells in cells-options.ts, transactions in transaction.ts, mappings in mappings.ts.
 */

/**
 * After a forced close, the most destroy() waits for the sockets to close and the pools, the
 * mapping listener and the static DataSources to end; it resolves as soon as they have.
 */
const FORCED_CLOSE_WAIT_MS = 1_000;

// No `implements RepositoryRouter`: the published declarations leave internal interfaces out
// (stripInternal), so they must not name it; createRoutedRepository(this, ...) checks the shape.
/**
 * Routes TypeORM repositories to the cell database named by the current request context, over an
 * LRU-cached registry of cell DataSources resolved through the API database's CellMapping.
 */
/** The isolation levels PostgreSQL runs (TypeORM's names; `SNAPSHOT` is SQL Server's). */
const ISOLATION_LEVELS: readonly IsolationLevel[] = ['READ UNCOMMITTED', 'READ COMMITTED', 'REPEATABLE READ', 'SERIALIZABLE'];

export class Cells {
  /** Cell, instance and host lookups in the API database. Available after `initialize()`. */
  mappings!: CellMappings;
  private readonly options: CellsOptions;
  private readonly apiDataSource: DataSource;
  private readonly mainDataSource: DataSource | undefined;
  /** The cell entities' metadata, built once and shared by every cell DataSource. */
  private readonly metadata: MetadataTemplate;
  private readonly registry: DataSourceRegistry;
  private readonly repositories = new Map<string, Map<EntityTarget<ObjectLiteral>, Repository<ObjectLiteral>>>([
    ['api', new Map()],
    ['main', new Map()],
  ]);
  private state: 'new' | 'initializing' | 'ready' | 'destroying' | 'destroyed' = 'new';
  private destroyed: Promise<void> | undefined;
  /** The close of the API and main DataSources, shared by the graceful and the forced path. */
  private staticClosed: Promise<void> | undefined;
  private apiRoute!: StaticRoute;
  private mainRoute: StaticRoute | undefined;
  /** The cell DataSources, kept in step with their CellMappings. */
  private readonly cells: CellDataSources;
  /** The connection each open cell DataSource was opened with (filled by `cells`). */
  private readonly cellConnections = new Map<string, string>();
  /** The connection budget of each cell server (`maxConnectionsPerServer`); none when unset. */
  private readonly budgets: ServerBudgets | undefined;
  /** The `requireSchema` gate, built in `initialize()` from the cell migrations; undefined when off. */
  private schemaGate: SchemaGate | undefined;
  /** Spans and metrics (the `telemetry` option); started in `initialize()`. @internal */
  readonly telemetry: Telemetry;

  /** @throws InvalidArgumentError for invalid options; BadConnectionUrlError for a bad URL. */
  constructor(options: CellsOptions) {
    this.options = validateOptions(options);
    this.telemetry = new Telemetry(options.telemetry);
    const queryTimeouts = cellQueryTimeouts(options.cellQueryTimeoutMs);
    const budget = options.maxConnectionsPerServer ?? DEFAULTS.maxConnectionsPerServer;
    this.budgets = budget === undefined ? undefined : new ServerBudgets(budget);
    // The API database's pool (and the mapping listener) draw from no budget: see maxConnectionsPerServer.
    this.apiDataSource = this.guardedDataSource(apiDataSourceOptions(options), API_LABEL, 'api', undefined, undefined, false);
    this.mainDataSource =
      options.main === undefined
        ? undefined
        : this.guardedDataSource(
            mainOptions(cellDataSourceOptions(options), databaseOptions(options.main, MAIN_LABEL, secretSettings(options))),
            MAIN_LABEL,
            'main',
          );
    this.metadata = new MetadataTemplate(cellDataSourceOptions(options), (ctx) => this.route('main', ctx));
    this.cells = new CellDataSources({
      options: this.options,
      cellQueryTimeouts: queryTimeouts,
      cellConnections: this.cellConnections,
      mappings: () => this.mappings,
      ready: () => this.state === 'ready',
      schemaGate: () => this.schemaGate,
      telemetry: this.telemetry,
      guardedDataSource: (dataSourceOptions, label, queryTimeoutMs, poolName, readOnly) =>
        this.guardedDataSource(dataSourceOptions, label, poolName, queryTimeoutMs, (given) => this.metadata.dataSource(given), true, readOnly),
      readerDataSource: (dataSourceOptions, label, queryTimeoutMs) => this.guardedDataSource(dataSourceOptions, label, label, queryTimeoutMs),
      prepareEngine: (engine, label) => this.metadata.prepare(engine, label),
    });
    this.registry = this.cells.registry;
  }

  /** A summary without connection options: `util.inspect` never shows a URL or password. */
  [inspect.custom](): string {
    return `Cells ${inspect(this.toJSON())}`;
  }

  /** The state and registry counters; no connection options. */
  toJSON(): Record<string, unknown> {
    return { state: this.state, stats: this.stats() };
  }

  /**
   * Connects the API database (and the default main database), migrating the API database when
   * `migrateApi` is set. Cell databases open lazily on first use.
   * @throws CellUnreachableError when the API or main database cannot be reached.
   * @throws MigrationLockTimeoutError when `migrateApi` waited `migrateApiLockTimeoutMs` for
   * another process migrating the API database.
   */
  async initialize(): Promise<this> {
    if (this.state !== 'new') throw new InvalidArgumentError(`initialize() was already called (state: ${this.state}).`);
    this.state = 'initializing';
    this.telemetry.start({
      dataSources: () => this.registry.stats(),
      mappingCache: () => this.mappings?.cacheCountsByKind() ?? NO_LOOKUPS,
      listening: () => this.mappings?.cacheStats().listening ?? false,
    });
    try {
      await connect(this.apiDataSource, API_LABEL);
      if (this.options.migrateApi) {
        // Under the lock `api-db migrate` takes: processes starting at once on a fresh API
        // database would otherwise all create its tables.
        const lockTimeoutMs = this.options.migrateApiLockTimeoutMs ?? DEFAULTS.migrationLockTimeoutMs;
        await migrateLocked(this.apiDataSource, API_LABEL, lockTimeoutMs, 'migrateApiLockTimeoutMs');
      }
      if (this.mainDataSource) await connect(this.mainDataSource, MAIN_LABEL);
      // Entity metadata for create()/merge()/query builders and every cell, built once without a connection.
      await this.metadata.build();
      this.schemaGate = SchemaGate.of(this.options.requireSchema ?? false, this.metadata.migrations);
    } catch (error) {
      await this.closeStatic();
      this.staticClosed = undefined;
      this.state = 'new';
      throw error;
    }
    this.apiRoute = new StaticRoute(this.apiDataSource.manager, API_LABEL, routeTelemetryOf(this.apiDataSource));
    this.mainRoute = this.mainDataSource
      ? new StaticRoute(this.mainDataSource.manager, MAIN_LABEL, routeTelemetryOf(this.mainDataSource))
      : undefined;
    this.mappings = new CellMappings(this.apiDataSource, {
      ...(this.options.mappingCache ? { cache: this.options.mappingCache } : {}),
      onCellReconnect: (uuid) => this.cells.retire(uuid),
      onResync: () => void this.cells.resync(),
      onCellMigrated: (uuid) => this.cells.recheckSchema(uuid),
      onCellLoaded: (cell) => this.cells.check(cell.uuid, openedFrom(cell)),
      // A mapping write is a call on the API database: destroy() waits for a running one and
      // refuses a new one.
      onWrite: () => {
        if (this.state !== 'ready') throw this.notReady();
        const route = this.apiRoute.acquire();
        return () => route.release();
      },
    });
    this.cells.startRevalidation(this.options.mappingCache?.ttlMs ?? DEFAULTS.mappingCacheTtlMs);
    await this.mappings.listen();
    this.state = 'ready';
    return this;
  }

  /**
   * Closes every DataSource: cell DataSources once their running calls finish (a running
   * transaction may still run statements; new calls throw CellsNotReadyError), then the API and
   * main databases. Resolves once no handle and no server connection is left. When `timeoutMs`
   * (default: the `shutdownTimeoutMs` option) has passed, every pool is closed by force: calls
   * waiting for a pooled connection fail with CellsNotReadyError, running statements are cancelled
   * on the server and their calls fail, the mapping listener stops without waiting for the cells;
   * it resolves once the sockets are closed, at most 1 s later. Concurrent and repeated calls
   * return the same promise.
   * @throws InvalidArgumentError for a `timeoutMs` that is not an integer from 0 to 2147483647.
   */
  destroy(options: { timeoutMs?: number } = {}): Promise<void> {
    let timeoutMs: number;
    try {
      timeoutMs = shutdownTimeout(options, this.options.shutdownTimeoutMs);
    } catch (error) {
      return Promise.reject(error);
    }
    // Concurrent and repeated calls all wait for the one shutdown.
    this.destroyed ??= this.shutdown(timeoutMs);
    return this.destroyed;
  }

  private async shutdown(timeoutMs: number): Promise<void> {
    const wasReady = this.state === 'ready';
    this.state = 'destroying';
    const graceful = this.closeGracefully(wasReady);
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'deadline'>((resolve) => (timer = setTimeout(() => resolve('deadline'), timeoutMs)));
    try {
      const first = await Promise.race([graceful.then(() => 'closed' as const), deadline]);
      if (first === 'deadline') {
        // Calls still running (on a server that stopped answering, say) or waiting for a pooled
        // connection: close every pool by force, so they fail at once and the close completes.
        const forced = this.closeByForce();
        await Promise.race([Promise.allSettled([graceful, forced]), sleep(FORCED_CLOSE_WAIT_MS)]);
      }
    } finally {
      clearTimeout(timer);
      this.telemetry.stop();
      this.state = 'destroyed';
    }
  }

  /**
   * The forced path: ends every pool (cells and their readers, API, main) and destroys its sockets,
   * then stops the mapping listener (or poller) and closes the API and main DataSources without
   * waiting for the cells' drain, which may be stuck. Never rejects.
   */
  private async closeByForce(): Promise<void> {
    this.registry.forceClose((dataSource) => {
      forceClose(dataSource);
      for (const reader of CellReaders.dataSourcesOf(dataSource)) forceClose(reader);
    });
    forceClose(this.apiDataSource);
    if (this.mainDataSource !== undefined) forceClose(this.mainDataSource);
    await Promise.allSettled([this.mappings?.close(), this.closeStatic()]);
  }

  private async closeGracefully(wasReady: boolean): Promise<void> {
    await this.registry.destroy();
    // Running calls on the API and main databases finish, like cell calls.
    if (wasReady) await Promise.all([this.apiRoute.drained(), this.mainRoute?.drained()]);
    await this.mappings?.close();
    await this.closeStatic();
  }

  /**
   * A TypeORM Repository of `entity` routed at each call: `'api'` to the API database, `'main'`
   * (default) to the cell of the current context, or the default main database when untargeted.
   * Cached per entity and database; needs no context to create.
   */
  getRepository<T extends ObjectLiteral>(entity: EntityTarget<T>, db: DatabaseSelector = 'main'): Repository<T> {
    const byEntity = this.repositories.get(db);
    if (byEntity === undefined) throw new InvalidArgumentError(`db must be 'api' or 'main', got ${String(db).slice(0, 40)}.`);
    let repo = byEntity.get(entity);
    if (repo === undefined) {
      repo = createRoutedRepository(this, entity as EntityTarget<ObjectLiteral>, db);
      byEntity.set(entity, repo);
    }
    return repo as unknown as Repository<T>;
  }

  /**
   * Runs `fn` in a transaction on the current context's database (`db: 'api'` for the API
   * database); routed repositories used inside join it. A nested call runs in a savepoint; nested
   * calls started together run one at a time on the transaction's connection, so one that throws
   * rolls back only its own work. Work that outlives the transaction (a timer, a bound listener)
   * runs outside it, on the context's database, as if no transaction had been opened.
   * @throws NoContextError for `'main'` outside a context; CellSwitchInTransactionError when `fn`
   * targets another database; CellUnreachableError when the connection is lost; CellBusyError
   * when no pooled connection frees up within `acquireTimeoutMs`; InvalidArgumentError when `fn`
   * is not a function, `options` not an object, `db` not `'api'`/`'main'`, or `isolation` not one
   * of PostgreSQL's four levels.
   */
  async transaction<T>(
    fn: (manager: EntityManager) => Promise<T>,
    options: { db?: DatabaseSelector; isolation?: IsolationLevel } = {},
  ): Promise<T> {
    functionArg(fn, 'The transaction callback');
    const { db = 'main', isolation } = objectArg(options, 'The transaction options');
    if (db !== 'main' && db !== 'api') throw new InvalidArgumentError(`db must be 'api' or 'main'.`);
    if (isolation !== undefined && !ISOLATION_LEVELS.includes(isolation)) {
      throw new InvalidArgumentError(`isolation must be one of ${ISOLATION_LEVELS.join(', ')}.`);
    }
    const slot = db === 'main' ? kMainTransaction : kApiTransaction;
    const ctx = currentContext() ?? (db === 'api' ? new RequestContext() : undefined);
    if (ctx === undefined) throw new NoContextError('cells.transaction()');
    const outer = this.joinedTransaction(ctx, slot);
    // Started while the enclosing transaction's callback runs: a savepoint of it. Started later
    // (from a timer, say), `outer` is undefined and it is a transaction of its own.
    if (outer !== undefined) return outer.nested(ctx, slot, fn);
    const route = await this.route(db, ctx);
    try {
      return await runTransaction(this, route, routeKey(db, ctx.cellUuid), ctx, slot, isolation, fn);
    } finally {
      route.release();
    }
  }

  /** @internal */
  transactionManager(db: DatabaseSelector): EntityManager | undefined {
    return this.joinedTransaction(currentContext(), db === 'api' ? kApiTransaction : kMainTransaction)?.manager;
  }

  /** The running transaction of `ctx` on the database of `slot` opened by this Cells, if any. */
  private joinedTransaction(ctx: RequestContext | undefined, slot: typeof kMainTransaction | typeof kApiTransaction): TransactionRoute | undefined {
    const tx = ctx?.[slot];
    if (tx === undefined || tx.owner !== this) return undefined;
    return (tx as TransactionRoute).active();
  }

  /** Returns `fn` bound to the current request context; see `bindContext`. */
  bind<A extends unknown[], R>(fn: (...args: A) => R): (...args: A) => R {
    return bindContext(fn);
  }

  /**
   * Registry counters (open DataSources, hits, misses, evictions, initialisations in flight) and,
   * with `maxConnectionsPerServer`, each server's budget: connections in use and waiting.
   */
  stats(): CellsStats {
    return { ...this.registry.stats(), servers: this.budgets?.stats() ?? [] };
  }

  /**
   * Closes the DataSource of a cell once its running calls (and transactions, and streams) have
   * finished; the next call to the cell opens it again from its current CellMapping. For operators:
   * after changing a cell's database outside the library, or to drop its connections. Does nothing
   * when the cell is not open.
   * @throws InvalidArgumentError for a malformed uuid.
   */
  evictCell(uuid: string): void {
    const key = cellUuidOf(uuid);
    // The reopen reads the mapping anew, also when it was changed with plain SQL within the TTL.
    this.mappings?.forgetCell(key);
    this.cells.retire(key);
  }

  /**
   * Reopens a cell with its current secret after a rotation: its DataSource is drained as by
   * `evictCell` (running calls, transactions and streams finish on their connections), and the next
   * call opens it anew, reading its CellMapping again and resolving the secret reference of its URL
   * (`?password=env:...`, `file:...`, `resolveSecret`) again. Between the two, new connections of
   * the old DataSource still use the secret resolved when it opened (and resolve it again once if
   * the server refuses it). A mapping write to the cell (`cells.mappings.updateCell`) reopens it
   * too. Does nothing when the cell is not open.
   * @param uuid - the cell's uuid.
   * @throws InvalidArgumentError for a malformed uuid.
   */
  reloadCell(uuid: string): void {
    this.evictCell(uuid);
  }

  /**
   * Looks up the cell holding an instance (cached) and runs `fn` targeted at it, as `targetCell`.
   * @throws UnknownInstanceError when the instance is unmapped or not placed in a cell yet;
   * InvalidArgumentError for a malformed uuid; whatever `fn` throws.
   */
  async targetInstanceCell<T>(instanceUuid: string, fn: (cell: CellMapping) => T | Promise<T>): Promise<T> {
    if (this.state !== 'ready') throw this.notReady();
    const cell = await this.mappings.instanceCell(instanceUuid);
    return targetCell(cell, () => fn(cell));
  }

  /**
   * Runs `fn` once in each of `cells` (CellMappings or uuids), inside `targetCell(cell)`, in parallel
   * up to `concurrency`, and gathers the results by cell uuid. A cell that throws yields RaisedError
   * and one that misses the deadline yields DidNotRespond; neither affects the other cells.
   * @param options timeoutMs (default 30000), concurrency (default all), signal.
   * @throws InvalidArgumentError for a malformed cell or option; ScatterGatherAbortedError when
   * `options.signal` aborts first.
   */
  async scatterGather<T>(
    cells: readonly CellRef[],
    fn: CellTask<T>,
    options: ScatterGatherOptions = {},
  ): Promise<ScatterGatherResult<T>> {
    if (this.state !== 'ready') throw this.notReady();
    return scatterGather(cells, fn, options, (uuid) => this.mappings.cellByUuid(uuid), this.telemetry);
  }

  /**
   * `scatterGather` over every mapped cell (cached list): cell0 included unless `includeCell0:
   * false`; disabled cells (state `'disabled'`) left out unless `includeDisabled: true`, and then
   * their routed calls fail with CellDisabledError (reported as RaisedError). Cells of every other
   * state are gathered; writes to a read-only cell fail with CellReadOnlyError.
   * @throws as `scatterGather`.
   */
  async scatterGatherAll<T>(fn: CellTask<T>, options: ScatterGatherAllOptions = {}): Promise<ScatterGatherResult<T>> {
    if (this.state !== 'ready') throw this.notReady();
    const { includeCell0, includeDisabled, ...gather } = objectArg(options, 'scatterGatherAll options');
    const cells = await this.mappings.allCells({ includeCell0, includeDisabled: includeDisabled ?? false });
    return this.scatterGather(cells, fn, gather);
  }

  /** @internal */
  route(db: DatabaseSelector, ctx: RequestContext | undefined = currentContext()): Route | Promise<Route> {
    if (ctx !== undefined) {
      // A call of a running transaction joins it (also while destroy() waits for it to finish).
      const joined = this.joinedTransaction(ctx, db === 'api' ? kApiTransaction : kMainTransaction);
      if (joined !== undefined) return joined.whenFree();
    }
    if (this.state !== 'ready' && !(this.state === 'destroying' && this.inRunningTransaction(ctx))) {
      throw this.notReady();
    }
    if (db !== 'api' && ctx === undefined) throw new NoContextError(`A routed 'main' call`);
    const key = routeKey(db, ctx?.cellUuid ?? null);
    if (key === API_KEY) return this.apiRoute.acquire();
    if (key === MAIN_KEY) {
      if (this.mainRoute === undefined) throw new NoTargetCellError();
      return this.mainRoute.acquire();
    }
    return this.registry.acquire(key);
  }

  /**
   * True when `ctx` belongs to a running transaction of this Cells: while destroy() waits for that
   * transaction, its other calls (an API read inside a cell transaction, say) may still run.
   */
  private inRunningTransaction(ctx: RequestContext | undefined): boolean {
    return this.joinedTransaction(ctx, kMainTransaction) !== undefined || this.joinedTransaction(ctx, kApiTransaction) !== undefined;
  }

  private notReady(): CellsNotReadyError {
    return new CellsNotReadyError(this.state === 'destroyed' || this.state === 'destroying' ? 'destroyed' : 'uninitialized');
  }

  /**
   * A manager whose metadata describes `db`'s entities. Needs no connection, so metadata-only calls
   * (`create`, `merge`, building a query) work from `initialize()` on, also during and after destroy().
   * @internal
   */
  metadataManager(db: DatabaseSelector): EntityManager {
    if (this.state === 'new' || this.state === 'initializing') throw new CellsNotReadyError('uninitialized');
    return db === 'api' ? this.apiDataSource.manager : this.metadata.manager;
  }

  /** A guarded DataSource (see `guardedDataSource`) with this Cells' bounds. */
  private guardedDataSource(
    options: DatabaseOptions,
    label: string,
    poolName: string,
    queryTimeoutMs = this.options.queryTimeoutMs ?? DEFAULTS.queryTimeoutMs,
    create?: CreateDataSource,
    budgeted = true,
    readOnly = false,
  ): DataSource {
    return guardedDataSource(
      options,
      label,
      {
        ...(this.options.connectTimeoutMs === undefined ? {} : { connectTimeoutMs: this.options.connectTimeoutMs }),
        queryTimeoutMs,
        acquireTimeoutMs: this.options.acquireTimeoutMs ?? DEFAULTS.acquireTimeoutMs,
        budget: budgeted ? this.budgets?.of(options.host, options.port) : undefined,
        readOnly,
        observer: this.telemetry.poolObserver(poolName),
      },
      create,
    );
  }

  /** Closes the API and main DataSources; concurrent and repeated calls share one close. */
  private closeStatic(): Promise<void> {
    this.staticClosed ??= this.closeStaticOnce();
    return this.staticClosed;
  }

  private async closeStaticOnce(): Promise<void> {
    this.cells.stopRevalidation();
    for (const ds of [this.mainDataSource, this.apiDataSource]) {
      if (ds?.isInitialized) await closeDataSource(ds);
    }
  }
}

/**
 * Options of the default main database: the cells' shared options under its own; for a MySQL or
 * MariaDB one, without the shared PostgreSQL-only options.
 */
function mainOptions(shared: object, main: DatabaseOptions): DatabaseOptions {
  return { ...sharedOptionsFor(main.type, shared), ...main } as DatabaseOptions;
}

/** Mapping-cache counters before the mappings exist. */
const NO_LOOKUPS = Object.freeze({
  cell: { hits: 0, misses: 0, loads: 0 },
  instance: { hits: 0, misses: 0, loads: 0 },
  host: { hits: 0, misses: 0, loads: 0 },
});

/** The span attributes of the API or main database, from its options (never its password). */
function routeTelemetryOf(dataSource: DataSource): RouteTelemetry {
  const { type, host, port, database } = dataSource.options as { type: string; host?: string; port?: number; database?: string };
  return new RouteTelemetry({ type, host, port, database });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
