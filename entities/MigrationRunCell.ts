import { Column, Entity, Index, PrimaryGeneratedColumn } from 'typeorm';
import { JSON_TEXT } from './json-text';

/**
 * Where one cell stands in a fleet migration run: `pending` until it starts, `running` from just
 * before its migrations start (and still after the CLI died during them), `succeeded` or `failed`
 * once they end, `skipped` when the run stopped before it (a failure without --continue-on-error,
 * a failed canary, or a cell no longer mapped when the run resumed).
 */
export type MigrationRunCellState = 'pending' | 'running' | 'succeeded' | 'failed' | 'skipped';

/** One cell of a MigrationRun (`cell_migration_run_cells`): its state, what it applied, its error. */
@Entity({ name: 'cell_migration_run_cells' })
@Index('uq_cell_migration_run_cells_run_cell', ['runId', 'cellUuid'], { unique: true })
export class MigrationRunCell {
  @PrimaryGeneratedColumn({ type: 'integer' })
  id!: number;

  @Column({ name: 'run_id', type: 'integer' })
  runId!: number;

  /** The cell's uuid; no foreign key, so the journal outlives a deleted cell. */
  @Index()
  @Column({ name: 'cell_uuid', type: 'varchar', length: 36 })
  cellUuid!: string;

  /** The cell's name when the run started. */
  @Column({ name: 'cell_name', type: 'varchar', length: 255 })
  cellName!: string;

  /** Its place in the run's order (0 first). */
  @Column({ type: 'integer' })
  position!: number;

  /** Its wave: 0 for the canary, then 1, 2, ... */
  @Column({ type: 'integer' })
  wave!: number;

  @Column({ type: 'varchar', length: 16 })
  state!: MigrationRunCellState;

  /** How many times the cell turned `running` (more than 1 after a resume re-ran it). */
  @Column({ type: 'integer' })
  attempts!: number;

  /** Names of the migrations the run applied to the cell, over all its attempts; JSON in a `text` column. */
  @Column({ type: 'text', transformer: JSON_TEXT })
  applied!: string[];

  /** Why its last attempt failed, passwords masked; `null` otherwise. */
  @Column({ type: 'text', nullable: true })
  error!: string | null;

  @Column({ name: 'started_at', type: Date, nullable: true })
  startedAt!: Date | null;

  @Column({ name: 'ended_at', type: Date, nullable: true })
  endedAt!: Date | null;
}
