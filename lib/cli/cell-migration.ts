import { performance } from 'node:perf_hooks';
import { LISTR_LOGGER_STDERR_LEVELS, Listr, ListrLogLevels, ListrLogger, SimpleRenderer } from 'listr2';
import type { CellMapping } from '../../entities/CellMapping';
import type { CellsOptions } from '../cells-options';
import { messageOf } from '../connection-errors';
import { maskSecrets } from '../connection-url';
import { CellUnreachableError } from '../errors';
import { cellLabel } from '../route';
import { Telemetry } from '../telemetry';
import { migrateLocked } from '../migration-lock';
import { cellDataSource, withDataSource } from './migration-runner';
import { formatDuration, printable } from './output';

/** What `db migrate` did to one cell. */
export interface CellMigrationResult {
  uuid: string;
  name: string;
  /**
   * `skipped`: not started because an earlier cell failed (journal `skipped`); `not started`: not
   * started because the run was interrupted (Ctrl-C; journal `pending`, for `--resume`).
   */
  result: 'migrated' | 'failed' | 'skipped' | 'not started';
  /** Names of the migrations applied by this run. */
  applied: string[];
  ms: number;
  error?: string;
}

/** Options of `migrateCells`. */
export interface MigrateCellsOptions {
  /** Cells migrated at once. */
  concurrency: number;
  /** Longest wait for a cell's migration lock, in ms (0: no limit). */
  lockTimeoutMs: number;
  /** Keep starting cells after one failed. */
  continueOnError: boolean;
  /** Print no progress. */
  quiet: boolean;
  /**
   * Wraps the migration of each cell (its journal entries, its server's slot): calls `migrate` once
   * the cell really starts, or returns a `not started` result without calling it. Default: calls `migrate`.
   */
  around?(cell: CellMapping, migrate: () => Promise<CellMigrationResult>): Promise<CellMigrationResult>;
  /**
   * Called once migrations were applied to a cell (not when it had none pending), after its
   * migration (and `around`) ended: `db migrate` tells every process through the mapping notifications, so their
   * schema gates (`requireSchema`) check the cell again. What it throws is ignored. Default: none.
   */
  onMigrated?(cell: CellMapping, applied: readonly string[]): Promise<void>;
}

/**
 * Above this many cells, progress on a terminal is one line per event (listr2's simple renderer)
 * instead of the live view: the live view redraws every cell's line on each update, a cost that
 * grows with the square of the cell count (seconds of CPU for 50 cells).
 */
export const LIVE_PROGRESS_MAX_CELLS = 20;

/**
 * Migrates `cells`, `concurrency` at a time, each through its own short-lived DataSource under
 * the migration lock (lib/migration-lock.ts). Progress shows per cell: live on a terminal for up to
 * LIVE_PROGRESS_MAX_CELLS cells, one line per event otherwise, nothing when `quiet`. Without `continueOnError`, cells not started by the first
 * failure are skipped. A cell whose migration lock another session holds for `lockTimeoutMs` fails
 * with MigrationLockTimeoutError in its row.
 */
export async function migrateCells(
  config: CellsOptions,
  cells: CellMapping[],
  options: MigrateCellsOptions,
): Promise<CellMigrationResult[]> {
  const results = new Map<string, CellMigrationResult>();
  let stopped = false;
  // A task has no title until its cell really starts (`around` may first wait for its server's
  // slot): untitled, the live view does not show it and the line-per-event renderer prints no start
  // line; that line is printed through this logger, the renderer's, once the cell starts.
  const logger = new ListrLogger({ useIcons: true, toStderr: LISTR_LOGGER_STDERR_LEVELS });
  let lineRenderer = false;
  const renderer = options.quiet ? 'silent' : cells.length > LIVE_PROGRESS_MAX_CELLS ? 'simple' : 'default';
  const tasks = new Listr(
    cells.map((cell) => ({
      task: async (_ctx: unknown, task: { title: string | undefined; skip(message?: string): void }) => {
        // Progress goes to the terminal past Output: the name with its control characters escaped.
        const shown = printable(cell.name, false);
        const named = (): void => {
          if (task.title === undefined) task.title = shown;
        };
        if (stopped) {
          named();
          results.set(cell.uuid, skipped(cell));
          task.skip('skipped after an earlier failure');
          return;
        }
        const migrate = (): Promise<CellMigrationResult> => {
          named();
          if (lineRenderer) logger.log(ListrLogLevels.STARTED, shown);
          return migrateCell(config, cell, options.lockTimeoutMs);
        };
        const result = await (options.around ? options.around(cell, migrate) : migrate());
        named();
        if (result.result === 'migrated' && result.applied.length > 0) {
          await options.onMigrated?.(cell, result.applied).catch(() => undefined);
        }
        results.set(cell.uuid, result);
        if (result.result === 'skipped' || result.result === 'not started') {
          task.skip('not started: the run is stopping');
          return;
        }
        if (result.error !== undefined) {
          if (!options.continueOnError) stopped = true;
          // On a terminal the renderer shows the error in place of the title: keep the cell's name.
          throw new Error(printable(`${cell.name}: ${result.error}`, false));
        }
        task.title = `${shown}: ${result.applied.length} migration(s) applied in ${formatDuration(result.ms)}`;
      },
    })),
    {
      concurrent: options.concurrency,
      exitOnError: false,
      renderer,
      fallbackRenderer: 'simple',
      // The default renderer would restyle a logger given to it: only the line-per-event one gets it.
      ...(renderer === 'simple' ? { rendererOptions: { logger } } : {}),
      fallbackRendererOptions: { logger },
      registerSignalListeners: false,
    },
  );
  lineRenderer = tasks.rendererClass === SimpleRenderer;
  await tasks.run();
  return cells.map((cell) => results.get(cell.uuid) ?? skipped(cell));
}

/** A cell not started after an earlier failure. */
function skipped(cell: CellMapping): CellMigrationResult {
  return { uuid: cell.uuid, name: cell.name, result: 'skipped', applied: [], ms: 0 };
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

/** A cell's failure for its row of the report, which already names the cell; passwords masked. @internal */
export function errorText(error: unknown): string {
  if (error instanceof CellUnreachableError) return `unreachable: ${messageOf(error.cause)}`;
  return maskSecrets(error instanceof Error ? error.message : String(error));
}

function elapsed(started: number): number {
  return Math.round(performance.now() - started);
}

