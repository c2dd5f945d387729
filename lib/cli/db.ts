import type { Command } from 'commander';
import type { CellMapping } from '../../entities/CellMapping';
import type { CellsOptions } from '../cells-options';
import { cellLabel } from '../route';
import { errorText } from './cell-migration';
import { registerMigrateCommand } from './db-migrate';
import { SomeCellsFailedError } from './errors';
import { registerFleetStatusCommand } from './fleet-status';
import { mapLimit } from './map-limit';
import { cellDataSource, migrationStatus, withDataSource } from './migration-runner';
import { positiveInteger } from './option-parsers';
import { DEFAULT_CONCURRENCY, selectCells, type SelectionOptions } from './cell-selection';
import type { CliSession } from './session';

/** Applied and pending migrations of one cell, or why they could not be read. */
export interface CellStatusResult {
  uuid: string;
  name: string;
  applied: string[];
  pending: string[];
  error?: string;
}

/** Registers `db migrate`, `db status` and `db fleet-status`. */
export function registerDbCommands(program: Command, session: () => CliSession): void {
  const db = program
    .command('db')
    .description('cell databases: apply and inspect the migrations of the config');

  registerMigrateCommand(db, session);

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
  registerFleetStatusCommand(db, session);
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

