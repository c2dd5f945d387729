import { DataSource, MigrationExecutor, type Logger } from 'typeorm';
import type { CellMapping } from '../../entities/CellMapping';
import type { CellsOptions } from '../cells-options';
import { parseConnectionUrl } from '../connection-url';
import { forceClose } from '../forced-close';
import { DEFAULTS, cellDataSourceOptions, connect, fromParts, guardedDataSource, secretSettings } from '../data-source-options';
import { cellRouteLabel } from '../route';

/**
 * How the CLI migrates a database, a cell's or the API database's: a DataSource of its own with a
 * pool of two (`cellDataSource`; the API one is built in api-db.ts), opened and closed around one
 * command (`withDataSource`), and migrations listed (`migrationStatus`). They are applied under the
 * database's migration lock by `migrateLocked` (lib/migration-lock.ts, shared with `Cells`).
 */

/**
 * Default of `db migrate --lock-timeout`, in ms: how long a runner waits for another one that
 * migrates the same cell. Long enough for a slow migration to finish, short enough that a runner
 * stuck behind a session that never lets go ends with an error instead of waiting for ever.
 */
export const DEFAULT_LOCK_TIMEOUT_MS = DEFAULTS.migrationLockTimeoutMs;

/** How long closing a CLI DataSource waits for its connections to end before closing them by force. */
const CLOSE_WAIT_MS = 10_000;

/**
 * A new, uninitialized DataSource for one cell database, with the config's cell entities,
 * migrations and `cellDataSourceOptions`, and a pool of two (`db migrate` uses one, which holds
 * the migration lock and runs the migrations; `db status` reads on two). Not shared with any routed
 * registry.
 * @throws BadConnectionUrlError for a malformed stored URL.
 */
export function cellDataSource(config: CellsOptions, cell: CellMapping, lockTimeoutMs?: number): DataSource {
  const label = cellRouteLabel(cell);
  const options = fromParts(
    cellDataSourceOptions(config, DEFAULTS.cliPoolSize),
    parseConnectionUrl(cell.databaseConnection, label),
    { label, uuid: cell.uuid, name: cell.name },
    secretSettings(config),
  );
  // A MySQL/MariaDB cell goes through the guarded mysql2 pool of routed cells: its password kept
  // out of every printed form, the wait for a pooled connection bounded. No query deadline, as
  // for PostgreSQL here: a migration takes as long as it takes. Its lock waits are bounded on the
  // lock's connection instead (lib/migration-lock.ts): MySQL has no lock_timeout startup parameter.
  const dataSource =
    options.type === 'postgres'
      ? new DataSource(lockTimeoutMs === undefined ? options : withLockTimeout(options, lockTimeoutMs))
      : guardedDataSource(options, label, {
          connectTimeoutMs: config.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs,
          queryTimeoutMs: 0,
          acquireTimeoutMs: DEFAULTS.acquireTimeoutMs,
        });
  // TypeORM prints a failed migration with console.log even with logging off: on stdout, where it
  // breaks --json, and unmasked. The CLI's report already shows each cell's failure. (`connect`
  // masks secrets in what this logger prints.)
  const logger = Object.assign(Object.create(dataSource.logger) as Logger, { logMigration: () => undefined });
  Object.defineProperty(dataSource, 'logger', { value: logger, configurable: true, writable: true });
  return dataSource;
}

/**
 * `options` whose every connection runs with PostgreSQL's `lock_timeout` at `lockTimeoutMs` (0: no
 * limit): a migration waiting for a table lock that an application session holds fails past it
 * ("canceling statement due to lock timeout") instead of waiting for ever. Set as a startup
 * parameter (pg's `options`), added to any the config gives.
 * @internal
 */
export function withLockTimeout<T extends { extra?: unknown }>(options: T, lockTimeoutMs: number): T {
  const extra = (options.extra ?? {}) as { options?: unknown };
  const given = typeof extra.options === 'string' ? `${extra.options} ` : '';
  return { ...options, extra: { ...extra, options: `${given}-c lock_timeout=${lockTimeoutMs}` } };
}

/**
 * Runs `fn` with an initialized `dataSource`, destroying it afterwards whatever happens. The close
 * waits at most CLOSE_WAIT_MS for connections still in use (pg-pool's end waits for every one
 * checked out), then closes them by force.
 */
export async function withDataSource<T>(
  dataSource: DataSource,
  label: string,
  fn: (ds: DataSource) => Promise<T>,
): Promise<T> {
  try {
    // No hint: the CLI's report says what to do.
    await connect(dataSource, label, '');
    return await fn(dataSource);
  } finally {
    if (dataSource.isInitialized) await close(dataSource);
  }
}

async function close(dataSource: DataSource): Promise<void> {
  const closed = dataSource.destroy().then(() => true);
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), CLOSE_WAIT_MS)));
  try {
    if (await Promise.race([closed, late])) return;
    forceClose(dataSource);
    await closed;
  } finally {
    clearTimeout(timer);
  }
}

/** Applied (oldest first) and pending migration names of an initialized `dataSource`; creates nothing. */
export async function migrationStatus(
  dataSource: DataSource,
): Promise<{ applied: string[]; pending: string[] }> {
  const executor = new MigrationExecutor(dataSource);
  const [executed, pending] = await Promise.all([
    executor.getExecutedMigrations(),
    executor.getPendingMigrations(),
  ]);
  // TypeORM lists executed migrations newest first; report them in the order they ran.
  const ran = [...executed].sort((a, b) => (a.id ?? 0) - (b.id ?? 0));
  return { applied: ran.map((m) => m.name), pending: pending.map((m) => m.name) };
}
