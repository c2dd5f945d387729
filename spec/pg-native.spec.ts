import { PlatformTools } from 'typeorm/platform/PlatformTools';
import { targetCell } from '../lib';
import { createCellWorld, type CellWorld } from './support/cells';
import { Widget } from './support/widget';

/**
 * TypeORM looks for pg-native in every PostgresDriver it constructs; Cells looks once per process
 * and hands the answer to every DataSource (lib/pg-native.ts), so opening a cell costs no failed
 * `require`.
 */
describe('pg-native looked up once per process', () => {
  let world: CellWorld;
  afterEach(async () => {
    jest.restoreAllMocks();
    await world?.destroy();
  });

  it('opens and re-opens cells under 60 interleaved calls without TypeORM looking for pg-native', async () => {
    // 4 cells behind maxOpenCells 2: calls that alternate between them evict and re-open cells.
    world = await createCellWorld('pgnative', { cellCount: 4, cells: { maxOpenCells: 2, poolSize: 1 } });
    const load = jest.spyOn(PlatformTools, 'load');
    const widgets = world.lib.getRepository(Widget);
    const before = world.lib.stats().opened;
    for (let round = 0; round < 3; round++) {
      const answers = await Promise.all(
        Array.from({ length: 20 }, (_, i) => {
          const cell = world.cells[(i + round) % world.cells.length]!;
          return targetCell(cell.mapping, () => widgets.query<Array<{ db: string }>>('SELECT current_database() AS db'));
        }),
      );
      answers.forEach((rows, i) => {
        expect(rows[0]!.db).toBe(world.cells[(i + round) % world.cells.length]!.db.name);
      });
    }
    expect(world.lib.stats().opened - before).toBeGreaterThanOrEqual(world.cells.length);
    expect(load.mock.calls.filter(([name]) => name === 'pg-native')).toEqual([]);
  });
});
