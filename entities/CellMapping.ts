import { inspect } from 'node:util';
import {
  Column,
  CreateDateColumn,
  Entity,
  Index,
  PrimaryGeneratedColumn,
  UpdateDateColumn,
} from 'typeorm';
import { redactUrl } from '../lib/connection-url';

/** The uuid Nova reserves for cell0, the cell of records that never reached a real cell. */
export const CELL0_UUID = '00000000-0000-0000-0000-000000000000';

/**
 * What a cell serves, changed live with `cells.mappings.setCellState` (or `cell set-state`):
 * - `active`: reads and writes;
 * - `read-only`: reads; routed writes fail with CellReadOnlyError before reaching the database, and
 *   its connections run with read-only transactions, so a raw write is refused by the server too;
 * - `draining`: reads and writes of existing data, but no new placements (`allCells` with
 *   `includeDraining: false` leaves it out);
 * - `disabled`: routed calls fail with CellDisabledError; `scatterGatherAll` leaves it out.
 */
export type CellState = 'active' | 'read-only' | 'draining' | 'disabled';

/** Every cell state, in the order an operator takes a cell out of service. */
export const CELL_STATES: readonly CellState[] = ['active', 'read-only', 'draining', 'disabled'];

/**
 * One cell: its name, uuid and database connection, stored in the API database.
 * `toJSON()` and `util.inspect` mask the password of `databaseConnection` and `transportUrl`.
 */
@Entity({ name: 'cell_mappings' })
export class CellMapping {
  @PrimaryGeneratedColumn({ type: 'integer' })
  id!: number;

  @Index({ unique: true })
  @Column({ type: 'varchar', length: 36 })
  uuid!: string;

  @Index({ unique: true })
  @Column({ type: 'varchar', length: 255 })
  name!: string;

  /** A postgres:// URL; it carries a password, so never log or return it unmasked. */
  @Column({ name: 'database_connection', type: 'text' })
  databaseConnection!: string;

  /**
   * Reader connections (postgres:// URLs of read replicas of `databaseConnection`), or `null` for
   * none. Routed reads of a context with `readFrom: 'replica'` go to them, round-robin. Stored as a
   * JSON array of strings in a nullable `text` column (`read_connections`), so it reads the same on
   * any engine; a column holding a bare URL (written with plain SQL) reads as a list of one. They
   * carry passwords: never log or return them unmasked.
   */
  @Column({ name: 'read_connections', type: 'text', nullable: true, transformer: { to: readConnectionsToColumn, from: readConnectionsFromColumn } })
  readConnections!: string[] | null;

  @Column({ name: 'transport_url', type: 'text', nullable: true })
  transportUrl!: string | null;

  /** What the cell serves (see CellState). Default: `'active'`. */
  @Column({ type: 'varchar', length: 16, default: 'active' })
  state!: CellState;

  @CreateDateColumn({ name: 'created_at' })
  createdAt!: Date;

  @UpdateDateColumn({ name: 'updated_at' })
  updatedAt!: Date;

  /**
   * True when `state` is `'disabled'`: the boolean column cells had before their states, kept for
   * code that reads it. Change it through `state` (or `updateCell(cell, { disabled })`).
   */
  get disabled(): boolean {
    return this.state === 'disabled';
  }

  /** True for cell0 (uuid `00000000-0000-0000-0000-000000000000`). */
  get isCell0(): boolean {
    return this.uuid === CELL0_UUID;
  }

  toJSON(): Record<string, unknown> {
    return {
      id: this.id,
      uuid: this.uuid,
      name: this.name,
      databaseConnection: this.databaseConnection === undefined ? undefined : redactUrl(this.databaseConnection),
      readConnections: Array.isArray(this.readConnections) ? this.readConnections.map((url) => redactUrl(String(url))) : this.readConnections,
      transportUrl: this.transportUrl ? redactUrl(this.transportUrl) : this.transportUrl,
      state: this.state,
      disabled: this.disabled,
      createdAt: this.createdAt,
      updatedAt: this.updatedAt,
    };
  }

  [inspect.custom](): string {
    return `CellMapping ${inspect(this.toJSON())}`;
  }
}

/** `readConnections` as stored: a JSON array, `null` for none (an empty list included). */
function readConnectionsToColumn(value: unknown): string | null | undefined {
  if (value === undefined) return undefined;
  return Array.isArray(value) && value.length > 0 ? JSON.stringify(value) : null;
}

/** The stored column as `readConnections`: a JSON array of strings, or a bare URL as a list of one. */
function readConnectionsFromColumn(value: unknown): string[] | null {
  if (typeof value !== 'string' || value.trim() === '') return null;
  try {
    const parsed: unknown = JSON.parse(value);
    if (Array.isArray(parsed) && parsed.every((item) => typeof item === 'string')) return parsed.length > 0 ? parsed : null;
  } catch {
    // Not JSON: a URL written with plain SQL. It is validated when the cell opens.
  }
  return [value];
}
