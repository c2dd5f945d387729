import { CellMapping, CellsNotReadyError, targetCell } from '../../lib';
import { sleep } from '../reliability/support-load';
import { createCellWorld, widgetFor, type CellWorld } from '../support/cells';
import { countConnections, rowsIn } from '../support/databases';
import { Widget } from '../support/widget';

// Issue 9, case 7: destroy() lets running transactions finish. Inside a transaction that was running
// when destroy() started, every call that belongs to it keeps working until it ends: metadata-only
// methods (create, merge), query builders, routed writes and reads of the API database; the
// transaction commits all its work. New work outside it is refused.

let world: CellWorld | undefined;
afterEach(async () => {
  await world?.destroy();
  world = undefined;
});

const namesIn = async (w: CellWorld, i: number, prefix: string) =>
  (await rowsIn<{ name: string }>(w.cells[i]!.db.url, 'SELECT name FROM widgets WHERE name LIKE $1', [`${prefix}%`]))
    .map((r) => r.name)
    .sort();

/** The work of one transaction after destroy() started: every kind of call a request makes. */
async function workAfterDestroyStarted(w: CellWorld, mapping: CellMapping, prefix: string): Promise<unknown[]> {
  const widgets = w.lib.getRepository(Widget);
  const created = widgets.create(widgetFor(mapping.uuid, `${prefix}-created`));
  const merged = widgets.merge(created, { size: 7 });
  const inTransaction = await widgets.createQueryBuilder('w').where('w.name LIKE :p', { p: `${prefix}%` }).getMany();
  await widgets.save(merged);
  await widgets.insert(widgetFor(mapping.uuid, `${prefix}-inserted`));
  const mapped = await w.lib.getRepository(CellMapping, 'api').count();
  return [merged.size, inTransaction.map((r) => r.name), mapped];
}

describe('destroy() while a transaction runs', () => {
  it('lets the transaction create, merge, build queries, write and read the API database, then commit', async () => {
    world = await createCellWorld('conc_destroy_one', { cellCount: 1 });
    const w = world;
    const mapping = w.cells[0]!.mapping;
    let destroying: Promise<void> | undefined;
    const result = await targetCell(mapping, () =>
      w.lib.transaction(async () => {
        await w.lib.getRepository(Widget).insert(widgetFor(mapping.uuid, 'd1-first'));
        destroying = w.lib.destroy();
        await sleep(20);
        return workAfterDestroyStarted(w, mapping, 'd1');
      }),
    );
    expect(result).toEqual([7, ['d1-first'], 1]);
    await destroying;
    expect(await namesIn(w, 0, 'd1-')).toEqual(['d1-created', 'd1-first', 'd1-inserted']);
    expect(await countConnections(w.cells[0]!.db.name)).toBe(0);
  });

  it('refuses new calls outside the running transaction once destroy() started', async () => {
    world = await createCellWorld('conc_destroy_refuse', { cellCount: 1 });
    const w = world;
    const mapping = w.cells[0]!.mapping;
    const widgets = w.lib.getRepository(Widget);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let opened!: () => void;
    const transactionOpened = new Promise<void>((resolve) => (opened = resolve));
    const running = targetCell(mapping, () =>
      w.lib.transaction(async () => {
        await widgets.count();
        opened();
        await gate;
        return widgets.count();
      }),
    );
    await transactionOpened;
    const destroying = w.lib.destroy();
    await expect(targetCell(mapping, () => widgets.count())).rejects.toThrow(CellsNotReadyError);
    await expect(w.lib.scatterGather([mapping], async () => 1)).rejects.toThrow(CellsNotReadyError);
    release();
    await expect(running).resolves.toBe(0);
    await destroying;
  });

  it('lets calls and transactions that wait for their cell to open finish when destroy() starts', async () => {
    world = await createCellWorld('conc_destroy_opening', { cellCount: 1 });
    const w = world;
    const mapping = w.cells[0]!.mapping;
    const widgets = w.lib.getRepository(Widget);
    // The cell is not open yet: both calls wait for its DataSource when destroy() begins.
    const count = targetCell(mapping, () => widgets.count());
    const transaction = targetCell(mapping, () =>
      w.lib.transaction(async () => {
        await widgets.insert(widgetFor(mapping.uuid, 'opening-tx'));
        return widgets.countBy({ name: 'opening-tx' });
      }),
    );
    const destroying = w.lib.destroy();
    await expect(count).resolves.toBe(0);
    await expect(transaction).resolves.toBe(1);
    await destroying;
    expect((await rowsIn(w.cells[0]!.db.url, `SELECT 1 FROM widgets WHERE name = 'opening-tx'`)).length).toBe(1);
  });

  it('commits all the work of 30 transactions over 3 cells that were running when destroy() started', async () => {
    world = await createCellWorld('conc_destroy_many', { cellCount: 3, cells: { poolSize: 10 } });
    const w = world;
    let started!: () => void;
    const destroyStarted = new Promise<void>((resolve) => (started = resolve));
    let opened = 0;
    let allOpened!: () => void;
    const everyTransactionOpened = new Promise<void>((resolve) => (allOpened = resolve));
    const running = Array.from({ length: 30 }, (_, i) => {
      const mapping = w.cells[i % 3]!.mapping;
      return targetCell(mapping, () =>
        w.lib.transaction(async () => {
          await w.lib.getRepository(Widget).insert(widgetFor(mapping.uuid, `m${i}-first`));
          if (++opened === 30) allOpened();
          await destroyStarted;
          await sleep(i % 5);
          return workAfterDestroyStarted(w, mapping, `m${i}`);
        }),
      );
    });
    // Once every transaction holds its connection: destroy(), then let them go on.
    await everyTransactionOpened;
    const destroying = w.lib.destroy();
    started();
    const outcomes = await Promise.allSettled(running);
    await destroying;
    const failed = outcomes.flatMap((o, i) => (o.status === 'rejected' ? [`${i}: ${String(o.reason)}`] : []));
    expect(failed.slice(0, 5)).toEqual([]);
    for (let i = 0; i < 30; i++) {
      expect(await namesIn(w, i % 3, `m${i}-`)).toEqual([`m${i}-created`, `m${i}-first`, `m${i}-inserted`]);
    }
  });
});
