import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { Cells, CellsError } from '../../lib';
import { createCellWorld, type CellWorld } from '../support/cells';
import { Widget } from '../support/widget';

// One process deletes a cell while another maps an instance and a host to it: either the instance is mapped
// (and the delete refused, CellInUseError) or the cell is gone (UnknownCellError); never a raw
// driver error.
let world: CellWorld;
let other: Cells;

beforeAll(async () => {
  world = await createCellWorld('delrace', { cellCount: 1 });
  other = new Cells({ api: { url: world.api.url, poolSize: 3 }, poolSize: 2, entities: [Widget] });
  await other.initialize();
}, 60_000);

afterAll(async () => {
  await other?.destroy();
  await world?.destroy();
}, 60_000);

it('answers a delete racing an instance and a host mapping with typed errors only', async () => {
  const untyped: string[] = [];
  for (let i = 0; i < 30; i++) {
    const cell = await world.lib.mappings.createCell({ name: `race-${i}`, databaseConnection: world.cells[0]!.mapping.databaseConnection });
    const outcomes = await Promise.allSettled([
      other.mappings.mapInstance({ instanceUuid: randomUUID(), projectId: 'p', cell: cell.uuid }),
      other.mappings.mapHost(`host-${i}`, cell.uuid),
      world.lib.mappings.deleteCell(cell.uuid, { force: i % 2 === 0 }),
    ]);
    for (const outcome of outcomes) {
      if (outcome.status === 'rejected' && !(outcome.reason instanceof CellsError)) untyped.push(`round ${i}: ${String(outcome.reason)}`);
    }
  }
  expect(untyped).toEqual([]);
}, 55_000);
