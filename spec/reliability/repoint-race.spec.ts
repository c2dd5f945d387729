import 'reflect-metadata';
import { Cells, CellsNotReadyError, targetCell } from '../../lib';
import { createCellWorld, migrateCellDatabase, type CellWorld } from '../support/cells';
import { createTestDatabases, type TestDatabase } from '../support/databases';
import { Widget } from '../support/widget';
import { reportFigure } from './figures';

/**
 * Another process re-points a cell twice within a few milliseconds while this process opens it for
 * the first time. The open must never keep a DataSource whose connection differs from the last
 * mapping: it converges on the last database.
 */
const SCENARIO = 're-point race';
const ROUNDS = 12;

let world: CellWorld;
let databases: TestDatabase[];
beforeAll(async () => {
  world = await createCellWorld('repoint_race', { cellCount: 0 });
  databases = await createTestDatabases('repoint_race_db', 3);
  for (const db of databases) await migrateCellDatabase(db.url);
}, 60_000);
afterAll(async () => {
  await world?.destroy();
  await Promise.all((databases ?? []).map((db) => db.drop()));
}, 60_000);

/** A second Cells on the same API database: another process, as far as notifications go. */
async function otherProcess(): Promise<Cells> {
  return new Cells({ api: world.api.url, entities: [Widget], poolSize: 1 }).initialize();
}

describe('a cell re-pointed twice while this process opens it', () => {
  it(`converges on the last database in ${ROUNDS} rounds`, async () => {
    const writer = await otherProcess();
    const widgets = world.lib.getRepository(Widget);
    const stale: string[] = [];
    try {
      for (let round = 0; round < ROUNDS; round++) {
        const [a, b, c] = databases as [TestDatabase, TestDatabase, TestDatabase];
        const cell = await writer.mappings.createCell({ name: `race-${round}`, databaseConnection: a.url });
        // The first call opens the cell here while the other process re-points it twice.
        const first = targetCell(cell, () => widgets.query('SELECT current_database() AS name')).catch(() => undefined);
        await new Promise((resolve) => setTimeout(resolve, round % 4));
        await writer.mappings.updateCell(cell.uuid, { databaseConnection: b.url });
        await writer.mappings.updateCell(cell.uuid, { databaseConnection: c.url });
        await first;
        // Notifications arrive within a round trip; then every call must reach the last database.
        let reached = '';
        for (let i = 0; i < 50; i++) {
          const rows = (await targetCell(cell, () => widgets.query('SELECT current_database() AS name'))) as Array<{ name: string }>;
          reached = rows[0]!.name;
          if (reached === c.name) break;
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        if (reached !== c.name) stale.push(`round ${round}: ${reached}`);
        await writer.mappings.deleteCell(cell.uuid, { force: true });
      }
    } finally {
      await writer.destroy();
    }
    reportFigure(SCENARIO, 'rounds left on a stale database (of 12)', stale.length, 'must be 0');
    expect(stale).toEqual([]);
  }, 120_000);

  it('throws CellsNotReadyError from cells.mappings after destroy()', async () => {
    const lib = await otherProcess();
    await lib.destroy();
    await expect(lib.mappings.allCells()).rejects.toThrow(CellsNotReadyError);
    await expect(lib.mappings.cellByName('x')).rejects.toThrow(CellsNotReadyError);
    await expect(lib.mappings.createCell({ name: 'late', databaseConnection: databases[0]!.url })).rejects.toThrow(
      CellsNotReadyError,
    );
  });
});
