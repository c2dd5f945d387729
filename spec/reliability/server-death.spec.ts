import { randomUUID } from 'node:crypto';
import type { EntityManager } from 'typeorm';
import {
  CellUnreachableError,
  RaisedError,
  targetCell,
  type CellMapping,
  type Cells,
} from '../../lib';
import { createCellWorld, migrateCellDatabase, type CellWorld } from '../support/cells';
import { adminQuery } from '../support/databases';
import { eventually } from '../support/peers';
import { startSecondServer, type SecondServer } from '../support/second-server';
import { Widget } from '../support/widget';
import { reportFigure } from './figures';
import { createLoadWorld, runConcurrently, sleep } from './support-load';

// Scenario 2 of "Reliability and security": the server of two cells is killed (SIGKILL) under
// routed load, stays down, and comes back; the other cells never notice, and the same Cells
// instance serves the revived cells again.
const SCENARIO = 'cell server death';
const HEALTHY_CELLS = 4;
const DEAD_CELLS = 2;
const WORKERS_PER_CELL = 2;
const WARM_MS = 1_500;
const DOWN_MS = 3_000;
const SCATTER_TIMEOUT_MS = 10_000;
const RECOVERY_BOUND_MS = 15_000;
const CALLS_AFTER_RECOVERY = 20;

type Phase = 'before' | 'down' | 'revived';

/** What the load saw on one cell. */
interface CellTally {
  mapping: CellMapping;
  dead: boolean;
  ok: Record<Phase, number>;
  unreachable: number;
  /** Errors other than CellUnreachableError. */
  untyped: unknown[];
  /** When a call on this cell first succeeded after the restart. */
  firstSuccessAfterRestart: number | undefined;
}

/** A mix of routed calls on the current cell: insert, findOneBy, count, a transaction. */
async function routedCall(lib: Cells, cell: CellMapping, n: number): Promise<void> {
  const widgets = lib.getRepository(Widget);
  const uuid = randomUUID();
  switch (n % 4) {
    case 0:
      await widgets.insert({ uuid, name: 'death', intendedCell: cell.uuid });
      return;
    case 1:
      await widgets.findOneBy({ uuid });
      return;
    case 2:
      await widgets.count();
      return;
    default:
      await lib.transaction(async () => {
        await widgets.insert({ uuid, name: 'death-tx', intendedCell: cell.uuid });
        await widgets.query('SELECT pg_sleep(0.02)');
        await widgets.countBy({ uuid });
      });
  }
}

