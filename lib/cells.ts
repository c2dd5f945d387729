import { inspect } from 'node:util';
import {
  DataSource,
  type DataSourceOptions,
  type EntityManager,
  type EntityTarget,
  type ObjectLiteral,
  type QueryRunner,
  type Repository,
} from 'typeorm';
import type { IsolationLevel } from 'typeorm/driver/types/IsolationLevel';
import { API_ENTITIES, type CellMapping } from '../entities';
import { API_MIGRATIONS } from '../migrations';
import { booleanArg } from './arguments';
import { messageOf, translateConnectionError, watchConnectionLoss } from './connection-errors';
import { parseConnectionUrl } from './connection-url';
import {
  RequestContext,
  bindContext,
  targetCell,
  type CellRef,
  currentContext,
  kApiTransaction,
  kMainTransaction,
  runInternal,
  type ActiveTransaction,
} from './context';
import {
  CellUnreachableError,
  CellsError,
  CellsNotReadyError,
  InvalidArgumentError,
  NoContextError,
  NoTargetCellError,
} from './errors';
import { CellMappings } from './mappings';
import type { MappingCacheOptions } from './mapping-cache';
import { scatterGather, type CellTask, type ScatterGatherAllOptions, type ScatterGatherOptions, type ScatterGatherResult } from './scatter';
import { maskDataSourceLogger } from './masked-logger';
import { DataSourceRegistry, closeDataSource, type OpenedCell, type RegistryEvent, type RegistryStats, type Route } from './registry';
import { createRoutedRepository, type DatabaseSelector, type Router } from './repository';

/** TypeORM options of a PostgreSQL DataSource. */
export type PostgresOptions = Extract<DataSourceOptions, { type: 'postgres' }>;

/** A database given as a `postgres://` URL or as TypeORM PostgreSQL options. */
export type DatabaseConfig = string | Omit<PostgresOptions, 'type'>;

/** TypeORM options shared by every cell DataSource; connection fields come from each CellMapping. */
export type CellDataSourceOptions = Omit<
  PostgresOptions,
  'type' | 'url' | 'host' | 'port' | 'username' | 'password' | 'database' | 'entities' | 'migrations' | 'name'
>;

/** Something typeorm-cells reports to the `logger` option; never carries a connection string. */
export type CellsLogEvent = RegistryEvent;

/** Options of `new Cells()`. Only `api` is required. */
export interface CellsOptions {
  /**
   * The API database (cell, instance and host mappings), as a URL or TypeORM options. The mapping
   * entities and the API migrations are added to what you pass.
   */
  api: DatabaseConfig;
  /**
   * The default main database, used by `'main'` repositories in an untargeted context. Without it,
   * such calls throw NoTargetCellError rather than silently picking a database. Default: none.
   */
  main?: DatabaseConfig;
  /** Entities of the cell databases (and of the default main database). */
  entities: NonNullable<PostgresOptions['entities']>;
  /** Migrations of the cell databases, applied per cell by the CLI. Default: none. */
  migrations?: PostgresOptions['migrations'];
  /**
   * Further TypeORM options for every cell DataSource (logging, namingStrategy, subscribers...).
   * Connection fields (`url`, `host`, `port`, `username`, `password`, `database`, `replication`,
   * `ssl`..., also inside `extra`) and the fields set from other options (`type`, `entities`,
   * `migrations`, `poolSize`, `connectTimeoutMS`) are refused: each cell's connection comes from
   * its CellMapping. Default: none.
   */
  cellDataSourceOptions?: CellDataSourceOptions;
  /**
   * Most cell DataSources open at once (LRU bound); opening one more evicts the least recently
   * used. Bounds server connections at `maxOpenCells * poolSize`. From 1 to 10000. Default: 64.
   */
  maxOpenCells?: number;
  /**
   * Close a cell DataSource unused for this many ms; 0 never closes idle ones. At most 2147483647
   * (about 24.8 days, Node's timer limit). Default: 300000 (5 min).
   */
  idleTimeoutMs?: number;
  /** Connections in each cell's pool. From 1 to 1000. Default: 5. */
  poolSize?: number;
  /** Give up connecting to a cell after this many ms. From 1 to 2147483647. Default: 5000. */
  connectTimeoutMs?: number;
  /** Run the API database migrations in `initialize()` (a boolean; `'false'` is refused). Default: false. */
  migrateApi?: boolean;
  /**
   * Receives registry events (opens, evictions, closes, failures) for logging. What it throws or
   * rejects with is ignored: a broken logger never fails a call or stops a close. Default: none.
   */
  logger?: (event: CellsLogEvent) => void;
  /**
   * Bounds of the cache of cell, instance and host lookups (`cells.mappings`). Writes through the
   * library invalidate it at once in every process sharing the API database (PostgreSQL
   * LISTEN/NOTIFY, one extra API connection per process), so `ttlMs` only bounds staleness after
   * changes made with plain SQL. LISTEN needs a session connection: not through a transaction-mode
   * pooler. `max` from 1 to 1000000, `ttlMs` from 1 to 2147483647. Default: `{ max: 10000, ttlMs: 60000 }`.
   */
  mappingCache?: MappingCacheOptions;
}

