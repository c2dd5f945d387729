import type { Command } from 'commander';
import { MigrationRun, type MigrationRunOptions } from '../../entities/MigrationRun';
import { InvalidArgumentError } from '../errors';
import type { CellMapping } from '../../entities/CellMapping';
import type { Cells } from '../cells';
import { cellLabel } from '../route';
import { errorText, migrateCells, type CellMigrationResult } from './cell-migration';
import { DEFAULT_CONCURRENCY, selectCells, type SelectionOptions } from './cell-selection';
import { CanaryFailedError, MigrationInterruptedError, SomeCellsFailedError, signalExitStatus } from './errors';
import { resumeFleetMigration, startFleetMigration, type FleetMigrationOutcome, type StopSignal } from './fleet-migration';
import { MigrationJournal } from './migration-journal';
import { DEFAULT_LOCK_TIMEOUT_MS } from './migration-runner';
import { positiveInteger, timeoutMs } from './option-parsers';
import { formatDuration } from './output';
import type { CliSession } from './session';

interface MigrateOptions extends SelectionOptions {
  resume?: boolean;
  concurrency: number;
  lockTimeout: number;
  continueOnError?: boolean;
  canary?: string;
  waveSize?: number;
  maxPerServer?: number;
}

/** Registers `db migrate`: one cell (`--cell`), a journaled fleet run (`--all`), or its resume. */
export function registerMigrateCommand(db: Command, session: () => CliSession): void {
  db.command('migrate')
    .description(
      "apply the config's cell migrations to one cell or to every cell, several at a time",
    )
    .option('--cell <name|uuid>', 'migrate this cell only')
    .option('--all', 'migrate every cell, cell0 and disabled cells included, journaled in the API database')
    .option('--resume', 'continue the newest --all run, if unfinished, with its cells not yet succeeded (not with --all)')
    .option('--canary <cell|n>', 'with --all: migrate this cell (or the first n cells) first; stop if it fails')
    .option('--wave-size <n>', 'with --all: after the canary, migrate n cells per wave, a wave at a time', positiveInteger)
    .option('--max-per-server <n>', 'with --all: cells of one database server (host:port) migrated at once', positiveInteger)
    .option('--concurrency <n>', 'cells migrated at once', positiveInteger, DEFAULT_CONCURRENCY)
    .option(
      '--lock-timeout <ms>',
      'wait at most this long for another runner holding the cell\'s migration lock (0: no limit)',
      timeoutMs,
      DEFAULT_LOCK_TIMEOUT_MS,
    )
    .option(
      '--continue-on-error',
      'keep migrating the other cells after one fails (default: start no new cell)',
    )
    .action(async (opts: MigrateOptions) => {
      const s = session();
      checkOptions(opts);
      const config = await s.config();
      if (opts.cell !== undefined) {
        // With the API database open throughout, to report each migrated cell to every process.
        const results = await s.withCells(async (lib) =>
          migrateCells(config, await selectCells(lib.mappings, opts), {
            concurrency: opts.concurrency,
            lockTimeoutMs: opts.lockTimeout,
            continueOnError: opts.continueOnError === true,
            quiet: s.output.json,
            onMigrated: reportMigrated(s, lib),
          }),
        );
        s.output.result({ cells: results }, () => printResults(s, results));
        throwOnFailure(results, 'Applied migrations are not repeated when you run it again.');
        return;
      }
      // Set by the first SIGINT or SIGTERM; its signal gives the exit status.
      const stop: StopSignal = { interrupted: false };
      const outcome = await s.withCells(async (lib) => {
        const journal = new MigrationJournal(lib.getRepository(MigrationRun, 'api').manager);
        const cells = await lib.mappings.allCells();
        return whileCatchingStopSignals(s, stop, async () => {
          const onMigrated = reportMigrated(s, lib);
          if (!opts.resume) {
            if (opts.canary !== undefined && /^\d+$/.test(opts.canary) && Number(opts.canary) > cells.length)
              s.output.warn(
                `--canary ${Number(opts.canary)} is more than the ${cells.length} cell(s) mapped: every cell is a canary, migrated in one wave.`,
              );
            return startFleetMigration(config, journal, cells, runOptions(opts), stop, s.output.json, onMigrated);
          }
          const run = await journal.newestUnfinishedRun();
          return run && resumeFleetMigration(config, journal, run, cells, stop, s.output.json, onMigrated);
        });
      });
      if (outcome === undefined) {
        s.output.result({ run: null, cells: [] }, () => s.output.line('Nothing to resume: every migration run has finished.'));
        return;
      }
      report(s, outcome, stop.signal);
    });
}

/**
 * Tells every process running Cells that a cell was migrated (the mapping notifications), so that
 * their schema gates check it again; a failure is a warning: the cell is migrated all the same, and
 * their gates check it again within `mappingCache.ttlMs`.
 */
