import { DidNotRespond, RaisedError, type CellMapping, type Cells } from '../../lib';
import { cellView, type CellView } from './views';

/** What one cell answered during a gather: a value, or why it did not. */
export type CellOutcome<T> =
  | { cell: CellView; ok: true; value: T }
  | { cell: CellView; ok: false; reason: 'timeout' | 'error'; error?: unknown };

/** Options of `gatherFromCells`. */
export interface GatherOptions {
  /** Give up on the cells that have not answered after this many ms; their outcome is a `timeout`. */
  timeoutMs: number;
}

/**
 * Runs `fn` in every cell at once through `cells.scatterGatherAll` (cell0, draining and read-only
 * cells included: they take no new servers but still hold old ones; disabled cells left out, as they
 * refuse every call), each call targeted at its cell, and
 * returns every cell's outcome. A cell that fails or misses the deadline never fails the gather.
 */
export async function gatherFromCells<T>(
  cells: Cells,
  fn: (cell: CellMapping) => Promise<T>,
  options: GatherOptions,
): Promise<CellOutcome<T>[]> {
  const results = await cells.scatterGatherAll(async (cell) => ({ cell, value: await fn(cell) }), {
    timeoutMs: options.timeoutMs,
  });
  return [...results.values()].map((result): CellOutcome<T> => {
    if (result instanceof DidNotRespond) return { cell: failedCell(result), ok: false, reason: 'timeout' };
    if (result instanceof RaisedError) return { cell: failedCell(result), ok: false, reason: 'error', error: result.error };
    return { cell: cellView(result.cell), ok: true, value: result.value };
  });
}

function failedCell(result: DidNotRespond | RaisedError): CellView {
  return { uuid: result.cellUuid, name: result.cellName ?? result.cellUuid };
}
