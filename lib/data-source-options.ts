import { DataSource, type DataSourceOptions } from 'typeorm';
import { API_ENTITIES } from '../entities';
import { API_MIGRATIONS } from '../migrations';
import { messageOf } from './connection-errors';
import { guardedPoolOptions, hidePassword } from './cell-client';
import { guardPool } from './connection-pool';
import { SUPPORTED_ENGINES, parseConnectionUrl } from './connection-url';
import { CellUnreachableError, CellsError, InvalidArgumentError, sentenceStart } from './errors';
import { maskDataSourceLogger } from './masked-logger';
import { pgNativeDriver } from './pg-native';
import { rememberScramKeys } from './scram-keys';
import type { ServerBudget } from './server-budget';
import { learnServerVersion } from './server-version';
import { API_LABEL } from './route';

/**
 * The TypeORM options of every DataSource typeorm-cells opens (cells, the API and the default main
 * database, and the CLI's), built in one place from the Cells options; every default of those
 * options (`DEFAULTS`); and how such a DataSource is opened (`connect`) and closed (`closeDataSource`).
 */

/** TypeORM options of a PostgreSQL DataSource. */
export type PostgresOptions = Extract<DataSourceOptions, { type: 'postgres' }>;

/** A database given as a `postgres://` URL or as TypeORM PostgreSQL options. */
export type DatabaseConfig = string | Omit<PostgresOptions, 'type'>;

/** TypeORM options shared by every cell DataSource; connection fields come from each CellMapping. */
export type CellDataSourceOptions = Omit<
  PostgresOptions,
  'type' | 'url' | 'host' | 'port' | 'username' | 'password' | 'database' | 'entities' | 'migrations' | 'name'
>;

/**
 * Every default of the options of typeorm-cells, in one place; each option's TSDoc (CellsOptions,
 * MappingCacheOptions, the CLI's flags) says what it means. Times in ms. @internal
 */
export const DEFAULTS = {
  /** `CellsOptions.maxOpenCells`. */
  maxOpenCells: 64,
  /** `CellsOptions.idleTimeoutMs`: 5 min. */
  idleTimeoutMs: 300_000,
  /** `CellsOptions.poolSize`. */
  poolSize: 5,
  /** `CellsOptions.connectTimeoutMs`, also of the CLI's connections. */
  connectTimeoutMs: 5_000,
  /** `CellsOptions.acquireTimeoutMs`. */
  acquireTimeoutMs: 10_000,
  /** `CellsOptions.queryTimeoutMs`. */
  queryTimeoutMs: 60_000,
  /** `CellsOptions.maxConnectionsPerServer`: none (no budget; see its TSDoc for why). */
  maxConnectionsPerServer: undefined,
  /** `CellsOptions.shutdownTimeoutMs`. */
  shutdownTimeoutMs: 25_000,
  /** `CellsOptions.replicaBackoffMs`: how long an unreachable reader is skipped. */
  replicaBackoffMs: 5_000,
  /** `MappingCacheOptions.max`. */
  mappingCacheMax: 10_000,
  /** `MappingCacheOptions.ttlMs`: 1 min. */
  mappingCacheTtlMs: 60_000,
  /** `timeoutMs` of `scatterGather`. */
  scatterGatherTimeoutMs: 30_000,
  /** Pool of the API and default main databases when their options set none (pg-pool's default). */
  staticPoolSize: 10,
  /** Connect timeout of the mapping listener when the API database's options set no `connectTimeoutMS`. */
  listenerConnectTimeoutMs: 10_000,
  /**
   * Pool of a CLI DataSource: `db status` reads on two connections; `db migrate` uses one, which
   * holds the migration lock and runs the migrations (a migration opening a query runner of its
   * own gets the other).
   */
  cliPoolSize: 2,
  /** The CLI's `--lock-timeout` of `db migrate` and `api-db migrate`: 10 min. */
  migrationLockTimeoutMs: 600_000,
} as const;

/** The table recording the API database's migrations; the CLI's `api-db` commands share it. */
export const API_MIGRATIONS_TABLE = 'cells_api_migrations';

