import { performance } from 'node:perf_hooks';
import { InvalidArgumentError as CommanderArgumentError, type Command } from 'commander';
import { Listr } from 'listr2';
import type { CellMapping } from '../../entities/CellMapping';
import type { CellsOptions } from '../cells-options';
import { messageOf } from '../connection-errors';
import { maskSecrets } from '../connection-url';
import { CellUnreachableError, InvalidArgumentError } from '../errors';
import { SomeCellsFailedError } from './errors';
import {
  DEFAULT_LOCK_TIMEOUT_MS,
  cellDataSource,
  migrateLocked,
  migrationStatus,
  withDataSource,
} from './migration-runner';
import { cellLabel } from '../route';
import { formatDuration } from './output';
import type { CliSession } from './session';
import { mapLimit } from './map-limit';
import { Telemetry } from '../telemetry';

/** What `db migrate` did to one cell. */
export interface CellMigrationResult {
  uuid: string;
  name: string;
  result: 'migrated' | 'failed' | 'skipped';
  /** Names of the migrations applied by this run. */
  applied: string[];
  ms: number;
  error?: string;
}

/** Applied and pending migrations of one cell, or why they could not be read. */
export interface CellStatusResult {
  uuid: string;
  name: string;
  applied: string[];
  pending: string[];
  error?: string;
}

interface SelectionOptions {
  cell?: string;
  all?: boolean;
}

const DEFAULT_CONCURRENCY = 4;

/** Registers `db migrate` and `db status`. */
export function registerDbCommands(program: Command, session: () => CliSession): void {
  const db = program
    .command('db')
    .description('cell databases: apply and inspect the migrations of the config');

  db.command('migrate')
    .description(
      "apply the config's cell migrations to one cell or to every cell, several at a time",
    )
    .option('--cell <name|uuid>', 'migrate this cell only')
    .option('--all', 'migrate every cell, cell0 and disabled cells included')
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
    .action(async (opts: SelectionOptions & { concurrency: number; lockTimeout: number; continueOnError?: boolean }) => {
      const s = session();
      if (opts.cell === undefined && !opts.all)
        throw new InvalidArgumentError('Say which cells to migrate: --cell <name|uuid> or --all.');
      const config = await s.config();
      const cells = await s.withCells((lib) => selectCells(lib.mappings, opts));
      const results = await migrateCells(config, cells, {
        concurrency: opts.concurrency,
        lockTimeoutMs: opts.lockTimeout,
        continueOnError: opts.continueOnError === true,
        quiet: s.output.json,
      });
      s.output.result({ cells: results }, () => {
        s.output.table(
          ['Cell', 'UUID', 'Applied', 'Time', 'Result'],
          results.map((r) => [
            r.name,
            r.uuid,
            r.applied.length,
            formatDuration(r.ms),
            r.error ? `failed: ${r.error}` : r.result,
          ]),
          { optional: ['UUID', 'Time'] },
        );
      });
      const failed = results.filter((r) => r.result === 'failed').length;
      const skipped = results.filter((r) => r.result === 'skipped').length;
      if (failed + skipped > 0) {
        throw new SomeCellsFailedError(
          'migrate',
          failed,
          skipped,
          results.length,
          'Applied migrations are not repeated when you run it again.',
        );
      }
    });

  db.command('status')
    .description('list the pending cell migrations of each cell (default: every cell)')
    .option('--cell <name|uuid>', 'this cell only')
    .option('--concurrency <n>', 'cells read at once', positiveInteger, DEFAULT_CONCURRENCY)
    .action(async (opts: SelectionOptions & { concurrency: number }) => {
      const s = session();
      const config = await s.config();
      const cells = await s.withCells((lib) => selectCells(lib.mappings, opts));
      const results = await mapLimit(cells, opts.concurrency, (cell) => cellStatus(config, cell));
      s.output.result({ cells: results }, () => {
        s.output.table(
          ['Cell', 'UUID', 'Applied', 'Pending', 'Pending migrations'],
          results.map((r) =>
            r.error === undefined
              ? [r.name, r.uuid, r.applied.length, r.pending.length, r.pending.join('\n') || '-']
              : [r.name, r.uuid, '?', '?', `failed: ${r.error}`],
          ),
          { optional: ['UUID'] },
        );
      });
      const failed = results.filter((r) => r.error !== undefined).length;
      if (failed > 0)
        throw new SomeCellsFailedError('report their status', failed, 0, results.length);
    });
}

/**
 * Above this many cells, progress on a terminal is one line per event (listr2's simple renderer)
 * instead of the live view: the live view redraws every cell's line on each update, a cost that
 * grows with the square of the cell count (seconds of CPU for 50 cells).
 */
export const LIVE_PROGRESS_MAX_CELLS = 20;

/**
 * Migrates `cells`, `concurrency` at a time, each through its own short-lived DataSource under
 * the migration lock (migration-lock.ts). Progress shows per cell: live on a terminal for up to
 * LIVE_PROGRESS_MAX_CELLS cells, one line per event otherwise, nothing when `quiet`. Without `continueOnError`, cells not started by the first
 * failure are skipped. A cell whose migration lock another session holds for `lockTimeoutMs` fails
 * with MigrationLockTimeoutError in its row.
 */
