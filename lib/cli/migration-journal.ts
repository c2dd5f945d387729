import { In, LessThan, Not, type DataSource, type EntityManager } from 'typeorm';
import { MigrationRun, type MigrationRunOptions, type MigrationRunState } from '../../entities/MigrationRun';
import { MigrationRunCell, type MigrationRunCellState } from '../../entities/MigrationRunCell';
import { maskSecrets } from '../connection-url';

/**
 * The journal of fleet migrations in the API database: what `db migrate --all` writes as it goes
 * (a run, then each cell turning `running` before its migrations start and `succeeded` or `failed`
 * once they end), what `db migrate --resume` continues and what `db fleet-status` reports. Every
 * write is its own statement (autocommit), so the journal says where a run stood when its process
 * died; an error is masked before it is stored.
 */
export class MigrationJournal {
  constructor(private readonly manager: EntityManager) {}

  /** The API database's DataSource the journal is written to. */
  get dataSource(): DataSource {
    return this.manager.connection;
  }

  /**
   * Records a new run in state `running` with its cells `pending`, in `plan` order, and marks every
   * older run not finished (`running`, `failed`, `interrupted`) `superseded`: `--resume` takes only
   * the newest run.
   * @param plan - the run's cells with their wave (0: the canary).
   * @param beforeCommit - called with the new run before it is committed (before another process can
   *   see it): where the caller takes the run's lock, so that no `--resume` takes it first.
   */
  async startRun(
    options: MigrationRunOptions,
    plan: readonly { uuid: string; name: string; wave: number }[],
    beforeCommit?: (run: MigrationRun) => Promise<void>,
  ): Promise<{ run: MigrationRun; cells: MigrationRunCell[] }> {
    return this.manager.transaction(async (tx) => {
      const run = await tx.save(
        tx.create(MigrationRun, { state: 'running', options, startedAt: new Date(), endedAt: null }),
      );
      await beforeCommit?.(run);
      const cells = plan.map((cell, position) =>
        tx.create(MigrationRunCell, {
          runId: run.id,
          cellUuid: cell.uuid,
          cellName: cell.name,
          position,
          wave: cell.wave,
          state: 'pending',
          attempts: 0,
          applied: [],
          error: null,
          startedAt: null,
          endedAt: null,
        }),
      );
      // In chunks: one INSERT of thousands of cells would pass MySQL's and PostgreSQL's parameter limits.
      await tx.save(cells, { chunk: 500 });
      await tx.update(
        MigrationRun,
        { id: LessThan(run.id), state: Not(In(['succeeded', 'superseded'] satisfies MigrationRunState[])) },
        { state: 'superseded', endedAt: new Date() },
      );
      return { run, cells };
    });
  }

  /**
   * The newest run when it has not finished (`running`, `failed` or `interrupted`), else
   * `undefined`: an older run is never resumed once a newer one exists (a run a newer one found
   * unfinished is `superseded`).
   */
  async newestUnfinishedRun(): Promise<MigrationRun | undefined> {
    const [run] = await this.manager.find(MigrationRun, { order: { id: 'DESC' }, take: 1 });
    return run === undefined || run.state === 'succeeded' || run.state === 'superseded' ? undefined : run;
  }

  /** The cells of run `runId`, in the run's order. */
  cellsOf(runId: number): Promise<MigrationRunCell[]> {
    return this.manager.find(MigrationRunCell, { where: { runId }, order: { position: 'ASC' } });
  }

  /** Marks run `runId` as running again (a resume). */
  async resumeRun(runId: number): Promise<void> {
    await this.manager.update(MigrationRun, { id: runId }, { state: 'running', endedAt: null });
  }

  /** Records that `cell` starts an attempt: `running`, one more attempt, its error cleared. */
  async cellStarted(cell: MigrationRunCell): Promise<void> {
    cell.state = 'running';
    cell.attempts += 1;
    cell.error = null;
    cell.startedAt = new Date();
    cell.endedAt = null;
    await this.write(cell);
  }

  /**
   * Records how an attempt of `cell` ended: `applied` added to what earlier attempts applied,
   * `error` masked.
   */
  async cellEnded(
    cell: MigrationRunCell,
    state: Extract<MigrationRunCellState, 'succeeded' | 'failed' | 'skipped'>,
    applied: readonly string[] = [],
    error?: string,
  ): Promise<void> {
    cell.state = state;
    cell.applied = [...cell.applied, ...applied.filter((name) => !cell.applied.includes(name))];
    cell.error = error === undefined ? null : maskSecrets(error);
    cell.endedAt = new Date();
    await this.write(cell);
  }

  /**
   * Records that run `runId` stopped in `state`, unless a newer run superseded it meanwhile (a
   * process still working on it when `db migrate --all` started again): it stays `superseded`.
   */
  async endRun(runId: number, state: Exclude<MigrationRunState, 'running' | 'superseded'>): Promise<void> {
    await this.manager.update(MigrationRun, { id: runId, state: Not('superseded') }, { state, endedAt: new Date() });
  }

  /** The newest journal row of each of `uuids` (its last run's outcome), by cell uuid. */
  async lastOutcomes(uuids: readonly string[]): Promise<Map<string, MigrationRunCell>> {
    const outcomes = new Map<string, MigrationRunCell>();
    if (uuids.length === 0) return outcomes;
    // One row per cell, its newest run's (a correlated MAX on the cell_uuid index): the journal keeps
    // every run's rows, which a fleet deployed daily makes millions.
    const rows = await this.manager
      .createQueryBuilder(MigrationRunCell, 'cell')
      .where('cell.cellUuid IN (:...uuids)', { uuids: [...uuids] })
      .andWhere((qb) => {
        const newest = qb
          .subQuery()
          .select('MAX(newest.runId)')
          .from(MigrationRunCell, 'newest')
          .where('newest.cellUuid = cell.cellUuid')
          .getQuery();
        return `cell.runId = ${newest}`;
      })
      .getMany();
    for (const row of rows) if (!outcomes.has(row.cellUuid)) outcomes.set(row.cellUuid, row);
    return outcomes;
  }

  private async write(cell: MigrationRunCell): Promise<void> {
    const { state, attempts, applied, error, startedAt, endedAt } = cell;
    await this.manager.update(MigrationRunCell, { id: cell.id }, { state, attempts, applied, error, startedAt, endedAt });
  }
}
