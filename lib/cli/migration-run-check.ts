import type { MigrationRun } from '../../entities/MigrationRun';
import type { MigrationRunCell, MigrationRunCellState } from '../../entities/MigrationRunCell';
import { InvalidMigrationRunError } from './errors';
import { MAX_TIMEOUT_MS } from './option-parsers';

/**
 * Checks a journaled run before `db migrate --resume` continues it: its options and cell states are
 * read back from the API database, where anyone with SQL may have changed them (a `maxPerServer` of
 * 0 would leave every cell waiting for a server slot for ever).
 */

/** The cell states a run's journal holds. */
const CELL_STATES: readonly MigrationRunCellState[] = ['pending', 'running', 'succeeded', 'failed', 'skipped'];

const isCount = (value: unknown): boolean => Number.isSafeInteger(value) && (value as number) >= 1;

/**
 * @throws InvalidMigrationRunError naming `run` and the first option or cell found invalid (never its
 * value): an option that is not what `db migrate --all` writes, or a cell in an unknown state or wave.
 */
export function checkJournaledRun(run: MigrationRun, cells: readonly MigrationRunCell[]): void {
  const options = (run.options ?? {}) as unknown as Record<string, unknown>;
  const invalid: Array<[string, boolean]> = [
    ['concurrency (an integer >= 1)', isCount(options['concurrency'])],
    ['maxPerServer (an integer >= 1, or null)', options['maxPerServer'] === null || isCount(options['maxPerServer'])],
    ['waveSize (an integer >= 1, or null)', options['waveSize'] === null || isCount(options['waveSize'])],
    [
      'canary (a cell name or uuid, a count >= 1, or null)',
      options['canary'] === null || (typeof options['canary'] === 'string' && options['canary'] !== '' && !/^0+$/.test(options['canary'])),
    ],
    ['continueOnError (true or false)', typeof options['continueOnError'] === 'boolean'],
    [
      `lockTimeoutMs (an integer from 0 to ${MAX_TIMEOUT_MS})`,
      Number.isSafeInteger(options['lockTimeoutMs']) && (options['lockTimeoutMs'] as number) >= 0 && (options['lockTimeoutMs'] as number) <= MAX_TIMEOUT_MS,
    ],
  ];
  const option = invalid.find(([, valid]) => !valid);
  if (option !== undefined) throw new InvalidMigrationRunError(run.id, `option ${option[0]}`);
  const cell = cells.find((row) => !CELL_STATES.includes(row.state) || !Number.isSafeInteger(row.wave) || row.wave < 0);
  if (cell !== undefined) {
    const what = CELL_STATES.includes(cell.state) ? 'a wave that is not an integer >= 0' : `an unknown state (not ${CELL_STATES.join(', ')})`;
    throw new InvalidMigrationRunError(run.id, `cell at position ${cell.position}, with ${what}`);
  }
}
