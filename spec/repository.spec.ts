import { randomUUID } from 'node:crypto';
import { Repository } from 'typeorm';
import {
  NoContextError,
  NoTargetCellError,
  RequestContext,
  runWithContext,
  setTargetCell,
  targetCell,
} from '../lib';
import { createCellWorld, widgetFor, type CellWorld } from './support/cells';
import { rowsIn } from './support/databases';
import { Widget } from './support/widget';
import { sleep } from '../dev/wait';

let world: CellWorld;

beforeAll(async () => {
  // The 2,000-task spec queues ~445 statements per pooled connection: on a loaded 2-core CI machine
  // the last waits longer than the default 10 s acquireTimeoutMs. It checks routing, not busy pools.
  world = await createCellWorld('repo', { cellCount: 3, withMain: true, cells: { acquireTimeoutMs: 60_000 } });
});
afterAll(async () => {
  await world?.destroy();
});

function cell(i: number) {
  return world.cells[i]!;
}

describe('routed repository', () => {
  it('is a TypeORM Repository created without any context', () => {
    const widgets = world.lib.getRepository(Widget);
    expect(widgets).toBeInstanceOf(Repository);
    expect(world.lib.getRepository(Widget)).toBe(widgets);
  });

  it('writes a row through targetCell(A) into A only', async () => {
    const widgets = world.lib.getRepository(Widget);
    const row = widgetFor(cell(0).mapping.uuid);
    await targetCell(cell(0).mapping, () => widgets.save(widgets.create(row)));
    const [a, b, c] = await Promise.all(
      world.cells.map((x) => rowsIn(x.db.url, 'SELECT uuid FROM widgets WHERE uuid = $1', [row.uuid])),
    );
    expect(a).toHaveLength(1);
    expect(b).toHaveLength(0);
    expect(c).toHaveLength(0);
  });

  it('reads each cell with the same call signature', async () => {
    const widgets = world.lib.getRepository(Widget);
    const rows = world.cells.map((x) => widgetFor(x.mapping.uuid));
    await Promise.all(rows.map((row, i) => targetCell(cell(i).mapping.uuid, () => widgets.insert(row))));
    for (const [i, row] of rows.entries()) {
      const here = await targetCell(cell(i).mapping, () => widgets.findOneBy({ uuid: row.uuid! }));
      const elsewhere = await targetCell(cell((i + 1) % 3).mapping, () => widgets.findOneBy({ uuid: row.uuid! }));
      expect(here?.intendedCell).toBe(cell(i).mapping.uuid);
      expect(elsewhere).toBeNull();
    }
  });

  it('routes 2,000 interleaved tasks over 3 cells, every row in its own cell', async () => {
    const widgets = world.lib.getRepository(Widget);
    const tag = `batch-${randomUUID()}`;
    const tasks = Array.from({ length: 2000 }, (_, i) => {
      const target = cell(i % 3).mapping;
      return targetCell(target, async () => {
        const row = widgetFor(target.uuid, tag);
        await new Promise((r) => setImmediate(r));
        await widgets.insert(row);
        await sleep(i % 7);
        const back = await widgets.findOneBy({ uuid: row.uuid! });
        return back?.intendedCell === target.uuid;
      });
    });
    const readBack = await Promise.all(tasks);
    expect(readBack.filter((ok) => !ok)).toHaveLength(0);
    for (const x of world.cells) {
      const rows = await rowsIn<{ intended_cell: string; n: string }>(
        x.db.url,
        'SELECT intended_cell, count(*) AS n FROM widgets WHERE name = $1 GROUP BY intended_cell',
        [tag],
      );
      expect(rows).toEqual([{ intended_cell: x.mapping.uuid, n: expect.stringMatching(/^66[67]$/) }]);
    }
  });

  it('throws NoContextError for a main call outside any context', async () => {
    const widgets = world.lib.getRepository(Widget);
    await expect(widgets.find()).rejects.toThrow(NoContextError);
    await expect(widgets.find()).rejects.toMatchObject({ code: 'CELLS_NO_CONTEXT' });
  });

  it('uses the default main database in an untargeted context', async () => {
    const widgets = world.lib.getRepository(Widget);
    const row = widgetFor('main');
    await runWithContext(new RequestContext(), () => widgets.insert(row));
    await targetCell(null, async () => {
      expect(await widgets.findOneBy({ uuid: row.uuid! })).not.toBeNull();
    });
    for (const x of world.cells) {
      expect(await rowsIn(x.db.url, 'SELECT 1 FROM widgets WHERE uuid = $1', [row.uuid])).toHaveLength(0);
    }
  });

  it('follows setTargetCell on the active context', async () => {
    const widgets = world.lib.getRepository(Widget);
    const row = widgetFor(cell(2).mapping.uuid);
    const ctx = new RequestContext();
    await runWithContext(ctx, async () => {
      setTargetCell(ctx, cell(2).mapping);
      await widgets.insert(row);
    });
    expect(await rowsIn(cell(2).db.url, 'SELECT 1 FROM widgets WHERE uuid = $1', [row.uuid])).toHaveLength(1);
  });

  it('creates entities and query builders before the cell is open, binding at execution', async () => {
    const widgets = world.lib.getRepository(Widget);
    const fresh = await createCellWorld('repoqb', { cellCount: 1 });
    try {
      const repo = fresh.lib.getRepository(Widget);
      const target = fresh.cells[0]!.mapping;
      await targetCell(target, async () => {
        const qb = repo.createQueryBuilder('w').where('w.intendedCell = :c', { c: target.uuid });
        expect(fresh.lib.stats().open).toBe(0);
        await repo.save(repo.create(widgetFor(target.uuid)));
        expect(await qb.getCount()).toBe(1);
        await repo.createQueryBuilder().delete().where('1 = 1').execute();
        expect(await repo.count()).toBe(0);
      });
    } finally {
      await fresh.destroy();
    }
    expect(widgets.create({ name: 'x' })).toBeInstanceOf(Widget);
  });

  it('throws NoTargetCellError in an untargeted context without a default main database', async () => {
    const fresh = await createCellWorld('nomain', { cellCount: 1 });
    try {
      const repo = fresh.lib.getRepository(Widget);
      await expect(runWithContext(new RequestContext(), () => repo.find())).rejects.toThrow(NoTargetCellError);
    } finally {
      await fresh.destroy();
    }
  });
});