function reportMigrated(s: CliSession, lib: Cells): (cell: CellMapping) => Promise<void> {
  return async (cell) => {
    try {
      await lib.mappings.reportMigrated(cell.uuid);
    } catch (error) {
      s.output.warn(`Cell ${cellLabel(cell)} was migrated, but the running processes could not be told: ${errorText(error)}.`);
    }
  };
}

/** @throws InvalidArgumentError (usage) for a combination of options that means nothing. */
function checkOptions(opts: MigrateOptions): void {
  const planned = opts.canary !== undefined || opts.waveSize !== undefined || opts.maxPerServer !== undefined;
  if (opts.resume && opts.all)
    throw new InvalidArgumentError(
      '--resume continues the newest run as it started: pass it without --all (--all starts a new run, which supersedes unfinished ones).',
    );
  if (opts.resume && (opts.cell !== undefined || planned))
    throw new InvalidArgumentError(
      '--resume continues a run with the options it started with: pass no --cell, --canary, --wave-size or --max-per-server.',
    );
  if (opts.cell === undefined && !opts.all && !opts.resume)
    throw new InvalidArgumentError('Say which cells to migrate: --cell <name|uuid> or --all (or --resume to continue an unfinished run).');
  if (opts.cell !== undefined && planned)
    throw new InvalidArgumentError('--canary, --wave-size and --max-per-server go with --all, not --cell.');
  if (opts.canary !== undefined && /^\d+$/.test(opts.canary) && Number(opts.canary) < 1)
    throw new InvalidArgumentError('--canary takes a cell (name or uuid) or a number of cells >= 1.');
}

function runOptions(opts: MigrateOptions): MigrationRunOptions {
  return {
    concurrency: opts.concurrency,
    maxPerServer: opts.maxPerServer ?? null,
    waveSize: opts.waveSize ?? null,
    canary: opts.canary ?? null,
    continueOnError: opts.continueOnError === true,
    lockTimeoutMs: opts.lockTimeout,
  };
}

/**
 * Runs `fn` with a handler of SIGINT (Ctrl-C) and SIGTERM (what a CI system, a container runtime
 * or Kubernetes sends to cancel a job): the first sets `stop` (and its signal), so no more cells
 * start, the running ones finish, and the run is recorded `interrupted`. A second signal of either kind exits at once (130
 * after SIGINT, 143 after SIGTERM, as a shell reports them), leaving its cells `running` in the
 * journal for `--resume`.
 */
async function whileCatchingStopSignals<T>(s: CliSession, stop: StopSignal, fn: () => Promise<T>): Promise<T> {
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stop.interrupted) {
      // Its running cells stay `running` in the journal: --resume runs them again.
      if (stop.runId !== undefined) s.output.error(`Run #${stop.runId} left running; resume with 'typeorm-cells db migrate --resume'.`);
      process.exit(signalExitStatus(signal));
    }
    stop.interrupted = true;
    stop.signal = signal;
    const again = signal === 'SIGINT' ? 'Ctrl-C' : 'SIGTERM';
    s.output.warn(`Interrupted (${signal}): starting no more cells, letting the running ones finish (${again} again to exit now).`);
  };
  for (const signal of STOP_SIGNALS) process.on(signal, onSignal);
  try {
    return await fn();
  } finally {
    for (const signal of STOP_SIGNALS) process.off(signal, onSignal);
  }
}

const STOP_SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM'];

function report(s: CliSession, { run, results, canaryFailed, canary }: FleetMigrationOutcome, signal: NodeJS.Signals | undefined): void {
  s.output.result({ run: { id: run.id, state: run.state }, cells: results }, () => {
    printResults(s, results);
    s.output.line(`Run #${run.id}: ${run.state}.`);
  });
  const notDone = results.filter((r) => r.result !== 'migrated').length;
  if (run.state === 'interrupted') throw new MigrationInterruptedError(run.id, notDone, signal);
  if (canaryFailed) {
    const notStarted = results.filter((r) => r.result === 'skipped' || r.result === 'not started').length;
    throw new CanaryFailedError(run.id, canary.failed, canary.cells, notStarted, results.length);
  }
  throwOnFailure(
    results,
    `Run 'typeorm-cells db migrate --resume' to retry the cells not done (run #${run.id}); applied migrations are not repeated.`,
  );
}

function printResults(s: CliSession, results: readonly CellMigrationResult[]): void {
  s.output.table(
    ['Cell', 'UUID', 'Applied', 'Time', 'Result'],
    results.map((r) => [
      r.name,
      r.uuid,
      r.applied.length,
      formatDuration(r.ms),
      r.error ? `${r.result}: ${r.error}` : r.result,
    ]),
    { optional: ['UUID', 'Time'] },
  );
}

function throwOnFailure(results: readonly CellMigrationResult[], hint: string): void {
  const failed = results.filter((r) => r.result === 'failed').length;
  const skipped = results.filter((r) => r.result === 'skipped').length;
  if (failed + skipped > 0) throw new SomeCellsFailedError('migrate', failed, skipped, results.length, hint);
}