describe('cell server death', () => {
  let second: SecondServer;
  let world: CellWorld;
  let tallies: CellTally[];
  let scatterMs: number;
  let scatterMarked: { dead: number; typed: number; healthyAnswered: number };
  let recoveryMs: number;
  let killedFor: number;
  let afterRecovery: { ok: number; failed: unknown[] };

  beforeAll(async () => {
    second = await startSecondServer('cells-death-pg');
    world = await createLoadWorld('death', {
      cellCount: HEALTHY_CELLS,
      cells: { connectTimeoutMs: 2_000 },
    });
    const { lib } = world;
    const dead: CellMapping[] = [];
    for (let i = 0; i < DEAD_CELLS; i++) {
      const url = await second.createDatabase(`cells_death_far${i}_${process.pid}`);
      await migrateCellDatabase(url);
      dead.push(await lib.mappings.createCell({ name: `death-far${i}`, databaseConnection: url }));
    }
    const tally = (mapping: CellMapping, isDead: boolean): CellTally => ({
      mapping,
      dead: isDead,
      ok: { before: 0, down: 0, revived: 0 },
      unreachable: 0,
      untyped: [],
      firstSuccessAfterRestart: undefined,
    });
    tallies = [
      ...world.cells.map((c) => tally(c.mapping, false)),
      ...dead.map((m) => tally(m, true)),
    ];

    let phase: Phase = 'before';
    let restartedAt = Infinity;
    let stopping = false;
    const load = runConcurrently(tallies.length * WORKERS_PER_CELL, async (worker) => {
      const t = tallies[worker % tallies.length]!;
      for (let n = worker; !stopping; n++) {
        try {
          await targetCell(t.mapping, () => routedCall(lib, t.mapping, n));
          t.ok[phase]++;
          if (phase === 'revived' && t.firstSuccessAfterRestart === undefined)
            t.firstSuccessAfterRestart = performance.now();
          await sleep(2);
        } catch (error) {
          if (error instanceof CellUnreachableError) t.unreachable++;
          else t.untyped.push(error);
          // A dead server refuses at once: do not spin.
          await sleep(25);
        }
      }
    });

    try {
      await sleep(WARM_MS);
      phase = 'down';
      const killedAt = performance.now();
      await second.kill();
      await sleep(500);

      const widgets = lib.getRepository(Widget);
      const started = performance.now();
      const gathered = await lib.scatterGatherAll(() => widgets.count(), {
        timeoutMs: SCATTER_TIMEOUT_MS,
      });
      scatterMs = performance.now() - started;
      scatterMarked = { dead: 0, typed: 0, healthyAnswered: 0 };
      for (const t of tallies) {
        const result = gathered.get(t.mapping.uuid);
        if (t.dead && result instanceof RaisedError) {
          scatterMarked.dead++;
          if (result.error instanceof CellUnreachableError) scatterMarked.typed++;
        }
        if (!t.dead && typeof result === 'number') scatterMarked.healthyAnswered++;
      }

      await sleep(Math.max(0, DOWN_MS - (performance.now() - killedAt)));
      await second.start();
      restartedAt = performance.now();
      killedFor = restartedAt - killedAt;
      phase = 'revived';
      const revived = tallies.filter((t) => t.dead);
      await eventually(
        () => revived.every((t) => t.firstSuccessAfterRestart !== undefined),
        RECOVERY_BOUND_MS * 2,
      );
      recoveryMs = Math.max(...revived.map((t) => t.firstSuccessAfterRestart! - restartedAt));
      await sleep(1_000);
    } finally {
      stopping = true;
      await load;
    }

    // The same Cells instance, no restart: every call to a revived cell succeeds again.
    afterRecovery = { ok: 0, failed: [] };
    for (const t of tallies.filter((x) => x.dead)) {
      for (let n = 0; n < CALLS_AFTER_RECOVERY / DEAD_CELLS; n++) {
        try {
          await targetCell(t.mapping, () => routedCall(lib, t.mapping, n));
          afterRecovery.ok++;
        } catch (error) {
          afterRecovery.failed.push(error);
        }
      }
    }
  }, 120_000);

  afterAll(async () => {
    await world?.destroy();
    await second?.remove();
  }, 60_000);

  it('keeps every call to the healthy cells succeeding while the other server is dead', () => {
    const healthy = tallies.filter((t) => !t.dead);
    const errors = healthy.reduce((sum, t) => sum + t.unreachable + t.untyped.length, 0);
    const served = healthy.reduce((sum, t) => sum + t.ok.down, 0);
    reportFigure(SCENARIO, 'errors on healthy cells', errors, 'must be 0');
    reportFigure(
      SCENARIO,
      'calls served by healthy cells while the server was down',
      served,
      '> 0',
    );
    expect(healthy.flatMap((t) => t.untyped)).toEqual([]);
    expect(errors).toBe(0);
    expect(served).toBeGreaterThan(0);
  });

  it('fails calls to the dead cells with CellUnreachableError only', () => {
    const dead = tallies.filter((t) => t.dead);
    const typed = dead.reduce((sum, t) => sum + t.unreachable, 0);
    const untyped = dead.flatMap((t) => t.untyped);
    reportFigure(SCENARIO, 'errors on dead cells typed CellUnreachableError', typed, '> 0');
    reportFigure(SCENARIO, 'errors on dead cells of another type', untyped.length, 'must be 0');
    expect(untyped).toEqual([]);
    expect(typed).toBeGreaterThan(0);
  });

  it('answers scatterGatherAll well within its timeout, marking the dead cells', () => {
    reportFigure(
      SCENARIO,
      `scatterGatherAll with dead cells (ms, timeoutMs ${SCATTER_TIMEOUT_MS})`,
      Math.round(scatterMs),
      `< ${SCATTER_TIMEOUT_MS}`,
    );
    reportFigure(
      SCENARIO,
      'dead cells marked RaisedError(CellUnreachableError)',
      scatterMarked.typed,
      `must be ${DEAD_CELLS}`,
    );
    expect(scatterMs).toBeLessThan(SCATTER_TIMEOUT_MS);
    expect(scatterMarked).toEqual({
      dead: DEAD_CELLS,
      typed: DEAD_CELLS,
      healthyAnswered: HEALTHY_CELLS,
    });
  });

  it('serves the revived cells again with the same Cells instance', () => {
    const served = tallies.filter((t) => t.dead).reduce((sum, t) => sum + t.ok.revived, 0);
    reportFigure(SCENARIO, `server down for (ms)`, Math.round(killedFor), `>= ${DOWN_MS}`);
    reportFigure(
      SCENARIO,
      'time to recovery after restart (ms)',
      Math.round(recoveryMs),
      `<= ${RECOVERY_BOUND_MS}`,
    );
    reportFigure(SCENARIO, 'calls served by revived cells under load', served, '> 0');
    reportFigure(
      SCENARIO,
      `requests to revived cells succeeding afterwards (of ${CALLS_AFTER_RECOVERY})`,
      afterRecovery.ok,
      `must be ${CALLS_AFTER_RECOVERY}`,
    );
    expect(killedFor).toBeGreaterThanOrEqual(DOWN_MS);
    expect(recoveryMs).toBeLessThanOrEqual(RECOVERY_BOUND_MS);
    expect(served).toBeGreaterThan(0);
    expect(afterRecovery.failed).toEqual([]);
    expect(afterRecovery.ok).toBe(CALLS_AFTER_RECOVERY);
  });
});

