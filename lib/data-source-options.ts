import { DataSource, type DataSourceOptions } from 'typeorm';
import { API_ENTITIES } from '../entities';
import { API_MIGRATIONS } from '../migrations';
import { messageOf } from './connection-errors';
import { guardedPoolOptions, hidePassword } from './cell-client';
import { guardPool } from './connection-pool';
import { SUPPORTED_ENGINES, parseConnectionUrl, type ConnectionParts } from './connection-url';
import { guardedMysqlDataSource, loadMysql2 } from './mysql-pool';
import { CellUnreachableError, CellsError, IncompatibleEntityError, InvalidArgumentError, sentenceStart } from './errors';
import { maskDataSourceLogger } from './masked-logger';
import { pgNativeDriver } from './pg-native';
import { rememberScramKeys } from './scram-keys';
import type { ServerBudget } from './server-budget';
import type { PoolObserver } from './telemetry';
import { learnServerVersion } from './server-version';
import {
  SecretSource,
  builtInReference,
  secretSourceOf,
  type ResolveSecret,
  type SecretOwner,
  type SecretReference,
  type SecretSettings,
} from './secret-reference';
import { API_LABEL } from './route';

/**
 * The TypeORM options of every DataSource typeorm-cells opens (cells, the API and the default main
 * database, and the CLI's), built in one place from the Cells options; every default of those
 * options (`DEFAULTS`); and how such a DataSource is opened (`connect`) and closed (`closeDataSource`).
 */

/** TypeORM options of a PostgreSQL DataSource. */
export type PostgresOptions = Extract<DataSourceOptions, { type: 'postgres' }>;

/** TypeORM options of a MySQL or MariaDB DataSource (TypeORM's MySQL driver, with `mysql2`). */
export type MysqlOptions = Extract<DataSourceOptions, { type: 'mysql' | 'mariadb' }>;

/** TypeORM options of a DataSource of any engine typeorm-cells supports. */
export type DatabaseOptions = PostgresOptions | MysqlOptions;

/**
 * A database given as a connection URL (`postgres://`, `postgresql://`, `mysql://`, `mariadb://`),
 * as TypeORM PostgreSQL options (`type` may be left out) or as TypeORM MySQL/MariaDB options.
 */
export type DatabaseConfig = string | Omit<PostgresOptions, 'type'> | PostgresOptions | MysqlOptions;

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
  /** `MappingCacheOptions.pollIntervalMs`: how often a MySQL/MariaDB API database's change log is read. */
  mappingPollIntervalMs: 500,
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
  resolveSecret?: ResolveSecret;
}

/** How the secret references of `settings`' databases are resolved: its resolver, within its connect timeout. @internal */
export function secretSettings(settings: Pick<DataSourceSettings, 'resolveSecret' | 'connectTimeoutMs'>): SecretSettings {
  return { resolveSecret: settings.resolveSecret, timeoutMs: settings.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs };
}

/**
 * TypeORM options of a database given as a URL or as options (shared with the CLI); the engine is
 * the URL's scheme or the options' `type` (default `'postgres'`).
 * @param label - how errors name the database: `the API database`, `the default main database`...
 * @throws InvalidArgumentError for anything else, or options whose `url` names another engine than
 * their `type`; BadConnectionUrlError for a bad URL.
 */
export function databaseOptions(config: DatabaseConfig, label: string, secrets?: SecretSettings): DatabaseOptions {
  if (typeof config === 'string') return fromParts({}, parseConnectionUrl(config, label), label, secrets);
  if (config === null || typeof config !== 'object') {
    throw new InvalidArgumentError(`${sentenceStart(label)} must be a connection URL or TypeORM options.`);
  }
  const given = (config as { type?: unknown }).type;
  engineTypeArg(given, sentenceStart(label));
  const type = (given ?? 'postgres') as DatabaseOptions['type'];
  if (config.url !== undefined) {
    const { url, ...rest } = config;
    const parts = parseConnectionUrl(url, label);
    if (given !== undefined && parts.type !== type) {
      throw new InvalidArgumentError(`${sentenceStart(label)} has type '${type}' but its url is a ${parts.type} URL.`);
    }
    return fromParts(rest, parts, label, secrets);
  }
  return { ...config, type } as DatabaseOptions;
}