export async function migrateCells(
  config: CellsOptions,
  cells: CellMapping[],
  options: { concurrency: number; lockTimeoutMs: number; continueOnError: boolean; quiet: boolean },
): Promise<CellMigrationResult[]> {
  const results = new Map<string, CellMigrationResult>();
  let stopped = false;
  const tasks = new Listr(
    cells.map((cell) => ({
      title: cell.name,
      task: async (_ctx: unknown, task: { title: string; skip(message?: string): void }) => {
        if (stopped) {
          results.set(cell.uuid, {
            uuid: cell.uuid,
            name: cell.name,
            result: 'skipped',
            applied: [],
            ms: 0,
          });
          task.skip('skipped after an earlier failure');
          return;
        }
        const result = await migrateCell(config, cell, options.lockTimeoutMs);
        results.set(cell.uuid, result);
        if (result.error !== undefined) {
          if (!options.continueOnError) stopped = true;
          // On a terminal the renderer shows the error in place of the title: keep the cell's name.
          throw new Error(`${cell.name}: ${result.error}`);
        }
        task.title = `${cell.name}: ${result.applied.length} migration(s) applied in ${formatDuration(result.ms)}`;
      },
    })),
    {
      concurrent: options.concurrency,
      exitOnError: false,
      renderer: options.quiet ? 'silent' : cells.length > LIVE_PROGRESS_MAX_CELLS ? 'simple' : 'default',
      fallbackRenderer: 'simple',
      registerSignalListeners: false,
    },
  );
  await tasks.run();
  return cells.map(
    (cell) =>
      results.get(cell.uuid) ?? {
        uuid: cell.uuid,
        name: cell.name,
        result: 'skipped',
        applied: [],
        ms: 0,
      },
  );
}

async function migrateCell(
  config: CellsOptions,
  cell: CellMapping,
  lockTimeoutMs: number,
): Promise<CellMigrationResult> {
  const started = performance.now();
  const base = { uuid: cell.uuid, name: cell.name };
  const label = `cell ${cellLabel(cell)}`;
  try {
    const attributes = { 'typeorm_cells.cell.uuid': cell.uuid, 'typeorm_cells.cell.name': cell.name };
    const applied = await cliTelemetry(config).span('typeorm_cells.migrate', attributes, async (span) => {
      const names = await withDataSource(cellDataSource(config, cell, lockTimeoutMs), label, (ds) =>
        migrateLocked(ds, label, lockTimeoutMs),
      );
      span?.setAttributes({ 'typeorm_cells.migrations.applied': names.length, 'typeorm_cells.migrations': names });
      return names;
    });
    return { ...base, result: 'migrated', applied, ms: elapsed(started) };
  } catch (error) {
    return {
      ...base,
      result: 'failed',
      applied: [],
      ms: elapsed(started),
      error: errorText(error),
    };
  }
}

const telemetries = new WeakMap<CellsOptions, Telemetry>();

/** The telemetry of CLI runs with `config` (its `telemetry` option, else the global providers). */
function cliTelemetry(config: CellsOptions): Telemetry {
  let telemetry = telemetries.get(config);
  if (telemetry === undefined) {
    telemetry = new Telemetry(config.telemetry).start();
    telemetries.set(config, telemetry);
  }
  return telemetry;
}

async function cellStatus(config: CellsOptions, cell: CellMapping): Promise<CellStatusResult> {
  const base = { uuid: cell.uuid, name: cell.name };
  try {
    return {
      ...base,
      ...(await withDataSource(cellDataSource(config, cell), `cell ${cellLabel(cell)}`, migrationStatus)),
    };
  } catch (error) {
    return { ...base, applied: [], pending: [], error: errorText(error) };
  }
}

/**
 * The cells a `db` command works on: the one named by `--cell`, else all of them.
 * @throws InvalidArgumentError (usage) when both `--cell` and `--all` are given; UnknownCellError.
 */
async function selectCells(
  mappings: { cell(ref: string): Promise<CellMapping>; allCells(): Promise<CellMapping[]> },
  opts: SelectionOptions,
): Promise<CellMapping[]> {
  if (opts.cell !== undefined && opts.all)
    throw new InvalidArgumentError('Pass either --cell <name|uuid> or --all, not both.');
  return opts.cell === undefined ? mappings.allCells() : [await mappings.cell(opts.cell)];
}

/** A cell's failure for its row of the report, which already names the cell. */
function errorText(error: unknown): string {
  if (error instanceof CellUnreachableError) return `unreachable: ${messageOf(error.cause)}`;
  return maskSecrets(error instanceof Error ? error.message : String(error));
}

function elapsed(started: number): number {
  return Math.round(performance.now() - started);
}

/** Commander argument parser of `--concurrency`. */
export function positiveInteger(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new CommanderArgumentError('must be an integer >= 1.');
  return n;
}

/** PostgreSQL's largest `lock_timeout`, in ms; also the largest delay of Node's `setTimeout`. */
const MAX_TIMEOUT_MS = 2_147_483_647;

/**
 * Commander argument parser of a timeout option (`--lock-timeout`, `--config-timeout`): ms from 0
 * (no limit) to PostgreSQL's and Node's maximum.
 */
export function timeoutMs(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n > MAX_TIMEOUT_MS)
    throw new CommanderArgumentError(`must be an integer from 0 to ${MAX_TIMEOUT_MS} (ms).`);
  return n;
}
