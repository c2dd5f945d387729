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
    // GET_LOCK names are per server and at most 64 characters: the database goes in hashed.
    const database = mysql ? createHash('sha1').update((await runner.getCurrentDatabase()) ?? '').digest('hex').slice(0, 16) : '';
    const name = `typeorm-cells.fleet-run.${database}.${runId}`;
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
