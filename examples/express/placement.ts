import { CELL0_UUID, type CellMapping, type Cells } from '../../lib';
import { HttpError } from './errors';

/**
 * Chooses the cell of a new server: the one the client names, or the next active non-cell0 cell in
 * round-robin order (cells are re-read on each call, so a cell added, drained or disabled takes
 * effect at once). Only `active` cells take new servers: a `draining` cell keeps serving the ones it
 * holds, a `read-only` cell refuses writes, a `disabled` one every call.
 */
export class Placement {
  private turn = 0;

  constructor(private readonly cells: Cells) {}

  /**
   * @param requested a cell name or uuid from `?cell=`, or undefined for round-robin.
   * @throws HttpError 400 for cell0 or a cell that is not active; 503 when no cell takes servers;
   * UnknownCellError (400) for an unknown cell.
   */
  async choose(requested: string | undefined): Promise<CellMapping> {
    if (requested !== undefined) {
      const cell = await this.cells.mappings.cell(requested);
      if (cell.uuid === CELL0_UUID) throw new HttpError('BAD_CELL', 'cell0 holds no new servers; name another cell.');
      if (cell.state !== 'active') throw new HttpError('BAD_CELL', `Cell '${cell.name}' is ${cell.state} and takes no new servers.`);
      return cell;
    }
    const all = await this.cells.mappings.allCells({ includeCell0: false, includeDisabled: false });
    const active = all.filter((cell) => cell.state === 'active');
    if (active.length === 0) throw new HttpError('NO_CELLS', 'No active cell takes new servers; create one or set one active.');
    const cell = active[this.turn % active.length]!;
    this.turn = (this.turn + 1) % 1_000_000;
    return cell;
  }
}