describe('a transaction whose connection dies between two statements', () => {
  let world: CellWorld;
  beforeAll(async () => {
    world = await createCellWorld('death_tx', { cellCount: 1 });
  }, 60_000);
  afterAll(async () => {
    await world?.destroy();
  }, 60_000);

  /** Terminates backend `pid` and waits until the transaction's client has seen its connection end. */
  async function terminate(pid: number, manager: EntityManager): Promise<void> {
    await adminQuery('SELECT pg_terminate_backend($1)', [pid]);
    // TypeORM releases the query runner when its connection reports the loss.
    await eventually(() => manager.queryRunner?.isReleased === true, 10_000);
  }

  /** Runs a transaction on the cell whose backend is terminated after its first statement. */
  async function transactionLosingItsConnection(): Promise<{
    next: unknown;
    transaction: unknown;
  }> {
    const { lib } = world;
    const widgets = lib.getRepository(Widget);
    const cell = world.cells[0]!.mapping;
    let next: unknown;
    const transaction = await targetCell(cell, () =>
      lib.transaction(async (manager) => {
        const [{ pid }] = (await widgets.query('SELECT pg_backend_pid() AS pid')) as [
          { pid: number },
        ];
        await terminate(pid, manager);
        next = await widgets.count().catch((error: unknown) => error);
        throw next;
      }),
    ).catch((error: unknown) => error);
    return { next, transaction };
  }

  it('fails the next routed call with CellUnreachableError', async () => {
    const { next } = await transactionLosingItsConnection();
    expect(next).toBeInstanceOf(CellUnreachableError);
    expect(String(next)).toContain(world.cells[0]!.mapping.name);
  });

  it('rejects the transaction with CellUnreachableError, and the next call succeeds', async () => {
    const { transaction } = await transactionLosingItsConnection();
    expect(transaction).toBeInstanceOf(CellUnreachableError);
    const widgets = world.lib.getRepository(Widget);
    await expect(targetCell(world.cells[0]!.mapping, () => widgets.count())).resolves.toBe(0);
  });

  it('rejects a savepoint opened after the connection died with CellUnreachableError', async () => {
    const { lib } = world;
    let savepoint: unknown;
    await targetCell(world.cells[0]!.mapping, () =>
      lib.transaction(async (manager) => {
        const [{ pid }] = (await manager.query('SELECT pg_backend_pid() AS pid')) as [
          { pid: number },
        ];
        await terminate(pid, manager);
        savepoint = await lib.transaction(async () => undefined).catch((error: unknown) => error);
      }),
    ).catch(() => undefined);
    expect(savepoint).toBeInstanceOf(CellUnreachableError);
  });

  it('rejects a commit after the connection died with CellUnreachableError', async () => {
    const { lib } = world;
    const widgets = lib.getRepository(Widget);
    const outcome = await targetCell(world.cells[0]!.mapping, () =>
      lib.transaction(async (manager) => {
        const [{ pid }] = (await manager.query('SELECT pg_backend_pid() AS pid')) as [
          { pid: number },
        ];
        await terminate(pid, manager);
      }),
    ).catch((error: unknown) => error);
    expect(outcome).toBeInstanceOf(CellUnreachableError);
    await expect(targetCell(world.cells[0]!.mapping, () => widgets.count())).resolves.toBe(0);
  });
});
