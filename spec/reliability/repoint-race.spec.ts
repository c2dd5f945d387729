import 'reflect-metadata';
import { Cells, CellsNotReadyError, targetCell } from '../../lib';
import { createCellWorld, migrateCellDatabase, type CellWorld } from '../support/cells';
import { createTestDatabases, type TestDatabase } from '../support/databases';
import { eventually } from '../support/peers';
import { startResponseGate } from '../support/response-gate';
import { Widget } from '../support/widget';
import { reportFigure } from './figures';
import { sleep } from '../../dev/wait';

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
        await sleep(round % 4);
        await writer.mappings.updateCell(cell.uuid, { databaseConnection: b.url });
        await writer.mappings.updateCell(cell.uuid, { databaseConnection: c.url });
        await first;
        // Notifications arrive within a round trip; then every call must reach the last database.
        let reached = '';
        for (let i = 0; i < 50; i++) {
          const rows = (await targetCell(cell, () => widgets.query('SELECT current_database() AS name'))) as Array<{ name: string }>;
          reached = rows[0]!.name;
          if (reached === c.name) break;
          await sleep(20);
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

  it('keeps no DataSource of the middle database when a change lands between its re-check query and its result', async () => {
    // The interleaving that left an open on the middle database for good, made deterministic: this
    // process's API connections go through a gate that holds what the server sends, either on the
    // mapping listener's connection or on the others, so each query result and each notification
    // arrives in the order below.
    const gate = await startResponseGate(world.api.url, 'typeorm-cells mapping listener');
    const lib = await new Cells({ api: gate.url(world.api.url), entities: [Widget], poolSize: 1 }).initialize();
    const writer = await otherProcess();
    const [a, b, c] = databases as [TestDatabase, TestDatabase, TestDatabase];
    const invalidations = () => lib.mappings.cacheStats().invalidations;
    const heldGrows = async (which: 'named' | 'others', before: number) =>
      eventually(() => gate.heldBytes(which) > before, 5000);
    const seen = async (before: number) => eventually(() => invalidations() > before, 5000);
    try {
      let before = invalidations();
      const cell = await writer.mappings.createCell({ name: 'race-gated', databaseConnection: a.url });
      await seen(before);
      // 1. The first re-point commits; its notification waits at the gate.
      gate.close('named');
      let held = gate.heldBytes('named');
      await writer.mappings.updateCell(cell.uuid, { databaseConnection: b.url });
      await heldGrows('named', held);
      // 2. The first call opens the cell: its mapping query runs (it sees b) and its result waits.
      gate.close('others');
      held = gate.heldBytes('others');
      const widgets = lib.getRepository(Widget);
      const first = targetCell(cell, () => widgets.query('SELECT current_database() AS name')) as Promise<Array<{ name: string }>>;
      first.catch(() => undefined);
      await heldGrows('others', held);
      // 3. The notification of b arrives while that query runs, so its result is not cached.
      before = invalidations();
      gate.open('named');
      await seen(before);
      // 4. The result (b) arrives; the open connects to b and checks the mapping again, a cache miss:
      //    that query runs (it still sees b) and its result waits.
      held = gate.heldBytes('others');
      gate.open('others');
      gate.close('others');
      await heldGrows('others', held);
      // 5. The second re-point commits and is notified before that result arrives.
      before = invalidations();
      await writer.mappings.updateCell(cell.uuid, { databaseConnection: c.url });
      await seen(before);
      gate.open('others');
      const reached = [(await first)[0]!.name];
      // Every notification has arrived: no later call may reach another database than c.
      await sleep(200);
      for (let i = 0; i < 3; i++) {
        const rows = (await targetCell(cell, () => widgets.query('SELECT current_database() AS name'))) as Array<{ name: string }>;
        reached.push(rows[0]!.name);
      }
      const which = (name: string) => ({ [a.name]: 'a', [b.name]: 'b (the middle)', [c.name]: 'c' })[name] ?? name;
      expect(reached.map(which)).toEqual(['c', 'c', 'c', 'c']);
    } finally {
      gate.open('named');
      gate.open('others');
      await writer.destroy();
      await lib.destroy();
      await gate.stop();
    }
  }, 60_000);

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