/**
 * TypeORM options of the database `parts` name (a parsed URL), over `base`: a MySQL or MariaDB
 * database keeps none of `base`'s PostgreSQL-only options, and its connect timeout is TypeORM's
 * `connectTimeout`. A secret reference becomes a `password` function of a SecretSource, resolved
 * by `connect`.
 * @param owner - the database, as errors and `resolveSecret` name it.
 * @param secrets - how its secret reference is resolved; default: the built-in resolvers, within
 * the default connect timeout.
 * @internal
 */
export function fromParts(
  base: object,
  parts: ConnectionParts,
  owner: string | SecretOwner,
  secrets: SecretSettings = { timeoutMs: DEFAULTS.connectTimeoutMs },
): DatabaseOptions {
  const { passwordRef, ...connection } = parts;
  if (passwordRef !== undefined) {
    const source = new SecretSource(passwordRef, typeof owner === 'string' ? { label: owner } : owner, secrets);
    (connection as { password: unknown }).password = source.password;
  }
  if (connection.type === 'postgres') return { ...base, ...connection } as PostgresOptions;
  const { applicationName: _ignored, ...mysqlParts } = connection;
  return { ...sharedOptionsFor(connection.type, base), ...mysqlParts } as MysqlOptions;
}

/** TypeORM options only its PostgreSQL driver reads (or which name pg/pg-pool settings). */
const POSTGRES_ONLY = [
  'schema', 'applicationName', 'uuidExtension', 'useUTC', 'parseInt8', 'nativeDriver', 'installExtensions',
  'logNotifications', 'connectTimeoutMS', 'extra', 'replication', 'ssl', 'url', 'host', 'port',
] as const;

/**
 * `base` (options shared by every cell, PostgreSQL-shaped) fit for a database of `type`: as is for
 * PostgreSQL; for MySQL and MariaDB without PostgreSQL-only options, its connect timeout as
 * TypeORM's `connectTimeout`. @internal
 */
export function sharedOptionsFor(type: DatabaseOptions['type'], base: object): object {
  if (type === 'postgres') return base;
  const copy: Record<string, unknown> = { ...base };
  for (const key of POSTGRES_ONLY) delete copy[key];
  const { connectTimeoutMS } = base as { connectTimeoutMS?: number };
  if (connectTimeoutMS !== undefined) copy.connectTimeout = connectTimeoutMS;
  return copy;
}

/**
 * Refuses a TypeORM `type` other than `'postgres'`, `'mysql'` and `'mariadb'`: the options would
 * otherwise be used as those of another engine.
 * @throws InvalidArgumentError naming the supported engines.
 */