/** Counters of the DataSource registry; see RegistryStats. */
export type CellsStats = RegistryStats;

/** The table recording the API database's migrations; the CLI's `api-db` commands share it. */
export const API_MIGRATIONS_TABLE = 'cells_api_migrations';

const API_KEY = 'api';
const MAIN_KEY = 'main';

/** A database that is always open while Cells is ready: the API or the default main database. */
class StaticRoute implements Route {
  constructor(
    readonly manager: EntityManager,
    readonly label: string,
  ) {}
  release(): void {}
}

/** An open transaction; routed repositories of its database join it instead of taking a lease. */
class TransactionRoute implements Route, ActiveTransaction {
  constructor(
    readonly owner: object,
    readonly key: string,
    readonly label: string,
    readonly manager: EntityManager,
  ) {}
  release(): void {}

  /** False once the transaction ended (TypeORM released its query runner). */
  get running(): boolean {
    return this.manager.queryRunner?.isReleased === false;
  }
}

/**
 * Routes TypeORM repositories to the cell database named by the current request context, over an
 * LRU-cached registry of cell DataSources resolved through the API database's CellMapping.
 */
export class Cells implements Router {
  /** Cell, instance and host lookups in the API database. Available after `initialize()`. */
  mappings!: CellMappings;
  private readonly options: CellsOptions;
  private readonly apiDataSource: DataSource;
  private readonly mainDataSource: DataSource | undefined;
  private readonly templateDataSource: DataSource;
  private readonly registry: DataSourceRegistry;
  private readonly repositories = new Map<string, Map<EntityTarget<ObjectLiteral>, Repository<ObjectLiteral>>>([
    ['api', new Map()],
    ['main', new Map()],
  ]);
  private state: 'new' | 'initializing' | 'ready' | 'destroyed' = 'new';
  private apiRoute!: StaticRoute;
  private mainRoute: StaticRoute | undefined;
  /** The connection each cell DataSource was opened with, to find stale ones after a listener outage. */
  private readonly cellConnections = new Map<string, string>();

  /** @throws InvalidArgumentError for invalid options; BadConnectionUrlError for a bad URL. */
  constructor(options: CellsOptions) {
    this.options = validateOptions(options);
    this.apiDataSource = new DataSource({
      ...postgresOptions(options.api, 'api'),
      entities: [...API_ENTITIES, ...entityList(options.api)],
      migrations: [...API_MIGRATIONS],
      migrationsTableName: API_MIGRATIONS_TABLE,
    });
    this.mainDataSource =
      options.main === undefined
        ? undefined
        : new DataSource({ ...this.cellOptions(), ...postgresOptions(options.main, 'main') });
    this.templateDataSource = new DataSource({
      ...this.cellOptions(),
      type: 'postgres',
    });
    this.registry = new DataSourceRegistry({
      maxOpen: options.maxOpenCells ?? 64,
      idleTimeoutMs: options.idleTimeoutMs ?? 300_000,
      open: (key) => this.openCell(key),
      onEvent: (event) => {
        this.forgetClosedCell(event);
        // Returned, so that the registry also contains the rejection of an async logger.
        return options.logger?.(event);
      },
    });
  }

