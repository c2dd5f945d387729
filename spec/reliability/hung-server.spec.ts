import { randomUUID } from 'node:crypto';
import { QueryTimeoutError, targetCell, type CellMapping } from '../../lib';
import { createCellWorld, migrateCellDatabase, type CellWorld } from '../support/cells';
import { startSecondServer, type SecondServer } from '../support/second-server';
import { Widget } from '../support/widget';
import { reportFigure } from './figures';
import { sleep, timed } from '../../dev/wait';

/**
 * A cell server that stops answering without closing its sockets (SIGSTOP: a paused VM, a
 * partition that drops packets): statements on already open connections must end at their
 * deadline with QueryTimeoutError, and destroy() must resolve by its own deadline.
 */
const SCENARIO = 'hung cell server';
const QUERY_TIMEOUT_MS = 600;

let second: SecondServer;
let world: CellWorld;
let hung: CellMapping;

beforeAll(async () => {
  second = await startSecondServer('cells-hung-pg');
  world = await createCellWorld('hung', { cellCount: 1, cells: { queryTimeoutMs: QUERY_TIMEOUT_MS, connectTimeoutMs: 500, acquireTimeoutMs: 2_000 } });
  const url = await second.createDatabase(`cells_hung_${process.pid}`);
  await migrateCellDatabase(url);
  hung = await world.lib.mappings.createCell({ name: 'hung-far', databaseConnection: url });
}, 120_000);
afterAll(async () => {
  await second?.resume();
  await world?.destroy();
  await second?.remove();
}, 120_000);

const widgets = () => world.lib.getRepository(Widget);

describe('a cell server that stops answering', () => {
  afterEach(async () => {
    await second.resume();
  });

  it('fails plain calls on its open pool with QueryTimeoutError at the deadline, and serves again after', async () => {
    await targetCell(hung, () => widgets().count());
    await second.pause();
    const outcomes = await Promise.all(Array.from({ length: 6 }, () => timed(targetCell(hung, () => widgets().query('SELECT 1')))));
    const slowest = Math.max(...outcomes.map((o) => o.ms));
    reportFigure(SCENARIO, 'plain call answer time while paused (ms)', Math.round(slowest), `<= ${QUERY_TIMEOUT_MS * 4}`);
    // Calls on the open connections hit the query deadline; those that need a new connection hit
    // the connect timeout (the paused postmaster accepts nothing).
    const codes = outcomes.map((o) => (o.error as { code?: string } | undefined)?.code);
    expect(codes).toContain('CELLS_QUERY_TIMEOUT');
    expect([...new Set(codes)].filter((c) => c !== 'CELLS_QUERY_TIMEOUT' && c !== 'CELLS_CELL_UNREACHABLE')).toEqual([]);
    expect(slowest).toBeLessThan(QUERY_TIMEOUT_MS * 4);
    // Healthy cells are unaffected meanwhile.
    await expect(targetCell(world.cells[0]!.mapping, () => widgets().count())).resolves.toBe(0);
    await second.resume();
    await expect(targetCell(hung, () => widgets().count())).resolves.toBeGreaterThanOrEqual(0);
  }, 60_000);

  it("fails a transaction's next statement and the transaction with QueryTimeoutError", async () => {
    let next: unknown;
    const tx = timed(
      targetCell(hung, () =>
        world.lib.transaction(async () => {
          await widgets().insert({ uuid: randomUUID(), name: 'hung-tx', intendedCell: hung.uuid });
          await second.pause();
          next = await widgets().count().catch((error: unknown) => error);
          throw next;
        }),
      ),
    );
    const outcome = await tx;
    expect(next).toBeInstanceOf(QueryTimeoutError);
    expect(outcome.error).toBeInstanceOf(QueryTimeoutError);
    expect(outcome.ms).toBeLessThan(QUERY_TIMEOUT_MS * 6);
    expect(String(outcome.error)).not.toContain(second.url().split('@')[0]!.split(':')[2]!);
    await second.resume();
    await expect(targetCell(hung, () => widgets().countBy({ name: 'hung-tx' }))).resolves.toBe(0);
  }, 60_000);

  it('lets destroy() resolve by its deadline with calls hung on the paused server, leaving no handle', async () => {
    const lib = world.lib;
    const other = await createCellWorld('hung_destroy', { cellCount: 0, cells: { queryTimeoutMs: 0 } });
    try {
      const cell = await other.lib.mappings.createCell({ name: 'hung-destroy', databaseConnection: (await second.createDatabase(`cells_hung_d_${process.pid}`)) });
      await migrateCellDatabase(second.url(`cells_hung_d_${process.pid}`));
      const repo = other.lib.getRepository(Widget);
      await targetCell(cell, () => repo.count());
      await second.pause();
      // No query deadline in this world: only destroy()'s deadline ends these calls.
      const calls = Array.from({ length: 3 }, () => targetCell(cell, () => repo.query('SELECT 1')).catch((error: unknown) => error));
      await sleep(100);
      const outcome = await timed(other.lib.destroy({ timeoutMs: 500 }));
      reportFigure(SCENARIO, 'destroy() with calls hung on a paused server (ms)', Math.round(outcome.ms), '<= 3500');
      expect(outcome.error).toBeUndefined();
      expect(outcome.ms).toBeLessThan(3_500);
      const settled = await Promise.race([Promise.all(calls), sleep(3_000).then(() => 'still hanging')]);
      expect(settled).not.toBe('still hanging');
    } finally {
      await second.resume();
      await other.destroy();
    }
    expect(lib).toBe(world.lib);
  }, 60_000);
});
