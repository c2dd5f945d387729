import { MAX_TIMER_MS, UUID_PATTERN, booleanArg, functionArg, integerArg, nameArg, objectArg } from './arguments';
import { DEFAULTS, engineTypeArg, type CellDataSourceOptions, type DatabaseConfig, type PostgresOptions } from './data-source-options';
import { InvalidArgumentError } from './errors';
import type { ReplicaEvent } from './cell-readers';
import type { MappingCacheOptions } from './mapping-cache';
import type { ResolveSecret } from './secret-reference';
import type { RegistryEvent, RegistryStats } from './registry';
import { serverBudgetLimits, type MaxConnectionsPerServer, type ServerBudgetStats } from './server-budget';
import type { TelemetryOptions } from './telemetry-options';
import { requireSchemaArg, type RequireSchema } from './schema-gate';

/**
 * The options of `new Cells()`, each documented once here with its unit, range and default, and
 * their validation: a bad option fails the constructor with InvalidArgumentError, never a later call.
 */

/** Something typeorm-cells reports to the `logger` option; never carries a connection string. */
export type CellsLogEvent = RegistryEvent | ReplicaEvent;

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
  /**
   * Migrations of the cell databases (classes, or TypeORM's file globs), applied per cell by the
   * CLI (`db migrate`), and the list `requireSchema` reads: give the application the same list
   * as the CLI's config. Default: none.
   */
  migrations?: PostgresOptions['migrations'];
  /**
   * The schema gate: routed calls (and transactions, streams, scatter-gather tasks) to a cell
   * that has not applied the migrations the application needs fail with SchemaBehindError before
   * reaching it, so new code never runs against an old schema. `'latest'`: every migration of the
   * `migrations` option; a migration's name (e.g. `'AddSlug1700000000000'`): that one and those
   * before it, in TypeORM's order (the timestamp ending each name); `false`: no check. A cell
   * passes when its migrations table (TypeORM's `migrationsTableName` of `cellDataSourceOptions`,
   * default `migrations`) lists them all; no table counts as nothing applied. A name not among
   * `migrations`, or a gate with no `migrations`, fails `initialize()` with InvalidArgumentError.
   *
   * Cost: one query per cell DataSource opened (the names in its migrations table), cached for
   * the life of that DataSource; none per routed call beyond a field read. The check runs again,
   * on the open DataSource and without draining its running calls, when the CLI reports a
   * migration of the cell through the mapping notifications (`db migrate`,
   * `cells.mappings.reportMigrated`), after a listener outage, and every `mappingCache.ttlMs` for a
   * cell that was behind (a cell migrated by other means passes within that period). Calls
   * already running when a cell passes or fails the check finish. Default: false.
   */
  requireSchema?: RequireSchema;
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
  /**
   * Give up opening a connection to a cell (or the API or main database) after this many ms; the
   * call fails with CellUnreachableError. Covers the TCP connect and the handshake only, not the
   * wait for a pooled connection (see `acquireTimeoutMs`). From 1 to 2147483647. Default: 5000.
   */
  connectTimeoutMs?: number;
  /**
   * Give up waiting for a free pooled connection of a cell (or the API or main database) after
   * this many ms, with CellBusyError: every one of its `poolSize` connections stayed in use. A
   * busy database is healthy, so this is not a connection failure: scatter-gather reports it as
   * the cell's own error, never as unreachable, and within a gather the wait also ends at the
   * gather's deadline. The default suits a web service: long enough to ride out a burst (a
   * queued call normally gets a connection within a few query times), short enough that a
   * saturated cell answers well within an HTTP client's timeout instead of piling up waiters.
   * 0 waits without limit (not recommended). With `maxConnectionsPerServer`, it also bounds a
   * new connection's wait for its server's budget (then ServerBusyError). From 0 to 2147483647.
   * Default: 10000.
   */
  acquireTimeoutMs?: number;
  /**
   * Most connections open at once to each database server of the cells (by `host:port` of the
   * cell URLs, host in any case; `localhost` and `127.0.0.1` are two servers, names are not
   * resolved): a number for every server, or `{ 'db1.example:5432': 40, '*': 20 }` per server,
   * `'*'` for the servers not named (a server matching no key has no budget). Every pooled
   * connection of every cell (and of the default main database) on a server holds one of its
   * permits from opening to close, so the cells on one server share it, whatever their number or
   * `poolSize`. A connection that finds the budget spent waits its turn (first come, first
   * served) for at most `acquireTimeoutMs`, then the call fails with ServerBusyError; it never
   * opens above the budget. Meanwhile the longest-idle connection of another cell on that server
   * is closed so that its permit passes on, and a connection released while others wait is
   * closed rather than kept idle: cold cells give their connections back to hot ones. A permit
   * comes back when the connection's socket closes; one closed by force (a passed query deadline
   * or connect timeout, a forced shutdown) may leave its backend on the server a little longer,
   * until the server notices.
   *
   * Not counted: the API database's pool and the mapping listener (the `api` option's `poolSize`,
   * 10 when it sets none, + 1 connections), so a saturated fleet never delays the lookups that every cell open needs; when
   * the API database shares a cell server, leave them room. Set it below the server's
   * `max_connections` minus its superuser slots, other clients and the other processes running
   * Cells: each process counts only its own connections (run N processes: budget / N each).
   *
   * Off by default: without it, connections are at most `maxOpenCells * poolSize` (plus the
   * API's) per process, which is what a server sized for the fleet expects; a connection pooler
   * (PgBouncer, RDS Proxy) in front of the servers already bounds them; and servers of different
   * sizes need different budgets, which only you know. Cost when set: a counter per connection
   * opened and closed; none per query. From 1 to 1000000 per server. Default: none.
   */
  maxConnectionsPerServer?: MaxConnectionsPerServer;
  /**
   * Deadline of each statement sent to a cell (or the API or main database), in ms; a cell's
   * entry in `cellQueryTimeoutMs` overrides it, and a routed call's context overrides both
   * (`RequestContext.queryTimeoutMs`). A statement that passes it
   * fails with QueryTimeoutError and its connection is closed, not left busy: a server that stops
   * answering with its sockets open (paused, partitioned) never holds a caller for ever. A stream
   * gets it for each batch it waits for and for its close, not for its whole length. 0 disables it. Default: 60000, as Nova's cell timeout for scatter-gather: far
   * above any statement a request should run, yet finite. From 0 to 2147483647.
   */
  queryTimeoutMs?: number;
  /**
   * Per-cell deadlines overriding `queryTimeoutMs` for the statements sent to those cells, in ms:
   * `{ reporting: 300000, '2f0c7e4a-...': 2000 }`. Keys are cell names or cell uuids (a key shaped
   * as a uuid is a uuid, in any case); when both name a cell, its uuid wins. The deadline of a
   * statement is the first set of: the context's `RequestContext.queryTimeoutMs` (per call), this
   * (per cell), `queryTimeoutMs` (per Cells). Read when the cell's DataSource opens: a renamed cell
   * keeps its deadline until it is reopened (`evictCell`). Each value from 0 (none) to 2147483647.
   * Default: none.
   */
  cellQueryTimeoutMs?: Readonly<Record<string, number>>;
  /**
   * How long `destroy()` lets running calls and transactions finish, in ms, before it closes their
   * connections by force and resolves. Default: 25000, below the 30 s a container orchestrator
   * usually waits between SIGTERM and SIGKILL. From 0 to 2147483647.
   */
  shutdownTimeoutMs?: number;
  /**
   * How long a reader connection (a cell's `readConnections`) that could not be reached is skipped,
   * in ms: reads of `readFrom: 'replica'` contexts go to another reader or the primary meanwhile
   * (a `replica-unavailable` event each time a reader is set aside), so a reader that is down costs
   * at most one failed connection attempt (up to `connectTimeoutMs`) per period. Default: 5000.
   * From 0 to 2147483647.
   */
  replicaBackoffMs?: number;
  /** Run the API database migrations in `initialize()` (a boolean; `'false'` is refused). Default: false. */
  migrateApi?: boolean;
  /**
   * How long `initialize()` with `migrateApi` waits, in ms, for the API database's migration lock
   * (the one `typeorm-cells api-db migrate` takes: PostgreSQL's advisory lock, MySQL's and
   * MariaDB's `GET_LOCK`) while another process migrates it; it also bounds the migrations' waits
   * for table locks. Processes starting at once migrate one after the other, and the later ones
   * find nothing left to apply. 0: no limit. Past it, `initialize()` throws
   * MigrationLockTimeoutError and applies nothing. An integer from 0 to 2147483647.
   * Default: 600000 (10 min).
   */
  migrateApiLockTimeoutMs?: number;
  /**
   * Receives registry events (opens, evictions, closes, failures) and read-replica events
   * (`replica-open`, `replica-unavailable`) for logging. What it throws or
   * rejects with is ignored: a broken logger never fails a call or stops a close. Default: none.
   */
  logger?: (event: CellsLogEvent) => void;
  /**
   * Resolves the secret references of connection URLs (`?password=<kind>:<reference>`) of your own
   * kinds: `(ref, cell) => password`, sync or async, e.g. a read from a vault for
   * `?password=vault:secret/cell1`. Return `undefined` to leave a reference to the built-in
   * resolvers: `env:NAME` (`process.env.NAME`) and `file:/path` (the file, without one trailing
   * newline). Called when a cell (or the API or main database) opens, within `connectTimeoutMs`,
   * and once more when the server refuses the password (a rotated secret); the result is kept in
   * memory for that DataSource only. A failure fails the open with SecretResolutionError, which
   * names the cell and the reference's kind, never the secret. Default: the built-in resolvers.
   */
  resolveSecret?: ResolveSecret;
  /**
   * Bounds of the cache of cell, instance and host lookups (`cells.mappings`); see
   * MappingCacheOptions for each bound, its range and its default, and for how changes reach it.
   */
  mappingCache?: MappingCacheOptions;
  /**
   * OpenTelemetry traces and metrics, through `@opentelemetry/api` (an optional peer dependency,
   * ^1.9.0): a CLIENT span per routed repository call and query-builder execution, a child span
   * when a call opens its cell, scatter-gather spans, and the metrics listed in the README
   * ("Observability"). Never a connection string, password or query parameter. `false` turns it
   * off; `{ tracerProvider, meterProvider }` uses those instead of the global providers. The
   * providers are checked once, in `initialize()`: register the SDK before it. When
   * `@opentelemetry/api` is not installed, or no SDK is registered (its no-op providers), or with
   * `false`, a routed call pays one boolean check and nothing else. With an SDK, each routed call
   * starts and ends a span and records one histogram value.
   * Default: the global providers of `@opentelemetry/api`.
   */
  telemetry?: TelemetryOptions | false;
}