  /**
   * Drops the connection URL kept for a cell once its DataSource left the registry, so the map
   * holds open cells only and no closed cell's password stays in memory.
   */
  private forgetClosedCell(event: RegistryEvent): void {
    if (
      (event.type === 'evict' && !this.registry.has(event.key)) ||
      (event.type === 'close' && this.state === 'destroyed')
    ) {
      this.cellConnections.delete(event.key);
    }
  }

  /** A summary without connection options: `util.inspect` never shows a URL or password. */
  [inspect.custom](): string {
    return `Cells ${inspect(this.toJSON())}`;
  }

  /** The state and registry counters; no connection options. */
  toJSON(): Record<string, unknown> {
    return { state: this.state, stats: this.registry.stats() };
  }

  /**
   * Connects the API database (and the default main database), migrating the API database when
   * `migrateApi` is set. Cell databases open lazily on first use.
   * @throws CellUnreachableError when the API or main database cannot be reached.
   */
  async initialize(): Promise<this> {
    if (this.state !== 'new') throw new InvalidArgumentError(`initialize() was already called (state: ${this.state}).`);
    this.state = 'initializing';
    try {
      await connect(this.apiDataSource, 'the API database');
      if (this.options.migrateApi) await this.apiDataSource.runMigrations({ transaction: 'all' });
      if (this.mainDataSource) await connect(this.mainDataSource, 'the default main database');
      // Entity metadata for create()/merge()/query builders, built once without a connection.
      await (this.templateDataSource as unknown as { buildMetadatas(): Promise<void> }).buildMetadatas();
    } catch (error) {
      await this.closeStatic();
      this.state = 'new';
      throw error;
    }
    this.apiRoute = new StaticRoute(this.apiDataSource.manager, 'the API database');
    this.mainRoute = this.mainDataSource ? new StaticRoute(this.mainDataSource.manager, 'the default main database') : undefined;
    this.mappings = new CellMappings(this.apiDataSource, {
      ...(this.options.mappingCache ? { cache: this.options.mappingCache } : {}),
      onCellReconnect: (uuid) => {
        this.cellConnections.delete(uuid);
        this.evictCell(uuid);
      },
      onResync: () => void this.resyncCells(),
    });
    await this.mappings.listen();
    this.state = 'ready';
    return this;
  }

  /**
   * Closes every DataSource: cell DataSources once their running calls finish (a running
   * transaction may still run statements; new calls throw CellsNotReadyError), then the API and
   * main databases. Resolves once no handle and no server connection is left. Safe to call twice.
   */
  async destroy(): Promise<void> {
    if (this.state === 'destroyed') return;
    this.state = 'destroyed';
    await this.mappings?.close();
    await this.registry.destroy();
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
   * database); routed repositories used inside join it. Nested calls use a savepoint.
   * @throws NoContextError for `'main'` outside a context; CellSwitchInTransactionError when `fn`
   * targets another database.
   */
  async transaction<T>(
    fn: (manager: EntityManager) => Promise<T>,
    options: { db?: DatabaseSelector; isolation?: IsolationLevel } = {},
  ): Promise<T> {
    const db = options.db ?? 'main';
    if (db !== 'main' && db !== 'api') throw new InvalidArgumentError(`db must be 'api' or 'main'.`);
    const slot = db === 'main' ? kMainTransaction : kApiTransaction;
    const ctx = currentContext() ?? (db === 'api' ? new RequestContext() : undefined);
    if (ctx === undefined) throw new NoContextError('cells.transaction()');
    const outer = ctx[slot];
    if (outer !== undefined && outer.owner === this) {
      // A savepoint on the same connection; like the outermost transaction, its body runs in a copy
      // of the context, so what it changes there (readDeleted, say) does not leak outward.
      const body = () => runInternal(ctx.clone(), () => fn(outer.manager));
      return outer.manager.transaction(body).catch((error: unknown) => {
        throw translateConnectionError(error, outer.label, outer.manager.queryRunner);
      });
    }
    const route = await this.route(db);
    let runner: QueryRunner | undefined;
    let unwatch = (): void => undefined;
    try {
      const key = db === 'api' ? API_KEY : (ctx.dbConnection ?? MAIN_KEY);
      const label = db === 'api' ? 'the API database' : key === MAIN_KEY ? 'the default main database' : `cell ${ctx.cellName ?? key}`;
      const body = (manager: EntityManager) => {
        // A lost connection makes TypeORM release the runner: later statements then fail typed.
        runner = manager.queryRunner;
        unwatch = watchConnectionLoss(runner);
        const inner = ctx.clone();
        inner[slot] = new TransactionRoute(this, key, label, manager);
        return runInternal(inner, () => fn(manager));
      };
      return options.isolation === undefined
        ? await route.manager.transaction(body)
        : await route.manager.transaction(options.isolation, body);
    } catch (error) {
      throw translateConnectionError(error, route.label, runner);
    } finally {
      unwatch();
      route.release();
    }
  }

