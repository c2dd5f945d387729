import type { CellMapping } from '../../entities/CellMapping';
import { InvalidArgumentError } from '../errors';

/** The `--cell` and `--all` options of the `db` commands. */
export interface SelectionOptions {
  cell?: string;
  all?: boolean;
}

/** Default of `--concurrency` of the `db` commands: cells worked on at once. */
export const DEFAULT_CONCURRENCY = 4;

/**
 * The cells a `db` command works on: the one named by `--cell`, else all of them.
 * @throws InvalidArgumentError (usage) when both `--cell` and `--all` are given; UnknownCellError.
 */
export async function selectCells(
  mappings: { cell(ref: string): Promise<CellMapping>; allCells(): Promise<CellMapping[]> },
  opts: SelectionOptions,
): Promise<CellMapping[]> {
  if (opts.cell !== undefined && opts.all)
    throw new InvalidArgumentError('Pass either --cell <name|uuid> or --all, not both.');
  return opts.cell === undefined ? mappings.allCells() : [await mappings.cell(opts.cell)];
}