/** Counters of `cells.stats()`: the DataSource registry's (RegistryStats) and the server budgets'. */
export interface CellsStats extends RegistryStats {
  /** One entry per server with a budget that a cell has used (`maxConnectionsPerServer`); empty without. */
  servers: ServerBudgetStats[];
}

/** @returns `options`, checked. @throws InvalidArgumentError for the first invalid option. @internal */
export function validateOptions(options: CellsOptions): CellsOptions {
  if (options === null || typeof options !== 'object') throw new InvalidArgumentError('new Cells() needs an options object.');
  if (options.api === undefined) throw new InvalidArgumentError(`The 'api' option (the API database) is required.`);
  if (options.entities === undefined) throw new InvalidArgumentError(`The 'entities' option (cell entities) is required.`);
  // Upper bounds too: lru-cache allocates `max` slots up front (1e9 exhausted the heap, 2**32 threw
  // a RangeError), and Node fires a timer longer than MAX_TIMER_MS at once.
  integerArg(options.maxOpenCells, 'maxOpenCells', 1, MAX_OPEN_CELLS);
  integerArg(options.poolSize, 'poolSize', 1, MAX_POOL_SIZE);
  integerArg(options.idleTimeoutMs, 'idleTimeoutMs', 0, MAX_TIMER_MS);
  integerArg(options.connectTimeoutMs, 'connectTimeoutMs', 1, MAX_TIMER_MS);
  integerArg(options.acquireTimeoutMs, 'acquireTimeoutMs', 0, MAX_TIMER_MS);
  integerArg(options.queryTimeoutMs, 'queryTimeoutMs', 0, MAX_TIMER_MS);
  integerArg(options.shutdownTimeoutMs, 'shutdownTimeoutMs', 0, MAX_TIMER_MS);
  integerArg(options.replicaBackoffMs, 'replicaBackoffMs', 0, MAX_TIMER_MS);
  if (options.maxConnectionsPerServer !== undefined) serverBudgetLimits(options.maxConnectionsPerServer);
  integerArg(options.mappingCache?.max, 'mappingCache.max', 1, MAX_MAPPING_CACHE);
  integerArg(options.mappingCache?.ttlMs, 'mappingCache.ttlMs', 1, MAX_TIMER_MS);
  integerArg(options.mappingCache?.pollIntervalMs, 'mappingCache.pollIntervalMs', 1, MAX_TIMER_MS);
  booleanArg(options.migrateApi, 'migrateApi');
  integerArg(options.migrateApiLockTimeoutMs, 'migrateApiLockTimeoutMs', 0, MAX_TIMER_MS);
  requireSchemaArg(options.requireSchema);
  // Checked here, not where they are first used: a bad logger would otherwise throw a TypeError
  // from inside the registry at the first cell open, long after start-up.
  for (const name of ['logger', 'resolveSecret'] as const) {
    if (options[name] !== undefined) functionArg(options[name], `The '${name}' option`);
  }
  // Each cell's engine is its URL's scheme; options shared by every cell name none (or, as before, PostgreSQL's).
  const sharedType = (options.cellDataSourceOptions as { type?: unknown } | undefined)?.type;
  if (sharedType !== undefined && sharedType !== 'postgres') {
    engineTypeArg(sharedType, `The 'cellDataSourceOptions' option`);
    throw new InvalidArgumentError(
      `The 'cellDataSourceOptions' option must not set 'type': each cell's engine is the scheme of its URL.`,
    );
  }
  const { telemetry } = options;
  if (telemetry !== undefined && telemetry !== false) {
    if (telemetry === null || typeof telemetry !== 'object' || Array.isArray(telemetry)) {
      throw new InvalidArgumentError(`The 'telemetry' option must be false or an object, got ${telemetry === null ? 'null' : typeof telemetry}.`);
    }
    for (const [field, method] of [['tracerProvider', 'getTracer'], ['meterProvider', 'getMeter']] as const) {
      const provider = (telemetry as Record<string, unknown>)[field];
      if (provider !== undefined && typeof (provider as Record<string, unknown> | null)?.[method] !== 'function') {
        throw new InvalidArgumentError(`The 'telemetry.${field}' option must have a ${method}() method.`);
      }
    }
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

/**
 * The `cellQueryTimeoutMs` option as a map from lower-case cell uuid or cell name to deadline.
 * @throws InvalidArgumentError for a value that is not an object, a key that is not a valid cell
 * name, or a deadline that is not an integer from 0 to 2147483647.
 */
export function cellQueryTimeouts(option: Readonly<Record<string, number>> | undefined): ReadonlyMap<string, number> {
  const byCell = new Map<string, number>();
  const given = objectArg(option, 'The cellQueryTimeoutMs option');
  const proto: unknown = Object.getPrototypeOf(given);
  if (proto !== Object.prototype && proto !== null) {
    // A Map, say, whose entries Object.entries would silently skip.
    throw new InvalidArgumentError('The cellQueryTimeoutMs option must be a plain object of deadlines by cell name or uuid.');
  }
  for (const [key, ms] of Object.entries(given)) {
    nameArg(key, 'cell name or uuid of a cellQueryTimeoutMs key');
    const at = `cellQueryTimeoutMs[${JSON.stringify(key.slice(0, 60))}]`;
    if (ms === undefined) throw new InvalidArgumentError(`${at} must be an integer from 0 to ${MAX_TIMER_MS}, got undefined.`);
    integerArg(ms, at, 0, MAX_TIMER_MS);
    byCell.set(UUID_PATTERN.test(key) ? key.toLowerCase() : key, ms);
  }
  return byCell;
}

/** The timeout of a `destroy()`, in ms: its own, else the `shutdownTimeoutMs` option, else the default. @internal */
export function shutdownTimeout(options: { timeoutMs?: number } | undefined, configured: number | undefined): number {
  const value = options?.timeoutMs;
  integerArg(value, 'destroy({ timeoutMs })', 0, MAX_TIMER_MS);
  return value ?? configured ?? DEFAULTS.shutdownTimeoutMs;
}

const MAX_OPEN_CELLS = 10_000;
const MAX_POOL_SIZE = 1_000;
const MAX_MAPPING_CACHE = 1_000_000;
/** Fields of `cellDataSourceOptions` that would connect every cell to one database, or are ignored. */
const CELL_FIELDS_REFUSED = [
  'url', 'host', 'port', 'username', 'password', 'database', 'replication', 'ssl', 'type', 'name',
  'entities', 'migrations', 'poolSize', 'connectTimeoutMS',
  // TypeORM's MySQL options that connect elsewhere, replace the driver, or are set by other options.
  'socketPath', 'connectTimeout', 'driver', 'localAddress', 'acquireTimeout', 'user',
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