  /** Returns `fn` bound to the current request context; see `bindContext`. */
  bind<A extends unknown[], R>(fn: (...args: A) => R): (...args: A) => R {
    return bindContext(fn);
  }

  /** Registry counters: open DataSources, hits, misses, evictions, initialisations in flight. */
  stats(): CellsStats {
    return this.registry.stats();
  }

  /** Closes the DataSource of a cell (after its running calls), for example after its mapping changed. */
  evictCell(uuid: string): void {
    this.registry.evict(uuid.toLowerCase());
  }

  /**
   * Looks up the cell holding an instance (cached) and runs `fn` targeted at it, as `targetCell`.
   * @throws UnknownInstanceError when the instance is unmapped or not placed in a cell yet;
   * InvalidArgumentError for a malformed uuid; whatever `fn` throws.
   */
  async targetInstanceCell<T>(instanceUuid: string, fn: (cell: CellMapping) => T | Promise<T>): Promise<T> {
    if (this.state !== 'ready') throw new CellsNotReadyError(this.state === 'destroyed' ? 'destroyed' : 'uninitialized');
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
    if (this.state !== 'ready') throw new CellsNotReadyError(this.state === 'destroyed' ? 'destroyed' : 'uninitialized');
    return scatterGather(cells, fn, options, (uuid) => this.mappings.cellByUuid(uuid));
  }

  /**
   * `scatterGather` over every mapped cell (cached list). Like `mappings.allCells()`, it includes
   * cell0 and disabled cells unless `includeCell0: false` / `includeDisabled: false`.
   * @throws as `scatterGather`.
   */
  async scatterGatherAll<T>(fn: CellTask<T>, options: ScatterGatherAllOptions = {}): Promise<ScatterGatherResult<T>> {
    if (this.state !== 'ready') throw new CellsNotReadyError(this.state === 'destroyed' ? 'destroyed' : 'uninitialized');
    const { includeCell0, includeDisabled, ...gather } = options;
    const cells = await this.mappings.allCells({ includeCell0, includeDisabled });
    return this.scatterGather(cells, fn, gather);
  }

  /** @internal */
  route(db: DatabaseSelector, ctx: RequestContext | undefined = currentContext()): Route | Promise<Route> {
    const tx = ctx?.[db === 'api' ? kApiTransaction : kMainTransaction];
    const joined = tx !== undefined && tx.owner === this ? (tx as TransactionRoute) : undefined;
    // destroy() waits for running transactions, so they may finish their work; nothing else may start.
    if (this.state !== 'ready' && !(joined?.running ?? false)) {
      throw new CellsNotReadyError(this.state === 'destroyed' ? 'destroyed' : 'uninitialized');
    }
    if (joined !== undefined) return joined;
    if (db === 'api') return this.apiRoute;
    if (ctx === undefined) throw new NoContextError(`A routed 'main' call`);
    const key = ctx.dbConnection;
    if (key === null) {
      if (this.mainRoute === undefined) throw new NoTargetCellError();
      return this.mainRoute;
    }
    return this.registry.acquire(key);
  }