/** The Cells options that shape DataSources (CellsOptions has them all). @internal */
export interface DataSourceSettings {
  api: DatabaseConfig;
  entities?: NonNullable<PostgresOptions['entities']>;
  migrations?: PostgresOptions['migrations'];
  cellDataSourceOptions?: CellDataSourceOptions;
  poolSize?: number;
  connectTimeoutMs?: number;
}

/**
 * TypeORM PostgreSQL options of a database given as a URL or as options (shared with the CLI).
 * @param label - how errors name the database: `the API database`, `the default main database`...
 * @throws InvalidArgumentError for anything else; BadConnectionUrlError for a bad URL.
 */
export function postgresOptions(config: DatabaseConfig, label: string): PostgresOptions {
  if (typeof config === 'string') return { type: 'postgres', ...parseConnectionUrl(config, label) };
  if (config === null || typeof config !== 'object') {
    throw new InvalidArgumentError(`${sentenceStart(label)} must be a postgres:// URL or TypeORM options.`);
  }
  postgresTypeArg((config as { type?: unknown }).type, sentenceStart(label));
  if (config.url !== undefined) {
    const { url, ...rest } = config;
    return { ...rest, type: 'postgres', ...parseConnectionUrl(url, label) };
  }
  return { ...config, type: 'postgres' };
}

/**
 * Refuses a TypeORM `type` other than `'postgres'`: the options would otherwise be used as
 * PostgreSQL ones, against a server of another engine.
 * @throws InvalidArgumentError naming the one supported engine.
 */
export function postgresTypeArg(type: unknown, what: string): void {
  if (type === undefined || type === 'postgres') return;
  const shown = typeof type === 'string' ? `'${type.slice(0, 40)}'` : typeof type;
  throw new InvalidArgumentError(
    `${what} has type ${shown}, which is not supported; ${SUPPORTED_ENGINES}.`,
  );
}

function entityList(config: DatabaseConfig): NonNullable<PostgresOptions['entities']> extends infer E ? E extends readonly (infer I)[] ? I[] : never : never {
  if (typeof config === 'string' || config.entities === undefined) return [];
  return Array.isArray(config.entities) ? [...config.entities] : (Object.values(config.entities) as never);
}

/**
 * Options of the API database's DataSource: the `api` option, with the mapping entities and the
 * API migrations added to what it names.
 * @param label - how a bad `api` option is named in errors.
 * @param poolSize - overrides the pool size the `api` option sets (the CLI's pool of two).
 * @throws as `postgresOptions`.
 * @internal
 */
export function apiDataSourceOptions(settings: DataSourceSettings, label = API_LABEL, poolSize?: number): PostgresOptions {
  const options = postgresOptions(settings.api, label);
  return {
    ...options,
    entities: [...API_ENTITIES, ...entityList(settings.api)],
    migrations: [...API_MIGRATIONS],
    migrationsTableName: API_MIGRATIONS_TABLE,
    ...(poolSize === undefined
      ? {}
      : {
          poolSize,
          extra: { ...(options.extra as object | undefined), max: poolSize },
          connectTimeoutMS: options.connectTimeoutMS ?? settings.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs,
        }),
  };
}

/**
 * Options shared by every cell DataSource (and the default main database's): `cellDataSourceOptions`
 * with the cell entities and migrations, the pool size and the connect timeout. A cell's connection
 * fields are spread over them.
 * @param poolSize - connections of the pool; default: the `poolSize` option.
 * @internal
 */
export function cellDataSourceOptions(
  settings: DataSourceSettings,
  poolSize = settings.poolSize ?? DEFAULTS.poolSize,
): Omit<PostgresOptions, 'host'> {
  const base = settings.cellDataSourceOptions ?? {};
  return {
    ...base,
    type: 'postgres',
    entities: settings.entities ?? [],
    migrations: settings.migrations ?? [],
    poolSize,
    connectTimeoutMS: settings.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs,
    extra: { ...(base.extra as object | undefined), max: poolSize },
  };
}

/** The bounds of a guarded pool's waits, in ms (see connection-pool.ts). @internal */
export interface PoolBounds {
  connectTimeoutMs?: number;
  queryTimeoutMs: number;
  acquireTimeoutMs: number;
  /** The budget of the database's server its connections open under; none: unbounded. */
  budget?: ServerBudget | undefined;
}

