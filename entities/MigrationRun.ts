import { Column, Entity, PrimaryGeneratedColumn } from 'typeorm';
import { JSON_TEXT } from './json-text';

/**
 * What a fleet migration run is doing: `running` while a `db migrate --all` (or `--resume`) works
 * on it (or after that process died), `interrupted` after Ctrl-C, `failed` once it stopped with
 * cells failed or skipped, `succeeded` once every cell succeeded, `superseded` once a newer
 * `db migrate --all` started before it finished (`--resume` never takes it again).
 */
export type MigrationRunState = 'running' | 'succeeded' | 'failed' | 'interrupted' | 'superseded';

/**
 * The options a fleet migration run was started with, as its journal keeps them; `--resume` runs
 * the rest of the run with the same ones.
 */
export interface MigrationRunOptions {
  /** Cells migrated at once. */
  concurrency: number;
  /** Cells of one database server (host:port) migrated at once; `null`: no limit. */
  maxPerServer: number | null;
  /** Cells per wave after the canary; `null`: one wave of every cell. */
  waveSize: number | null;
  /** `--canary` as given (a cell's name or uuid, or a count), `null` without one. */
  canary: string | null;
  continueOnError: boolean;
  lockTimeoutMs: number;
}

/**
 * One run of `db migrate --all`, the head of its journal in the API database
 * (`cell_migration_runs`); its cells are MigrationRunCell rows. Written by the CLI as the run goes.
 */
@Entity({ name: 'cell_migration_runs' })
export class MigrationRun {
  @PrimaryGeneratedColumn({ type: 'integer' })
  id!: number;

  @Column({ type: 'varchar', length: 16 })
  state!: MigrationRunState;

  /** The run's options, JSON in a `text` column (MigrationRunOptions). */
  @Column({ type: 'text', transformer: JSON_TEXT })
  options!: MigrationRunOptions;

  @Column({ name: 'started_at' })
  startedAt!: Date;

  /** When the run last stopped (finished, failed or interrupted); `null` while it runs or after a crash. */
  @Column({ name: 'ended_at', type: Date, nullable: true })
  endedAt!: Date | null;
}
