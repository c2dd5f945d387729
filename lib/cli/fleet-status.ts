import type { Command } from 'commander';
import { DataSource } from 'typeorm';
import { ConnectionMetadataBuilder } from 'typeorm/connection/ConnectionMetadataBuilder';
import { ObjectUtils } from 'typeorm/util/ObjectUtils';
import type { CellMapping } from '../../entities/CellMapping';
import { MigrationRun } from '../../entities/MigrationRun';
import type { MigrationRunCell } from '../../entities/MigrationRunCell';
import type { CellsOptions } from '../cells-options';
import { cellLabel } from '../route';
import { orderedMigrationNames } from '../schema-gate';
import { errorText } from './cell-migration';
import { DEFAULT_CONCURRENCY } from './cell-selection';
import { SomeCellsFailedError } from './errors';
import { mapLimit } from './map-limit';
import { MigrationJournal } from './migration-journal';
import { cellDataSource, migrationStatus, withDataSource } from './migration-runner';
import { positiveInteger } from './option-parsers';
import { oneLine, printable } from './output';
import type { CliSession } from './session';

/** The last fleet migration run of a cell, from the journal. */
export interface LastRunOutcome {
  runId: number;
  state: MigrationRunCell['state'];
  attempts: number;
  endedAt: Date | null;
  error: string | null;
}

/** One cell's row of `db fleet-status`. */
export interface CellFleetStatus {
  uuid: string;
  name: string;
  /** The last migration applied to the cell (its migrations table), `null` for none. */
  version: string | null;
  /** The newest migration of the config, `null` when it has none (also for a cell that could not be read). */
  newest: string | null;
  /** How many of the config's migrations the cell has not applied; `null` (unknown) when its migrations could not be read. */
  pending: number | null;
  /** The cell's row of the newest fleet migration run that included it; `null` for none. */
  lastRun: LastRunOutcome | null;
  /** Why the cell's migrations could not be read (masked). */
  error?: string;
}

/** Registers `db fleet-status`. */
export function registerFleetStatusCommand(db: Command, session: () => CliSession): void {
  db.command('fleet-status')
    .description("each cell's schema version against the newest migration, and its last migration run")
    .option('--concurrency <n>', 'cells read at once', positiveInteger, DEFAULT_CONCURRENCY)
    .action(async (opts: { concurrency: number }) => {
      const s = session();
      const config = await s.config();
      const { cells, outcomes } = await s.withCells(async (lib) => {
        const all = await lib.mappings.allCells();
        const journal = new MigrationJournal(lib.getRepository(MigrationRun, 'api').manager);
        return { cells: all, outcomes: await journal.lastOutcomes(all.map((c) => c.uuid)) };
      });
      const newest = (await configMigrationNames(config)).at(-1) ?? null;
      const rows = await mapLimit(cells, opts.concurrency, (cell) => cellFleetStatus(config, cell, newest, outcomes.get(cell.uuid)));
      s.output.result({ newest, cells: rows }, () => {
        s.output.table(
          ['Cell', 'UUID', 'Schema version', 'Behind', 'Last run'],
          rows.map((r) => [
            r.name,
            r.uuid,
            r.error === undefined ? r.version ?? '-' : 'unreadable (below)',
            r.pending === null ? 'unknown' : r.pending === 0 ? 'up to date' : `${r.pending} migration(s)`,
            r.lastRun === null ? '-' : `#${r.lastRun.runId} ${r.lastRun.state}${r.lastRun.error ? `: ${r.lastRun.error}` : ''}`,
          ]),
          { optional: ['UUID'] },
        );
        s.output.line(`Newest migration: ${newest ?? '-'}.`);
        // Below the table, which a long error would make too wide to read.
        for (const r of rows) if (r.error !== undefined) s.output.line(printable(`${r.name}: schema version unreadable: ${oneLine(r.error)}`, false));
      });
      const failed = rows.filter((r) => r.error !== undefined).length;
      if (failed > 0) throw new SomeCellsFailedError('report their status', failed, 0, rows.length);
    });
}

/**
 * The names of the config's cell migrations in the order TypeORM applies them, loaded as a cell's
 * DataSource loads them (classes, or files by glob), without connecting to any database.
 */
async function configMigrationNames(config: CellsOptions): Promise<string[]> {
  const given = ObjectUtils.mixedListToArray(config.migrations ?? []);
  const builder = new ConnectionMetadataBuilder(new DataSource({ type: 'postgres', migrations: given }));
  return orderedMigrationNames(await builder.buildMigrations(given));
}

async function cellFleetStatus(
  config: CellsOptions,
  cell: CellMapping,
  newest: string | null,
  outcome: MigrationRunCell | undefined,
): Promise<CellFleetStatus> {
  const lastRun =
    outcome === undefined
      ? null
      : { runId: outcome.runId, state: outcome.state, attempts: outcome.attempts, endedAt: outcome.endedAt, error: outcome.error };
  const base = { uuid: cell.uuid, name: cell.name, lastRun };
  try {
    return await withDataSource(cellDataSource(config, cell), `cell ${cellLabel(cell)}`, async (ds) => {
      const { applied, pending } = await migrationStatus(ds);
      return { ...base, version: applied.at(-1) ?? null, newest, pending: pending.length };
    });
  } catch (error) {
    return { ...base, version: null, newest, pending: null, error: errorText(error) };
  }
}
