import { createHash } from 'node:crypto';
import { MigrationExecutor, type DataSource, type Migration, type QueryRunner } from 'typeorm';
import { MigrationLockTimeoutError } from './errors';

/**
 * The lock a migration runner holds on its connection while it applies the migrations of one
 * database, per engine: PostgreSQL's session advisory lock, MySQL's and MariaDB's user-level lock
 * (`GET_LOCK`). Both end with their session, so a runner that dies lets the next one in. Taken by
 * `migrateLocked`, for the CLI's `db migrate` and `api-db migrate` and for `Cells.initialize()`'s
 * `migrateApi`.
 */

/** Takes and gives back the migration lock of one database on one connection. @internal */
export interface MigrationLock {
  /**
   * Waits at most `lockTimeoutMs` (0: no limit) for the lock, and bounds the waits of the
   * migrations run on `runner` for table locks by the same time.
   * @param setting - names what bounds the wait in the error (default: `--lock-timeout`).
   * @throws MigrationLockTimeoutError naming `label` when another session held it that long.
   */
  acquire(runner: QueryRunner, label: string, lockTimeoutMs: number, setting?: string): Promise<void>;
  /**
   * Gives the lock back and the session's lock timeouts their defaults: the session stays open,
   * and may go back to a pool that serves the application (`Cells.initialize()`'s `migrateApi`).
   */
  release(runner: QueryRunner): Promise<unknown>;
}

/**
 * The `pg_advisory_lock` key held around migrations ("cells" in ASCII). Advisory locks are per
 * database, so one key serializes the runners of each database without blocking other databases.
 */
export const MIGRATION_LOCK_KEY = '426197191795';

/** SQLSTATE lock_not_available: a lock wait passed `lock_timeout`. */
const LOCK_NOT_AVAILABLE = '55P03';

/** The migration lock of a PostgreSQL database: `pg_advisory_lock(MIGRATION_LOCK_KEY)`. */
const postgresLock: MigrationLock = {
  async acquire(runner, label, lockTimeoutMs, setting) {
    try {
      // lock_timeout bounds advisory-lock waits too (and the migrations' table locks after it).
      await runner.query(`SELECT set_config('lock_timeout', $1, false)`, [`${lockTimeoutMs}ms`]);
      await runner.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK_KEY]);
    } catch (error) {
      const code = (error as { driverError?: { code?: unknown } }).driverError?.code;
      if (code === LOCK_NOT_AVAILABLE) throw new MigrationLockTimeoutError(label, lockTimeoutMs, { cause: error, setting });
      throw error;
    }
  },
  async release(runner) {
    await runner.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK_KEY]);
    // Back to the connection's own value (a startup parameter, or the server's).
    await runner.query('RESET lock_timeout');
  },
};

/** Longest MySQL/MariaDB user-level lock name (MySQL 5.7+). */
const MYSQL_LOCK_NAME_MAX = 64;

/**
 * The longest wait MySQL and MariaDB take, in seconds (one year, `lock_wait_timeout`'s maximum on
 * MySQL): `GET_LOCK`'s wait when `--lock-timeout` is 0, since MariaDB refuses a negative (infinite)
 * timeout.
 */
const MYSQL_MAX_WAIT_S = 31_536_000;

/**
 * The MySQL/MariaDB `GET_LOCK` name held around the migrations of `database`. User-level locks are
 * per server, not per database, so the name carries the database (hashed when the name would pass
 * MySQL's 64 characters): runners of one database wait for each other, not for other databases.
 */
export function mysqlMigrationLockName(database: string): string {
  const name = `typeorm-cells.migrate.${database}`;
  if (name.length <= MYSQL_LOCK_NAME_MAX) return name;
  return `typeorm-cells.migrate.${createHash('sha1').update(database).digest('hex')}`;
}

/** What MySQL's sessions name the runner's lock by: its database (`GET_LOCK` is per server). */
const mysqlLockNames = new WeakMap<QueryRunner, string>();

