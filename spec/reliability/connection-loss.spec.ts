import { randomBytes } from 'node:crypto';
import { CellsError, targetCell, type CellMapping } from '../../lib';
import { createCellWorld, migrateCellDatabase, widgetFor, type CellWorld } from '../support/cells';
import { adminQuery, createTestDatabase } from '../support/databases';
import { Widget } from '../support/widget';
import { reportFigure } from './figures';
import { sleep } from './support-load';

/**
 * Backends terminated under pg clients that are checked out of their pool but run no query at that
 * moment (between check-out, query, release and close). pg emits the server's 57P01 "terminating
 * connection" as an 'error' event there; without a listener Node turns it into an uncaught
 * exception and the process dies (Jest fails the running test with it). Each round is a race, so
 * it is run many times.
 */
const SCENARIO = 'connection loss under in-flight calls';
const ROUNDS = 25;

let world: CellWorld;
beforeAll(async () => {
  world = await createCellWorld('conn_loss', { cellCount: 1 });
}, 60_000);
afterAll(async () => {
  await world?.destroy();
}, 60_000);

const widgets = () => world.lib.getRepository(Widget);

/** Calls still in flight on `cell`: half sleep on the server, half insert. */
function inFlight(cell: CellMapping): Array<Promise<unknown>> {
  return Array.from({ length: 12 }, (_, i) =>
    targetCell(cell, () => (i % 2 === 0 ? widgets().query('SELECT pg_sleep(0.2)') : widgets().insert(widgetFor(cell.uuid)))),
  );
}

/** Rejections that are not typed library errors. */
function untyped(settled: PromiseSettledResult<unknown>[]): string[] {
  return settled.flatMap((s) => (s.status === 'rejected' && !(s.reason instanceof CellsError) ? [String(s.reason)] : []));
}

describe('connection loss while calls are in flight', () => {
  it(`survives ${ROUNDS} rounds of a cell database dropped WITH (FORCE) 30-70 ms into 12 calls`, async () => {
    const failures: string[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const db = await createTestDatabase('conn_loss_drop');
      await migrateCellDatabase(db.url);
      const cell = await world.lib.mappings.createCell({ name: `drop-${randomBytes(4).toString('hex')}`, databaseConnection: db.url });
      try {
        await targetCell(cell, () => widgets().count());
        const calls = inFlight(cell);
        await sleep(30 + Math.floor(Math.random() * 41));
        await db.drop();
        failures.push(...untyped(await Promise.allSettled(calls)));
        // Let late socket errors arrive while the test still runs.
        await sleep(20);
      } finally {
        await world.lib.mappings.deleteCell(cell.uuid, { force: true }).catch(() => undefined);
      }
    }
    reportFigure(SCENARIO, 'untyped failures (database dropped)', failures.length, 'must be 0');
    expect(failures.slice(0, 5)).toEqual([]);
    // The other cell still answers.
    await expect(targetCell(world.cells[0]!.mapping, () => widgets().count())).resolves.toBeGreaterThanOrEqual(0);
  }, 120_000);

  it(`survives ${ROUNDS} rounds of every backend of a cell terminated while its clients sit checked out`, async () => {
    const cell = world.cells[0]!;
    const failures: string[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      // Transactions hold their client between statements (checked out, no query running).
      const calls = Array.from({ length: 6 }, () =>
        targetCell(cell.mapping, () =>
          world.lib.transaction(async () => {
            await widgets().count();
            await sleep(40);
            await widgets().count();
          }),
        ),
      );
      await sleep(10 + Math.floor(Math.random() * 30));
      await adminQuery('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()', [
        cell.db.name,
      ]);
      failures.push(...untyped(await Promise.allSettled([...calls, ...inFlight(cell.mapping)])));
      await sleep(20);
    }
    reportFigure(SCENARIO, 'untyped failures (backends terminated)', failures.length, 'must be 0');
    expect(failures.slice(0, 5)).toEqual([]);
    await expect(targetCell(cell.mapping, () => widgets().count())).resolves.toBeGreaterThanOrEqual(0);
  }, 120_000);
});
