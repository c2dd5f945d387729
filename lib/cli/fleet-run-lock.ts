import { createHash } from 'node:crypto';
import type { DataSource, QueryRunner } from 'typeorm';

/**
 * The lock a process holds on the API database while it works on a fleet migration run, so that a
 * `db migrate --resume` started meanwhile (a second deploy job, an operator who thought the first
 * one died) refuses instead of running the same cells beside it. A session lock on a connection of
 * its own: PostgreSQL's `pg_try_advisory_lock(FLEET_RUN_LOCK_CLASS, run id)`, MySQL's and MariaDB's
 * `GET_LOCK(name, 0)`; a process that dies takes its lock with it, so its run can be resumed at once.
 */

/** First key of the PostgreSQL advisory lock of a run ("cell" in ASCII); the run id is the second. */
export const FLEET_RUN_LOCK_CLASS = 1667591276;

/** A held run lock; `release()` gives it back and returns its connection to the pool. */
export interface FleetRunLock {
  release(): Promise<void>;
}

/**
 * Takes the lock of run `runId` without waiting.
 * @returns the held lock, or `undefined` when another session holds it.
 */
export async function tryLockRun(api: DataSource, runId: number): Promise<FleetRunLock | undefined> {
  const runner = api.createQueryRunner();
  await runner.connect();
  try {
    const mysql = api.options.type !== 'postgres';
    const name = mysql ? await mysqlLockName(runner, runId) : '';
    const [row] = (await (mysql
      ? runner.query('SELECT GET_LOCK(?, 0) AS obtained', [name])
      : runner.query('SELECT pg_try_advisory_lock($1, $2) AS obtained', [FLEET_RUN_LOCK_CLASS, runId]))) as { obtained: unknown }[];
    if (row?.obtained !== true && Number(row?.obtained) !== 1) {
      await runner.release();
      return undefined;
    }
    return { release: () => unlock(runner, mysql ? name : undefined, runId) };
  } catch (error) {
    await runner.release();
    throw error;
  }
}

async function unlock(runner: QueryRunner, mysqlName: string | undefined, runId: number): Promise<void> {
  try {
    await (mysqlName === undefined
      ? runner.query('SELECT pg_advisory_unlock($1, $2)', [FLEET_RUN_LOCK_CLASS, runId])
      : runner.query('SELECT RELEASE_LOCK(?)', [mysqlName]));
  } finally {
    await runner.release();
  }
}

/** The GET_LOCK name of run `runId`: per server and at most 64 characters, so the database goes in hashed. */
async function mysqlLockName(runner: QueryRunner, runId: number): Promise<string> {
  const database = createHash('sha1').update((await runner.getCurrentDatabase()) ?? '').digest('hex').slice(0, 16);
  return `typeorm-cells.fleet-run.${database}.${runId}`;
}

/**
 * The API database session holding run `runId`'s lock, for FleetRunBusyError: its PostgreSQL
 * backend pid or MySQL/MariaDB connection id, and the statement that ends it (the way out when the
 * process holding it is gone with its host). Undefined when no session holds it now, or the server
 * does not say (no privilege to read pg_locks' pids).
 */
export async function runLockHolder(api: DataSource, runId: number): Promise<{ session: string; end: string } | undefined> {
  const runner = api.createQueryRunner();
  try {
    await runner.connect();
    if (api.options.type === 'postgres') {
      const [row] = (await runner.query(
        `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2
           AND classid::bigint = $1 AND objid::bigint = $2
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
        [FLEET_RUN_LOCK_CLASS, runId],
      )) as { pid: unknown }[];
      const pid = Number(row?.pid);
      return Number.isSafeInteger(pid) && pid > 0 ? { session: `PostgreSQL backend pid ${pid}`, end: `SELECT pg_terminate_backend(${pid})` } : undefined;
    }
    const [row] = (await runner.query('SELECT IS_USED_LOCK(?) AS holder', [await mysqlLockName(runner, runId)])) as { holder: unknown }[];
    const id = Number(row?.holder);
    return row?.holder != null && Number.isSafeInteger(id) && id > 0 ? { session: `connection id ${id}`, end: `KILL ${id}` } : undefined;
  } catch {
    return undefined;
  } finally {
    await runner.release();
  }
}