  /** @internal */
  metadataManager(db: DatabaseSelector): EntityManager {
    if (this.state !== 'ready') throw new CellsNotReadyError(this.state === 'destroyed' ? 'destroyed' : 'uninitialized');
    return db === 'api' ? this.apiDataSource.manager : this.templateDataSource.manager;
  }

  private cellOptions(): Omit<PostgresOptions, 'host'> {
    const base = this.options.cellDataSourceOptions ?? {};
    const poolSize = this.options.poolSize ?? 5;
    return {
      ...base,
      type: 'postgres',
      entities: this.options.entities,
      migrations: this.options.migrations ?? [],
      poolSize,
      connectTimeoutMS: this.options.connectTimeoutMs ?? 5000,
      extra: { ...(base.extra as object | undefined), max: poolSize },
    };
  }

  private async openCell(key: string): Promise<OpenedCell> {
    for (let attempt = 1; ; attempt++) {
      const cell = await this.mappings.cellByUuid(key);
      const label = `'${cell.name}' (${cell.uuid})`;
      const parts = parseConnectionUrl(cell.databaseConnection, label);
      const dataSource = new DataSource({ ...this.cellOptions(), ...parts });
      await connect(dataSource, `cell ${label}`);
      // A change notified while connecting evicted nothing (this DataSource was not in the registry
      // yet): check the mapping again, a cache hit unless it changed, and reopen if it did.
      const now = await this.mappings.cellByUuid(key).catch(() => undefined);
      if (now?.databaseConnection === cell.databaseConnection || attempt === 3) {
        this.cellConnections.set(key, cell.databaseConnection);
        return { dataSource, label: `cell ${label}` };
      }
      await dataSource.destroy();
    }
  }

  /** After the listener missed notifications, closes DataSources whose cell was deleted or re-pointed. */
  private async resyncCells(): Promise<void> {
    if (this.cellConnections.size === 0 || this.state !== 'ready') return;
    const current = new Map<string, string>();
    try {
      for (const cell of await this.mappings.allCells()) current.set(cell.uuid, cell.databaseConnection);
    } catch {
      current.clear();
    }
    for (const [uuid, connection] of this.cellConnections) {
      if (current.get(uuid) !== connection) {
        this.cellConnections.delete(uuid);
        this.evictCell(uuid);
      }
    }
  }

  private async closeStatic(): Promise<void> {
    for (const ds of [this.mainDataSource, this.apiDataSource]) {
      if (ds?.isInitialized) await closeDataSource(ds);
    }
  }
}

/** Initializes `dataSource`, turning a connection failure into CellUnreachableError with no secrets. */
async function connect(dataSource: DataSource, label: string): Promise<void> {
  maskDataSourceLogger(dataSource);
  try {
    await dataSource.initialize();
  } catch (error) {
    if (error instanceof CellsError) throw error;
    throw new CellUnreachableError(label, messageOf(error), { cause: error });
  }
}

/**
 * TypeORM PostgreSQL options of a database given as a URL or as options (shared with the CLI).
 * @throws InvalidArgumentError for anything else; BadConnectionUrlError for a bad URL.
 */
export function postgresOptions(config: DatabaseConfig, label: string): PostgresOptions {
  if (typeof config === 'string') return { type: 'postgres', ...parseConnectionUrl(config, label) };
  if (config === null || typeof config !== 'object') {
    throw new InvalidArgumentError(`The ${label} database must be a postgres:// URL or TypeORM options.`);
  }
  if (config.url !== undefined) {
    const { url, ...rest } = config;
    return { ...rest, type: 'postgres', ...parseConnectionUrl(url, label) };
  }
  return { ...config, type: 'postgres' };
}

function entityList(config: DatabaseConfig): NonNullable<PostgresOptions['entities']> extends infer E ? E extends readonly (infer I)[] ? I[] : never : never {
  if (typeof config === 'string' || config.entities === undefined) return [];
  return Array.isArray(config.entities) ? [...config.entities] : (Object.values(config.entities) as never);
}

