import 'reflect-metadata';
import { Cells, type CellMapping, type CellState } from '../../lib';
import { createCellWorld, type CellWorld } from '../support/cells';
import { Widget } from '../support/widget';

// Two processes (two Cells, each with its own API pool) write one cell's mapping at once: an
// operator's `cell set-state` while a rotation script writes the cell's URL again, or renames it.
// Neither write may undo the other: the state set is the state kept.
let world: CellWorld;
let other: Cells;
let cell: CellMapping;

beforeAll(async () => {
  world = await createCellWorld('lostupd', { cellCount: 1 });
  other = new Cells({ api: { url: world.api.url, poolSize: 3 }, poolSize: 2, entities: [Widget] });
  await other.initialize();
  cell = world.cells[0]!.mapping;
}, 60_000);

afterAll(async () => {
  await other?.destroy();
  await world?.destroy();
}, 60_000);

it('keeps a state set while another process writes the same cell (no lost update)', async () => {
  const states: CellState[] = ['read-only', 'draining', 'disabled', 'active'];
  const lost: string[] = [];
  for (let i = 0; i < 40; i++) {
    const state = states[i % states.length]!;
    await Promise.all([
      world.lib.mappings.setCellState(cell.uuid, state),
      other.mappings.updateCell(cell.uuid, { databaseConnection: cell.databaseConnection }),
      other.mappings.updateCell(cell.uuid, { transportUrl: `rabbit://t/${i}` }),
    ]);
    const row = await world.lib.getRepository('CellMapping', 'api').findOneByOrFail({ uuid: cell.uuid }) as CellMapping;
    if (row.state !== state) lost.push(`round ${i}: set ${state}, kept ${row.state}`);
    if (row.transportUrl !== `rabbit://t/${i}`) lost.push(`round ${i}: transport URL ${row.transportUrl}`);
  }
  expect(lost).toEqual([]);
}, 55_000);
