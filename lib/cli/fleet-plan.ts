import type { CellMapping } from '../../entities/CellMapping';
import { parseConnectionUrl } from '../connection-url';
import { UnknownCellError } from '../errors';
import { cellRouteLabel } from '../route';

/**
 * The order of a fleet migration: which cells form the canary (wave 0) and which the waves after
 * it, and how the cells of one wave share the database servers (`--max-per-server`).
 */

/** One cell of a fleet migration's plan. */
export interface PlannedCell {
  uuid: string;
  name: string;
  /** 0: the canary; then 1, 2, ... */
  wave: number;
}

/**
 * Splits `cells` (in their order) into the canary and waves of `waveSize`.
 * @param canary - a cell's name or uuid, or a count of the first cells (digits only); `undefined`:
 * no canary.
 * @param waveSize - cells per wave after the canary; `undefined`: one wave of the rest.
 * @throws UnknownCellError when `canary` names no cell of `cells`.
 */
export function planWaves(
  cells: readonly CellMapping[],
  { canary, waveSize }: { canary?: string; waveSize?: number },
): PlannedCell[] {
  let canaries: CellMapping[] = [];
  if (canary !== undefined) {
    if (/^\d+$/.test(canary)) canaries = cells.slice(0, Number(canary));
    else {
      const named = cells.find((cell) => cell.uuid === canary || cell.name === canary);
      if (named === undefined) throw new UnknownCellError(canary);
      canaries = [named];
    }
  }
  const rest = cells.filter((cell) => !canaries.includes(cell));
  const size = waveSize ?? Math.max(rest.length, 1);
  return [
    ...canaries.map((cell) => ({ uuid: cell.uuid, name: cell.name, wave: 0 })),
    ...rest.map((cell, i) => ({ uuid: cell.uuid, name: cell.name, wave: 1 + Math.floor(i / size) })),
  ];
}

/**
 * The database server a cell's migrations load: `host:port` of its connection URL (the URL's
 * spelling, so `localhost` and `127.0.0.1` count as two). A URL that does not parse is a server of
 * its own; its cell fails when it connects.
 */
export function serverOf(cell: CellMapping): string {
  try {
    const { host, port } = parseConnectionUrl(cell.databaseConnection, cellRouteLabel(cell));
    return `${host}:${port}`;
  } catch {
    return `unparsed:${cell.uuid}`;
  }
}

/**
 * `cells` reordered to take one cell of each server in turn (servers in order of first
 * appearance), so a runner that starts cells in order rarely waits for a server slot while another
 * server has none in use.
 */
export function alternateServers<T>(cells: readonly T[], server: (cell: T) => string): T[] {
  const queues = new Map<string, T[]>();
  for (const cell of cells) {
    const key = server(cell);
    const queue = queues.get(key);
    if (queue) queue.push(cell);
    else queues.set(key, [cell]);
  }
  const ordered: T[] = [];
  while (ordered.length < cells.length) {
    for (const queue of queues.values()) {
      const next = queue.shift();
      if (next !== undefined) ordered.push(next);
    }
  }
  return ordered;
}

/** At most `limit` holders per server at once; the others wait in arrival order. */
export class ServerSlots {
  private readonly inUse = new Map<string, number>();
  private readonly waiting = new Map<string, (() => void)[]>();

  /** @param limit - holders per server; `Infinity` for no limit. */
  constructor(private readonly limit: number) {}

  /** Waits for a slot of `server`; resolves with the function that gives it back (call it once). */
  async acquire(server: string): Promise<() => void> {
    if ((this.inUse.get(server) ?? 0) >= this.limit) {
      await new Promise<void>((resolve) => {
        const queue = this.waiting.get(server) ?? [];
        queue.push(resolve);
        this.waiting.set(server, queue);
      });
    } else {
      this.inUse.set(server, (this.inUse.get(server) ?? 0) + 1);
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      // The slot passes straight to the next waiter, or is counted free.
      const next = this.waiting.get(server)?.shift();
      if (next) next();
      else this.inUse.set(server, (this.inUse.get(server) ?? 1) - 1);
    };
  }
}
