import type { CellMapping } from '../../entities/CellMapping';
import type { MigrationRun, MigrationRunOptions } from '../../entities/MigrationRun';
import type { MigrationRunCell } from '../../entities/MigrationRunCell';
import type { CellsOptions } from '../cells-options';
import { messageOf } from '../connection-errors';
import { migrateCells, type CellMigrationResult, type MigrateCellsOptions } from './cell-migration';
import { ServerSlots, alternateServers, planWaves, serverOf } from './fleet-plan';
import { FleetRunBusyError } from './errors';
import { runLockHolder, tryLockRun, type FleetRunLock } from './fleet-run-lock';
import type { MigrationJournal } from './migration-journal';
import { checkJournaledRun } from './migration-run-check';

/**
 * A fleet migration (`db migrate --all`, `db migrate --resume`): the cells of a run migrated wave
 * by wave (the canary first), each one journaled (migration-journal.ts) before it starts and when
 * it ends, with at most `maxPerServer` cells of one database server at once. Ctrl-C stops it from
 * starting cells; the running ones finish.
 */

/** How a fleet migration ended. */
export interface FleetMigrationOutcome {
  run: MigrationRun;
  /** The cells this process worked on, in the run's order (not those a previous attempt finished). */
  results: CellMigrationResult[];
  /** True when the canary failed, so no other cell was started. */
  canaryFailed: boolean;
  /** The canary cells this attempt ran (wave 0), and how many of them failed; 0 and 0 for none. */
  canary: { cells: number; failed: number };
}

/** Set by the caller's SIGINT/SIGTERM handler: start no more cells. */
export interface StopSignal {
  interrupted: boolean;
  /** The signal that set `interrupted`. */
  signal?: NodeJS.Signals;
  /** The run being migrated, once it is known (for the message of a second Ctrl-C). */
  runId?: number;
}

/**
 * Starts a new run over `cells` (in their order) with `options` and migrates it.
 * @throws UnknownCellError when `options.canary` names no cell.
 */
export async function startFleetMigration(
  config: CellsOptions,
  journal: MigrationJournal,
  cells: readonly CellMapping[],
  options: MigrationRunOptions,
  stop: StopSignal,
  quiet: boolean,
  onMigrated?: MigrateCellsOptions['onMigrated'],
): Promise<FleetMigrationOutcome> {
  const plan = planWaves(cells, { canary: options.canary ?? undefined, waveSize: options.waveSize ?? undefined });
  // The run's lock is taken before the run is committed: a `--resume` that sees the new run finds
  // it locked, rather than taking it from this process in between.
  let lock: FleetRunLock | undefined;
  let started: Awaited<ReturnType<MigrationJournal['startRun']>>;
  try {
    started = await journal.startRun(options, plan, async (run) => {
      lock = await lockRun(journal, run.id);
    });
  } catch (error) {
    await lock?.release().catch(() => undefined);
    throw error;
  }
  const { run, cells: rows } = started;
  stop.runId = run.id;
  try {
    return await runWaves(config, journal, run, rows, cells, stop, quiet, onMigrated);
  } finally {
    await lock!.release().catch(() => undefined);
  }
}

/**
 * Continues `run`: its cells not `succeeded`, with its options, wave by wave. A cell left
 * `running` by a process that died is run again: its migrations are transactional and its
 * migrations table says what is applied, so nothing is applied twice.
 * @throws FleetRunBusyError when another process is working on `run`.
 * @throws InvalidMigrationRunError when its journal holds an invalid option or cell state.
 */
export async function resumeFleetMigration(
  config: CellsOptions,
  journal: MigrationJournal,
  run: MigrationRun,
  cells: readonly CellMapping[],
  stop: StopSignal,
  quiet: boolean,
  onMigrated?: MigrateCellsOptions['onMigrated'],
): Promise<FleetMigrationOutcome> {
  const lock = await lockRun(journal, run.id);
  stop.runId = run.id;
  try {
    const rows = await journal.cellsOf(run.id);
    checkJournaledRun(run, rows);
    await journal.resumeRun(run.id);
    run.state = 'running';
    return await runWaves(config, journal, run, rows, cells, stop, quiet, onMigrated);
  } finally {
    await lock.release().catch(() => undefined);
  }
}

/**
 * Takes run `runId`'s lock without waiting.
 * @throws FleetRunBusyError, naming the session that holds it, when another process does.
 */
async function lockRun(journal: MigrationJournal, runId: number): Promise<FleetRunLock> {
  const lock = await tryLockRun(journal.dataSource, runId);
  if (lock === undefined) throw new FleetRunBusyError(runId, await runLockHolder(journal.dataSource, runId));
  return lock;
}