export function engineTypeArg(type: unknown, what: string): void {
  if (type === undefined || type === 'postgres' || type === 'mysql' || type === 'mariadb') return;
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
export function apiDataSourceOptions(settings: DataSourceSettings, label = API_LABEL, poolSize?: number): DatabaseOptions {
  const options = databaseOptions(settings.api, label, secretSettings(settings));
  const api = {
    ...options,
    // Loaded here (MissingDriverError naming the API database), not by TypeORM with an untyped error.
    ...(options.type === 'postgres' ? {} : { driver: options.driver ?? loadMysql2(label) }),
    entities: [...API_ENTITIES, ...entityList(settings.api)],
    migrations: [...API_MIGRATIONS],
    migrationsTableName: API_MIGRATIONS_TABLE,
  };
  if (poolSize === undefined) return api as DatabaseOptions;
  if (api.type !== 'postgres') {
    return { ...api, poolSize, connectTimeout: api.connectTimeout ?? settings.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs };
  }
  return {
    ...api,
    poolSize,
    extra: { ...(api.extra as object | undefined), max: poolSize },
    connectTimeoutMS: api.connectTimeoutMS ?? settings.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs,
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
  /**
   * Every connection runs read-only transactions (a read-only cell's second line of defence): on
   * PostgreSQL `default_transaction_read_only` set at connect, on MySQL and MariaDB `SET SESSION
   * TRANSACTION READ ONLY` run first on each new connection. Default: false.
   */
  readOnly?: boolean;
  /** Receives the pool's connection waits and busy errors (metrics); none: not reported. */
  observer?: PoolObserver | undefined;
}

/** The PostgreSQL startup option of a read-only connection (libpq's `options`). */
const PG_READ_ONLY_OPTION = '-c default_transaction_read_only=on';

/** Makes a DataSource of the given options (a cell's takes its metadata from the MetadataTemplate). @internal */
export type CreateDataSource = (options: DatabaseOptions) => DataSource;

/**
 * A DataSource of `options` whose pool is guarded (connection-pool.ts; mysql-pool.ts for MySQL and
 * MariaDB): bounded waits for a pooled connection, no client back in the pool inside a
 * transaction, no unhandled client error.
 * @param create - makes the DataSource; default: `new DataSource(options)`.
 * @throws MissingDriverError for a MySQL/MariaDB database when `mysql2` is not installed.
 * @internal
 */
export function guardedDataSource(
  options: DatabaseOptions,
  label: string,
  bounds: PoolBounds,
  create: CreateDataSource = (given) => new DataSource(given),
): DataSource {
  if (options.type !== 'postgres') return guardedMysqlDataSource(options, label, bounds, create);
  // A new connection then costs the server's round trips, not the client's PBKDF2 (scram-keys.ts).
  rememberScramKeys();
  const given = (options.extra ?? {}) as { max?: number; options?: string };
  const extra = bounds.readOnly === true ? { ...given, options: [given.options, PG_READ_ONLY_OPTION].filter(Boolean).join(' ') } : given;
  const poolSize = extra.max ?? options.poolSize ?? DEFAULTS.staticPoolSize;
  const connectTimeoutMs = options.connectTimeoutMS ?? bounds.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs;
  // The password is given to TypeORM as a function, so a DataSource, its options, driver and
  // pool, and every manager and query runner reaching them, print no password.
  // pg-native is looked up once per process, not by TypeORM in each DataSource (pg-native.ts).
  const nativeDriver: unknown = options.nativeDriver ?? pgNativeDriver();
  const dataSource = create(
    hidePassword<PostgresOptions>({
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
  guardPool(dataSource, () => label, bounds.acquireTimeoutMs, bounds.budget, bounds.observer, bounds.readOnly === true);
  learnServerVersion(dataSource);
  return dataSource;
}

/**
 * Initializes `dataSource` with its logger masking secrets, turning a connection failure into
 * CellUnreachableError with no secrets.
 * @param hint - ends the error's message; default: CellUnreachableError's (a later call connects anew).
 * A secret reference of its password is resolved first.
 * @throws CellUnreachableError naming `label`; SecretResolutionError; a CellsError thrown while
 * initializing, as is.
 */
export async function connect(dataSource: DataSource, label: string, hint?: string): Promise<void> {
  maskDataSourceLogger(dataSource);
  // Resolved before the first connection (the server may not ask for a password: trust), so that
  // a reference that cannot be resolved fails the open, typed.
  const secret = secretSourceOf((dataSource.options as { password?: unknown }).password);
  await secret?.resolve();
  try {
    await dataSource.initialize();
  } catch (error) {
    if (error instanceof CellsError) throw error;
    // TypeORM's metadata validation (a DataSource building its own, as the CLI's do): not a connection failure.
    if ((error as { name?: unknown } | null)?.name === 'DataTypeNotSupportedError') {
      throw new IncompatibleEntityError(label, dataSource.options.type, messageOf(error), { cause: error });
    }
    const given = hint ?? (isAuthenticationFailure(error) ? authenticationHint(secret?.ref) : undefined);
    throw new CellUnreachableError(label, messageOf(error), { cause: error, ...(given === undefined ? {} : { hint: given }) });
  }
}

/**
 * What CellUnreachableError says after a refused login, instead of "a later call connects anew":
 * for a password of a secret reference, the reference, by its kind and,
 * for `env` and `file`, the reference itself; else the URL.
 */
function authenticationHint(ref: SecretReference | undefined): string {
  if (ref === undefined) return "Check the user name and password of its URL (cells.mappings.updateCell, or the CLI's 'cell update').";
  const reference = builtInReference(ref);
  return (
    `Authentication failed with the password of its '${ref.kind}' secret reference${reference === undefined ? '' : ` (${ref.kind}:${reference})`}: ` +
    `check the secret where the reference points, and the user name of its URL.`
  );
}

/**
 * True for a refused login: PostgreSQL's class 28 (28P01 wrong password, 28000 no such role or no
 * pg_hba entry) and MySQL's ER_ACCESS_DENIED_ERROR (1045).
 */
function isAuthenticationFailure(error: unknown): boolean {
  const { code } = (error ?? {}) as { code?: unknown };
  return code === '28P01' || code === '28000' || code === 'ER_ACCESS_DENIED_ERROR';
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
