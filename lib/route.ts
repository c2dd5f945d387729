import type { EntityManager } from 'typeorm';
import type { CellMapping } from '../entities/CellMapping';
import type { RouteTelemetry } from './telemetry-attributes';

/**
 * The route of a call: which database a routed call (or a transaction) runs on, and how errors
 * name it. `Cells.route` picks one from the selector and the context's target cell (see
 * `routeKey`); the registry (cells), `StaticRoute` (API and default main database) and
 * `TransactionRoute` (transaction.ts) implement it.
 */

/**
 * A database a routed call can run on. Calls take a lease for their whole duration (`acquire` /
 * `release`), so the registry never closes a DataSource under a running query. @internal
 */
export interface Route {
  readonly manager: EntityManager;
  /** How errors name this database, e.g. `cell 'cell1' (uuid)`; never a URL. */
  readonly label: string;
  /**
   * True for a cell that was read-only when its DataSource (or the transaction) opened: routed
   * writes fail with CellReadOnlyError before reaching it. Absent: false.
   */
  readonly readOnly?: boolean;
  /** Its span and metric attributes (telemetry-attributes.ts); none when unknown. */
  readonly telemetry?: RouteTelemetry | undefined;
  release(): void;
}

/**
 * A transaction open in a context; routed repositories of the same database join it. Declared
 * here, beside Route, so that context.ts can hold one without importing transaction.ts (which
 * imports context.ts); `TransactionRoute` implements it. @internal
 */
export interface ActiveTransaction {
  /** The Cells instance that opened it: repositories of another instance do not join. */
  readonly owner: object;
  /** The routing key of its database (see `routeKey`). */
  readonly key: string;
  /** How errors name its database. */
  readonly label: string;
  readonly manager: EntityManager;
  /** False once the transaction's callback has finished: its context is then free to retarget. */
  readonly running: boolean;
}

/** Which database a routed builder or repository talks to: the API database, or the current cell. */
export type DatabaseSelector = 'api' | 'main';

/** Routing key of the API database. @internal */
export const API_KEY = 'api';
/** Routing key of the default main database (a `'main'` call in an untargeted context). @internal */
export const MAIN_KEY = 'main';

/** How errors name the API database. @internal */
export const API_LABEL = 'the API database';
/** How errors name the default main database. @internal */
export const MAIN_LABEL = 'the default main database';

/**
 * The routing key of a call on `db` from a context targeting `cellUuid`: `API_KEY`, `MAIN_KEY`
 * (untargeted), or the cell's uuid, which is the registry's key. Uuids are validated, so no cell
 * key equals a fixed one. @internal
 */
export function routeKey(db: DatabaseSelector, cellUuid: string | null): string {
  if (db === 'api') return API_KEY;
  return cellUuid ?? MAIN_KEY;
}

/** How messages and tables name a cell: `'name' (uuid)`; never its URL. @internal */
export function cellLabel(cell: Pick<CellMapping, 'name' | 'uuid'>): string {
  return `'${cell.name}' (${cell.uuid})`;
}

/** How errors name a cell's database, as the route of its calls: `cell 'name' (uuid)`. @internal */
export function cellRouteLabel(cell: Pick<CellMapping, 'name' | 'uuid'>): string {
  return `cell ${cellLabel(cell)}`;
}

/**
 * A database that is always open while Cells is ready: the API or the default main database. Calls
 * take a lease like cell calls, so destroy() closes it only once they have finished. @internal
 */
export class StaticRoute implements Route {
  leases = 0;
  private idle: (() => void) | undefined;

  constructor(
    readonly manager: EntityManager,
    readonly label: string,
    readonly telemetry?: RouteTelemetry,
  ) {}

  acquire(): this {
    this.leases++;
    return this;
  }

  release(): void {
    if (--this.leases === 0) this.idle?.();
  }

  /** Resolves once no call holds a lease. */
  drained(): Promise<void> {
    if (this.leases === 0) return Promise.resolve();
    return new Promise((resolve) => (this.idle = resolve));
  }
}