/**
 * A DataSource of `options` whose pool is guarded (connection-pool.ts): bounded waits for a
 * pooled connection, no client back in the pool inside a transaction, no unhandled client error.
 * @param create - makes the DataSource (a cell's takes its metadata from the MetadataTemplate);
 * default: `new DataSource(options)`.
 * @internal
 */
export function guardedDataSource(
  options: PostgresOptions,
  label: string,
  bounds: PoolBounds,
  create: (options: PostgresOptions) => DataSource = (given) => new DataSource(given),
): DataSource {
  // A new connection then costs the server's round trips, not the client's PBKDF2 (scram-keys.ts).
  rememberScramKeys();
  const extra = (options.extra ?? {}) as { max?: number };
  const poolSize = extra.max ?? options.poolSize ?? DEFAULTS.staticPoolSize;
  const connectTimeoutMs = options.connectTimeoutMS ?? bounds.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs;
  // The password is given to TypeORM as a function, so a DataSource, its options, driver and
  // pool, and every manager and query runner reaching them, print no password.
  // pg-native is looked up once per process, not by TypeORM in each DataSource (pg-native.ts).
  const nativeDriver: unknown = options.nativeDriver ?? pgNativeDriver();
  const dataSource = create(
    hidePassword({
      ...options,
      nativeDriver,
      extra: guardedPoolOptions(
        extra,
        poolSize,
        connectTimeoutMs,
        bounds.queryTimeoutMs,
        bounds.budget === undefined ? undefined : { budget: bounds.budget, acquireTimeoutMs: bounds.acquireTimeoutMs, label },
      ),
    }),
  );
  guardPool(dataSource, () => label, bounds.acquireTimeoutMs, bounds.budget);
  learnServerVersion(dataSource);
  return dataSource;
}

/**
 * Initializes `dataSource` with its logger masking secrets, turning a connection failure into
 * CellUnreachableError with no secrets.
 * @param hint - ends the error's message; default: CellUnreachableError's (a later call connects anew).
 * @throws CellUnreachableError naming `label`; a CellsError thrown while initializing, as is.
 */
export async function connect(dataSource: DataSource, label: string, hint?: string): Promise<void> {
  maskDataSourceLogger(dataSource);
  try {
    await dataSource.initialize();
  } catch (error) {
    if (error instanceof CellsError) throw error;
    throw new CellUnreachableError(label, messageOf(error), { cause: error, ...(hint === undefined ? {} : { hint }) });
  }
}

/** What `closeDataSource` uses of a pg-pool Pool (TypeORM's `driver.master`). */
interface PoolEvents {
  readonly totalCount: number;
  on(event: 'remove', listener: () => void): unknown;
  off(event: 'remove', listener: () => void): unknown;
}

/** Bounds the wait for sockets in `closeDataSource`, should pg-pool drop a client without 'remove'. */
const SOCKETS_CLOSE_WAIT_MS = 1_000;

/**
 * Destroys `dataSource` and resolves once the sockets of its pool have closed. pg-pool's `end()`
 * resolves as soon as it has asked each client to end, before their sockets close (and before the
 * server has let the connections go), so `destroy()` would leave handles behind and an evicted
 * cell's connections would outlive its slot. pg-pool emits 'remove' once a client has ended.
 * @internal
 */
export async function closeDataSource(dataSource: DataSource): Promise<void> {
  const pool = (dataSource.driver as { master?: Partial<PoolEvents> } | undefined)?.master;
  let open = typeof pool?.on === 'function' && typeof pool.off === 'function' ? (pool.totalCount ?? 0) : 0;
  if (open === 0) return dataSource.destroy();
  const events = pool as PoolEvents;
  let timer: NodeJS.Timeout | undefined;
  let onRemove = (): void => undefined;
  const closed = new Promise<void>((resolve) => {
    onRemove = () => {
      if (--open === 0) resolve();
    };
    events.on('remove', onRemove);
    timer = setTimeout(resolve, SOCKETS_CLOSE_WAIT_MS);
    timer.unref();
  });
  try {
    await dataSource.destroy();
    await closed;
  } finally {
    clearTimeout(timer);
    events.off('remove', onRemove);
  }
}
