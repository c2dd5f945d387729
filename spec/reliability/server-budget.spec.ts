import { randomUUID } from 'node:crypto';
import { inspect } from 'node:util';
import { targetCell, type CellMapping, type Cells, type CellsOptions } from '../../lib';
import { createCellWorld, createServerFleet, type CellWorld } from '../support/cells';
import { rowsIn } from '../support/databases';
import { eventually } from '../support/peers';
import { startSecondServer, type SecondServer } from '../support/second-server';
import { Widget } from '../support/widget';
import { reportFigure } from './figures';
import { ConnectionSampler, runConcurrently, seededRandom } from './support-load';
import { SERVER_BUDGET_LAYOUT, failedCallText, openBudgetCells } from './support-server-budget';

// Issue 13, item 2: 200 cells on one server started with max_connections = 60, poolSize 5,
// maxOpenCells 64 (up to 320 connections), 256 concurrent tasks over all cells. Without a budget
// the server refuses connections; with maxConnectionsPerServer 40, no call fails and the server
// never sees more than 40 backends of the cell databases.
const SCENARIO = 'server connection budget';
const {
  cells: CELLS,
  databases: DATABASES,
  tasks: TASKS,
  budget: BUDGET,
  serverMaxConnections: SERVER_MAX_CONNECTIONS,
} = SERVER_BUDGET_LAYOUT;
const CALLS_PER_TASK = 4;

interface LoadResult {
  calls: number;
  errors: string[];
  peak: number;
  ms: number;
  written: Array<{ cell: CellMapping; uuid: string }>;
}

describe('server connection budget under fleet load', () => {
  let second: SecondServer;
  let world: CellWorld;
  let databases: string[];
  let databaseOf: Map<string, string>;
  let cells: CellMapping[];

  beforeAll(async () => {
    second = await startSecondServer('cells-budget-pg');
    world = await createCellWorld('budgetload', { cellCount: 0 });
    ({ databases, cells, databaseOf } = await createServerFleet(second, world.lib, {
      label: 'cells_budget',
      databases: DATABASES,
      cells: CELLS,
    }));
  }, 120_000);

  afterAll(async () => {
    await world?.destroy();
    await second?.remove();
  }, 60_000);

  async function runLoad(options: Partial<CellsOptions>): Promise<{ lib: Cells; result: LoadResult }> {
    const lib = await openBudgetCells(world.api.url, options);
    const widgets = lib.getRepository(Widget);
    const random = seededRandom(13);
    const sampler = await new ConnectionSampler(databases, second.url('postgres')).start(10);
    const errors: string[] = [];
    const written: LoadResult['written'] = [];
    let calls = 0;
    const started = performance.now();
    try {
      await runConcurrently(TASKS, async (task) => {
        for (let n = 0; n < CALLS_PER_TASK; n++) {
          const cell = cells[Math.floor(random() * cells.length)]!;
          calls++;
          try {
            await targetCell(cell, async () => {
              if (n === 0) {
                const uuid = randomUUID();
                await widgets.insert({ uuid, name: `task-${task}`, intendedCell: cell.uuid });
                written.push({ cell, uuid });
              } else {
                await widgets.find({ take: 10, order: { createdAt: 'DESC' } });
              }
            });
          } catch (error) {
            errors.push(failedCallText(error));
          }
        }
      });
    } finally {
      await sampler.stop();
    }
    return { lib, result: { calls, errors, peak: sampler.peak, ms: performance.now() - started, written } };
  }

  it('runs on a server whose max_connections is 60', async () => {
    const [row] = await rowsIn<{ max_connections: string }>(second.url('postgres'), 'SHOW max_connections');
    expect(Number(row?.max_connections)).toBe(SERVER_MAX_CONNECTIONS);
  });

  it('without a budget, the server refuses connections ("too many clients")', async () => {
    const { lib, result } = await runLoad({});
    await lib.destroy();
    reportFigure(SCENARIO, 'errors without budget', result.errors.length, 'must be > 0');
    reportFigure(SCENARIO, 'peak cell backends without budget', result.peak, 'informative');
    reportFigure(SCENARIO, 'calls/s without budget', Math.round((result.calls / result.ms) * 1000), 'informative');
    expect(result.errors.length).toBeGreaterThan(0);
    expect(result.errors.some((e) => /too many clients/i.test(e))).toBe(true);
  }, 180_000);

  it(`with maxConnectionsPerServer ${BUDGET}: no call fails, at most ${BUDGET} backends, no permit leaked`, async () => {
    const { lib, result } = await runLoad({ maxConnectionsPerServer: BUDGET });
    try {
      reportFigure(SCENARIO, 'errors with budget 40', result.errors.length, 'must be 0');
      reportFigure(SCENARIO, 'peak cell backends with budget 40', result.peak, `<= ${BUDGET}`);
      reportFigure(SCENARIO, 'calls/s with budget 40', Math.round((result.calls / result.ms) * 1000), 'informative');
      const stats = lib.stats();
      reportFigure(SCENARIO, 'DataSources opened with budget 40', stats.opened, 'informative');
      reportFigure(SCENARIO, 'idle connections given back with budget 40', stats.servers[0]?.givenBack ?? 0, 'informative');
      expect(result.errors.slice(0, 5)).toEqual([]);
      expect(result.calls).toBe(TASKS * CALLS_PER_TASK);
      expect(result.peak).toBeLessThanOrEqual(BUDGET);
      expect(result.peak).toBeGreaterThan(BUDGET / 2);
      const [budget] = lib.stats().servers;
      expect(budget).toMatchObject({ server: `127.0.0.1:${second.port}`, limit: BUDGET, waiting: 0 });
      // No leak: once the load is over, the budget counts exactly the backends the server has.
      const backends = async (): Promise<number> => {
        const [row] = await rowsIn<{ n: number }>(
          second.url('postgres'),
          'SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = ANY($1)',
          [databases],
        );
        return row?.n ?? 0;
      };
      await eventually(async () => lib.stats().servers[0]!.inUse === (await backends()), 10_000);
      // The budget links every pool of the server: inspecting one shows no password of any.
      const password = new URL(second.url()).password;
      const dataSources = (lib as unknown as { registry: { dataSources(): object[] } }).registry.dataSources();
      expect(dataSources.length).toBeGreaterThan(0);
      for (const shown of [inspect(lib), JSON.stringify(lib.stats()), ...dataSources.map((ds) => inspect(ds, { depth: 12, showHidden: true }))]) {
        expect(shown).not.toContain(password);
      }
      // Every row landed in the database of its own cell.
      for (const { cell, uuid } of result.written) {
        const found = await targetCell(cell, () => lib.getRepository(Widget).findOneBy({ uuid }));
        expect(found?.intendedCell).toBe(cell.uuid);
      }
      const byDatabase = new Map<string, string[]>();
      for (const { cell, uuid } of result.written) {
        const db = databaseOf.get(cell.uuid)!;
        byDatabase.set(db, [...(byDatabase.get(db) ?? []), uuid]);
      }
      for (const [db, uuids] of byDatabase) {
        const [row] = await rowsIn<{ n: number }>(second.url(db), 'SELECT count(*)::int AS n FROM widgets WHERE uuid = ANY($1)', [uuids]);
        expect(row?.n).toBe(uuids.length);
      }
    } finally {
      await lib.destroy();
    }
    await expect(
      rowsIn<{ n: number }>(second.url('postgres'), 'SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = ANY($1)', [databases]),
    ).resolves.toEqual([{ n: 0 }]);
  }, 180_000);
});