async function runWaves(
  config: CellsOptions,
  journal: MigrationJournal,
  run: MigrationRun,
  rows: MigrationRunCell[],
  cells: readonly CellMapping[],
  stop: StopSignal,
  quiet: boolean,
  onMigrated?: MigrateCellsOptions['onMigrated'],
): Promise<FleetMigrationOutcome> {
  const { options } = run;
  const byUuid = new Map(cells.map((cell) => [cell.uuid, cell]));
  const slots = new ServerSlots(options.maxPerServer ?? Infinity);
  const todo = rows.filter((row) => row.state !== 'succeeded');
  const results = new Map<string, CellMigrationResult>();
  let failed = false;
  // Wave 0 is the canary (fleet-plan.ts): the run failed its canary when a cell of it failed.
  const canary = { cells: 0, failed: 0 };
  for (const wave of [...new Set(todo.map((row) => row.wave))].sort((a, b) => a - b)) {
    if (stop.interrupted || canary.failed > 0 || (failed && !options.continueOnError)) break;
    const waveRows = todo.filter((row) => row.wave === wave);
    const rowOf = new Map(waveRows.map((row) => [row.cellUuid, row]));
    const mapped: CellMapping[] = [];
    for (const row of waveRows) {
      const cell = byUuid.get(row.cellUuid);
      if (cell) mapped.push(cell);
      else {
        await journal.cellEnded(row, 'skipped', [], 'the cell is no longer mapped');
        results.set(row.cellUuid, { uuid: row.cellUuid, name: row.cellName, result: 'skipped', applied: [], ms: 0, error: 'the cell is no longer mapped' });
      }
    }
    const waveResults = await migrateCells(config, alternateServers(mapped, serverOf), {
      concurrency: options.concurrency,
      lockTimeoutMs: options.lockTimeoutMs,
      continueOnError: options.continueOnError,
      quiet,
      ...(onMigrated === undefined ? {} : { onMigrated }),
      around: async (cell, migrate) => {
        const row = rowOf.get(cell.uuid) as MigrationRunCell;
        const release = await slots.acquire(serverOf(cell));
        try {
          if (stop.interrupted) return notStarted(cell);
          try {
            await journal.cellStarted(row);
          } catch (error) {
            // A cell the journal cannot show as running is not started: a resume could not tell.
            return { ...notStarted(cell), result: 'failed', error: `not started: the journal could not be written: ${messageOf(error)}` };
          }
          const result = await migrate();
          await journal
            .cellEnded(row, result.result === 'failed' ? 'failed' : 'succeeded', result.applied, result.error)
            // Its row stays `running`; a resume runs it again and finds nothing left to apply.
            .catch(() => undefined);
          return result;
        } finally {
          release();
        }
      },
    });
    for (const result of waveResults) results.set(result.uuid, result);
    if (waveResults.some((r) => r.result === 'failed')) failed = true;
    if (wave === 0) {
      canary.cells = waveResults.length;
      canary.failed = waveResults.filter((r) => r.result === 'failed').length;
    }
    // Cells the wave never started after a failure: skipped, unless the run was interrupted
    // (they stay pending for --resume either way).
    if (!stop.interrupted) await skipPending(journal, waveRows);
  }
  if (!stop.interrupted) await skipPending(journal, todo);
  const state = stop.interrupted ? 'interrupted' : rows.every((row) => row.state === 'succeeded') ? 'succeeded' : 'failed';
  await journal.endRun(run.id, state);
  run.state = state;
  // A cell of a wave never reached: `not started` after Ctrl-C (its journal row stays `pending`),
  // else `skipped` as its journal row.
  const unreached = stop.interrupted ? ('not started' as const) : ('skipped' as const);
  const reported = todo.map(
    (row) => results.get(row.cellUuid) ?? { uuid: row.cellUuid, name: row.cellName, result: unreached, applied: [], ms: 0 },
  );
  return { run, results: reported, canaryFailed: canary.failed > 0, canary };
}

async function skipPending(journal: MigrationJournal, rows: readonly MigrationRunCell[]): Promise<void> {
  for (const row of rows) if (row.state === 'pending') await journal.cellEnded(row, 'skipped');
}

/** A cell the run did not start because it was interrupted: its journal row stays `pending`. */
function notStarted(cell: CellMapping): CellMigrationResult {
  return { uuid: cell.uuid, name: cell.name, result: 'not started', applied: [], ms: 0 };
}