/** The migration lock of a MySQL or MariaDB database: `GET_LOCK(mysqlMigrationLockName(db), s)`. */
const mysqlLock: MigrationLock = {
  async acquire(runner, label, lockTimeoutMs, setting) {
    if (lockTimeoutMs > 0) {
      // PostgreSQL's lock_timeout has no one MySQL counterpart: lock_wait_timeout bounds the
      // migrations' waits for metadata (table) locks, innodb_lock_wait_timeout their row-lock
      // waits. Whole seconds, at least 1. With no limit (0) the server's own defaults stay.
      const seconds = Math.min(Math.max(1, Math.ceil(lockTimeoutMs / 1000)), MYSQL_MAX_WAIT_S);
      await runner.query(`SET SESSION lock_wait_timeout = ${seconds}, SESSION innodb_lock_wait_timeout = ${seconds}`);
    }
    const name = mysqlMigrationLockName((await runner.getCurrentDatabase()) ?? '');
    const waitS = lockTimeoutMs === 0 ? MYSQL_MAX_WAIT_S : lockTimeoutMs / 1000;
    const [row] = (await runner.query('SELECT GET_LOCK(?, ?) AS obtained', [name, waitS])) as { obtained: unknown }[];
    const obtained = row?.obtained === null || row?.obtained === undefined ? null : Number(row.obtained);
    if (obtained === 0) {
      throw new MigrationLockTimeoutError(label, lockTimeoutMs, {
        whoHolds: `SELECT IS_USED_LOCK('${name}') gives its connection id`,
        setting,
      });
    }
    if (obtained !== 1) throw new Error(`GET_LOCK('${name}') failed (it returned NULL)`);
    mysqlLockNames.set(runner, name);
  },
  async release(runner) {
    const name = mysqlLockNames.get(runner);
    if (name === undefined) return;
    mysqlLockNames.delete(runner);
    await runner.query('SELECT RELEASE_LOCK(?)', [name]);
    await runner.query('SET SESSION lock_wait_timeout = DEFAULT, SESSION innodb_lock_wait_timeout = DEFAULT');
  },
};

/** The migration lock of the database `runner`'s DataSource reaches. */
function migrationLockOf(runner: QueryRunner): MigrationLock {
  return runner.connection.options.type === 'postgres' ? postgresLock : mysqlLock;
}

/**
 * Applies the pending migrations of `dataSource` on one connection that holds the migration
 * lock meanwhile (PostgreSQL's advisory lock, MySQL's and MariaDB's GET_LOCK), so a concurrent runner waits and then finds nothing left to apply.
 * @param label - names the cell in errors.
 * @param lockTimeoutMs - how long to wait for the lock, in ms (0: no limit).
 * @param setting - names what bounds the wait in the timeout error (default: `--lock-timeout`).
 * @returns the names of the migrations this call applied.
 * @throws MigrationLockTimeoutError when another session held the lock for `lockTimeoutMs`.
 */
export async function migrateLocked(
  dataSource: DataSource,
  label: string,
  lockTimeoutMs: number,
  setting?: string,
): Promise<string[]> {
  const lock = dataSource.createQueryRunner();
  await lock.connect();
  const migrationLock = migrationLockOf(lock);
  try {
    await migrationLock.acquire(lock, label, lockTimeoutMs, setting);
    // On the session holding the lock: one connection per database, not a second one opened
    // (a server round trip and a backend started) for each database migrated.
    const executor = new MigrationExecutor(dataSource, lock);
    executor.transaction = dataSource.options.migrationsTransactionMode ?? 'all';
    let applied: Migration[];
    try {
      applied = await executor.executePendingMigrations();
    } catch (error) {
      // The failure is what counts: a session that broke took its lock with it, and the
      // caller's DataSource closes this one anyway.
      await migrationLock.release(lock).catch(() => undefined);
      throw error;
    }
    await migrationLock.release(lock);
    return applied.map((m) => m.name);
  } finally {
    await lock.release();
  }
}
