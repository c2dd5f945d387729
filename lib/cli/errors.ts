import { CellsError, sentenceStart } from '../errors';

/** The errors only the command-line tool throws; each has a stable `code`, like those of errors.ts. */

/** The CLI's config file is missing an export, fails to load, or exports no valid `CellsOptions`. */
export class ConfigFileError extends CellsError {
  readonly code = 'CELLS_CONFIG_FILE';
  constructor(readonly file: string, reason: string, options?: { cause?: unknown }) {
    super(`Config file ${file}: ${reason}.`, options);
  }
}

/** A CLI command over many cells failed for some of them; its report on stdout shows which and why. */
export class SomeCellsFailedError extends CellsError {
  readonly code = 'CELLS_SOME_CELLS_FAILED';
  constructor(action: string, readonly failed: number, readonly skipped: number, readonly total: number, hint = '') {
    super(
      `${failed} of ${total} cell(s) failed to ${action}` +
        (skipped > 0 ? ` and ${skipped} were skipped after the first failure (pass --continue-on-error to go on)` : '') +
        `; the report above shows why.${hint ? ` ${hint}` : ''}`,
    );
  }
}

/**
 * A fleet run's canary (wave 0) failed, so the run stopped before its other waves, whatever
 * `--continue-on-error` says; on a `--resume`, the canary cells still not succeeded were run again.
 * Same `code` as SomeCellsFailedError, of which it is one case.
 */
export class CanaryFailedError extends SomeCellsFailedError {
  /**
   * @param canaryFailed - canary cells that failed in this attempt, of `canaryCells` it ran.
   * @param notStarted - the run's other cells this attempt did not start.
   */
  constructor(readonly runId: number, canaryFailed: number, canaryCells: number, notStarted: number, total: number) {
    super('migrate', canaryFailed, notStarted, total);
    this.message =
      `The canary of migration run #${runId} failed (${canaryFailed} of ${canaryCells} canary cell(s)), so the run stopped ` +
      `before its other waves: ${notStarted} cell(s) not started. --continue-on-error does not go past a failed canary: ` +
      `fix it, then run 'typeorm-cells db migrate --resume'.`;
  }
}

/** `typeorm-cells cell create` could not connect to the new cell's database, so it mapped nothing. */
export class CellVerificationError extends CellsError {
  readonly code = 'CELLS_CELL_VERIFICATION_FAILED';
  constructor(readonly cell: string, reason: string, options?: { cause?: unknown }) {
    super(
      `${sentenceStart(cell)} is unreachable: ${reason}. Nothing was created; fix the URL or the database, ` +
        `or pass --no-verify to map the cell anyway.`,
      options,
    );
  }
}

/**
 * The CLI's exit status after a stop by `signal`: 143 for SIGTERM, else 130 (SIGINT); 128 + the
 * signal's number, as a shell reports a process the signal ended. @internal
 */
export function signalExitStatus(signal: NodeJS.Signals | undefined): number {
  return signal === 'SIGTERM' ? 143 : 130;
}

/**
 * `typeorm-cells db migrate --all` (or `--resume`) was interrupted (Ctrl-C / SIGINT, or SIGTERM): it
 * started no more cells, let the running ones finish and recorded the run as `interrupted`. The CLI
 * exits 130 after SIGINT, 143 after SIGTERM (128 + the signal's number, as a shell reports it).
 */
export class MigrationInterruptedError extends CellsError {
  readonly code = 'CELLS_MIGRATION_INTERRUPTED';
  constructor(
    readonly runId: number,
    readonly notDone: number,
    /** The signal that stopped the run; SIGINT when not given. */
    readonly signal: NodeJS.Signals = 'SIGINT',
  ) {
    super(
      `Interrupted: migration run #${runId} stopped with ${notDone} cell(s) not done; ` +
      `run 'typeorm-cells db migrate --resume' to continue it.`,
    );
  }
}

/**
 * `typeorm-cells db migrate --resume` found the newest unfinished run held by another process (its
 * lock on the API database, fleet-run-lock.ts): that process is still migrating it. Nothing was
 * started.
 */
export class FleetRunBusyError extends CellsError {
  readonly code = 'CELLS_FLEET_RUN_BUSY';
  /**
   * @param holder - the API database session holding the run's lock and the statement ending it,
   *   when the server says.
   */
  constructor(
    readonly runId: number,
    holder?: { session: string; end: string },
  ) {
    super(
      `Migration run #${runId} is being migrated by another process (it holds the run's lock on the API database` +
        `${holder === undefined ? '' : `: ${holder.session}`}), ` +
        `so nothing was started. Wait for it to end, or stop it (Ctrl-C), then run 'typeorm-cells db migrate --resume' again.` +
        (holder === undefined
          ? ''
          : ` If its process is gone with its host (its session not yet dropped by the server), end that session with ${holder.end} on the API database first.`),
    );
  }
}

/**
 * `typeorm-cells db migrate --resume` found the newest unfinished run's journal holding an option or
 * a cell that `db migrate --all` never writes (changed by hand in the API database). Nothing was
 * started. The CLI exits 2.
 */
export class InvalidMigrationRunError extends CellsError {
  readonly code = 'CELLS_MIGRATION_RUN_INVALID';
  /** @param what - the option or cell found invalid, never its value. */
  constructor(readonly runId: number, what: string) {
    super(
      `Migration run #${runId} in the journal (cell_migration_runs) holds an invalid ${what}, so nothing was started. ` +
        `Correct it in the API database, or start a new run with 'typeorm-cells db migrate --all'.`,
    );
  }
}