function validateOptions(options: CellsOptions): CellsOptions {
  if (options === null || typeof options !== 'object') throw new InvalidArgumentError('new Cells() needs an options object.');
  if (options.api === undefined) throw new InvalidArgumentError(`The 'api' option (the API database) is required.`);
  if (options.entities === undefined) throw new InvalidArgumentError(`The 'entities' option (cell entities) is required.`);
  // Upper bounds too: lru-cache allocates `max` slots up front (1e9 exhausted the heap, 2**32 threw
  // a RangeError), and Node fires a timer longer than MAX_TIMER_MS at once.
  positiveInteger(options.maxOpenCells, 'maxOpenCells', 1, MAX_OPEN_CELLS);
  positiveInteger(options.poolSize, 'poolSize', 1, MAX_POOL_SIZE);
  positiveInteger(options.idleTimeoutMs, 'idleTimeoutMs', 0, MAX_TIMER_MS);
  positiveInteger(options.connectTimeoutMs, 'connectTimeoutMs', 1, MAX_TIMER_MS);
  positiveInteger(options.mappingCache?.max, 'mappingCache.max', 1, MAX_MAPPING_CACHE);
  positiveInteger(options.mappingCache?.ttlMs, 'mappingCache.ttlMs', 1, MAX_TIMER_MS);
  booleanArg(options.migrateApi, 'migrateApi');
  // Checked here, not where they are first used: a bad logger would otherwise throw a TypeError
  // from inside the registry at the first cell open, long after start-up.
  if (options.logger !== undefined && typeof options.logger !== 'function') {
    throw new InvalidArgumentError(`The 'logger' option must be a function, got ${typeof options.logger}.`);
  }
  for (const name of ['cellDataSourceOptions', 'mappingCache'] as const) {
    const value: unknown = options[name];
    if (value !== undefined && (value === null || typeof value !== 'object' || Array.isArray(value))) {
      throw new InvalidArgumentError(`The '${name}' option must be an object, got ${value === null ? 'null' : typeof value}.`);
    }
  }
  refuseFields(options.cellDataSourceOptions, CELL_FIELDS_REFUSED, 'cellDataSourceOptions');
  refuseFields(options.cellDataSourceOptions?.extra, EXTRA_FIELDS_REFUSED, 'cellDataSourceOptions.extra');
  return options;
}

const MAX_OPEN_CELLS = 10_000;
const MAX_POOL_SIZE = 1_000;
const MAX_MAPPING_CACHE = 1_000_000;
/** Node fires a timer set for longer than this (about 24.8 days) at once. */
const MAX_TIMER_MS = 2_147_483_647;
/** Fields of `cellDataSourceOptions` that would connect every cell to one database, or are ignored. */
const CELL_FIELDS_REFUSED = [
  'url', 'host', 'port', 'username', 'password', 'database', 'replication', 'ssl', 'type', 'name',
  'entities', 'migrations', 'poolSize', 'connectTimeoutMS',
];
/** pg Pool options in `extra`, which TypeORM lets override the connection. */
const EXTRA_FIELDS_REFUSED = [
  'connectionString', 'host', 'port', 'user', 'password', 'database', 'ssl', 'max', 'connectionTimeoutMillis',
];

function refuseFields(value: unknown, fields: readonly string[], where: string): void {
  if (value === null || typeof value !== 'object') return;
  const found = fields.filter((field) => (value as Record<string, unknown>)[field] !== undefined);
  if (found.length > 0) {
    throw new InvalidArgumentError(
      `${where} must not set ${found.map((f) => `'${f}'`).join(', ')}: each cell connects with its CellMapping's ` +
        `URL (sslmode included), and pool size and connect timeout have their own Cells options.`,
    );
  }
}

function positiveInteger(value: number | undefined, name: string, min: number, max: number): void {
  if (value === undefined) return;
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new InvalidArgumentError(`${name} must be an integer from ${min} to ${max}, got ${String(value).slice(0, 20)}.`);
  }
}
