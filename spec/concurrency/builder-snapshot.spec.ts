import { randomUUID } from 'node:crypto';
import { DataSource } from 'typeorm';
import { targetCell } from '../../lib';
import { createCellWorld, widgetFor, type CellWorld } from '../support/cells';
import { Widget } from '../support/widget';

// Attack: plain TypeORM snapshots a builder's SQL and parameters synchronously when an execution
// is called (getMany() renders before its first await). A routed builder copies the shared builder
// only after `await route(...)`, so a parameter set right after the call leaks into it.

let world: CellWorld;
let plain: DataSource;
beforeAll(async () => {
  world = await createCellWorld('atk_snap', { cellCount: 1 });
  plain = await new DataSource({ type: 'postgres', url: world.cells[0]!.db.url, entities: [Widget] }).initialize();
});
afterAll(async () => {
  await plain?.destroy();
  await world?.destroy();
});

describe('a routed builder executed while its parameters change', () => {
  it('uses the parameters it had when the execution was called, like a plain TypeORM builder', async () => {
    const cell = world.cells[0]!.mapping;
    const tag = randomUUID().slice(0, 8);
    const names = ['a', 'b', 'c', 'd'].map((n) => `${tag}-${n}`);
    await targetCell(cell, () => world.lib.getRepository(Widget).insert(names.map((n) => widgetFor(cell.uuid, n))));

    // The plain TypeORM baseline: one builder, one parameter per execution, executions in parallel.
    const plainQb = plain.getRepository(Widget).createQueryBuilder('w').where('w.name = :n');
    const plainReads = await Promise.all(names.map((n) => plainQb.setParameter('n', n).getMany()));
    expect(plainReads.map((rows) => rows.map((r) => r.name))).toEqual(names.map((n) => [n]));

    // The same with a routed builder (cell already open, so route() is synchronous).
    const routedQb = world.lib.getRepository(Widget).createQueryBuilder('w').where('w.name = :n');
    const routedReads = await targetCell(cell, () =>
      Promise.all(names.map((n) => routedQb.setParameter('n', n).getMany())),
    );
    expect(routedReads.map((rows) => rows.map((r) => r.name))).toEqual(names.map((n) => [n]));
  });

  it('uses the where clause it had when called, not one added right after the call', async () => {
    const cell = world.cells[0]!.mapping;
    const tag = randomUUID().slice(0, 8);
    await targetCell(cell, () => world.lib.getRepository(Widget).insert([widgetFor(cell.uuid, `${tag}-x`)]));
    const qb = world.lib.getRepository(Widget).createQueryBuilder('w').where('w.name = :n', { n: `${tag}-x` });
    const pending = targetCell(cell, () => qb.getCount());
    qb.andWhere('1 = 0');
    expect(await pending).toBe(1);
  });
});
