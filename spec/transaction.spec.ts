import {
  CellMapping,
  CellSwitchInTransactionError,
  NoContextError,
  getContext,
  setTargetCell,
  targetCell,
} from '../lib';
import { createCellWorld, widgetFor, widgetRowsIn, type CellWorld } from './support/cells';
import { rowsIn } from './support/databases';
import { Widget } from './support/widget';
import { sleep } from '../dev/wait';

let world: CellWorld;
beforeAll(async () => {
  world = await createCellWorld('tx', { cellCount: 3 });
});
afterAll(async () => {
  await world?.destroy();
});

const cell = (i: number) => world.cells[i]!;
const countIn = (i: number, uuid: string | undefined) => widgetRowsIn(cell(i).db.url, uuid);

describe('cells.transaction', () => {
  it('commits writes of routed repositories joined without a manager', async () => {
    const widgets = world.lib.getRepository(Widget);
    const a = widgetFor(cell(0).mapping.uuid);
    const b = widgetFor(cell(0).mapping.uuid);
    await targetCell(cell(0).mapping, () =>
      world.lib.transaction(async () => {
        await widgets.insert(a);
        await widgets.insert(b);
        // Not yet visible outside the transaction: the routed calls really joined it.
        expect(await countIn(0, a.uuid)).toBe(0);
      }),
    );
    expect(await countIn(0, a.uuid)).toBe(1);
    expect(await countIn(0, b.uuid)).toBe(1);
  });

  it('rolls back every joined write when the callback throws', async () => {
    const widgets = world.lib.getRepository(Widget);
    const a = widgetFor(cell(1).mapping.uuid);
    await expect(
      targetCell(cell(1).mapping, () =>
        world.lib.transaction(async () => {
          await widgets.insert(a);
          expect(await widgets.countBy({ uuid: a.uuid! })).toBe(1);
          throw new Error('abort');
        }),
      ),
    ).rejects.toThrow('abort');
    expect(await countIn(1, a.uuid)).toBe(0);
  });

  it('refuses to target another cell inside a transaction', async () => {
    await targetCell(cell(0).mapping, () =>
      world.lib.transaction(async () => {
        expect(() => targetCell(cell(1).mapping, () => 1)).toThrow(CellSwitchInTransactionError);
        expect(() => targetCell(null, () => 1)).toThrow(expect.objectContaining({ code: 'CELLS_CELL_SWITCH_IN_TRANSACTION' }));
        expect(() => setTargetCell(getContext(), cell(2).mapping)).toThrow(CellSwitchInTransactionError);
        expect(targetCell(cell(0).mapping, () => 'same cell is fine')).toBe('same cell is fine');
      }),
    );
  });

  it('rolls back a nested transaction to its savepoint only', async () => {
    const widgets = world.lib.getRepository(Widget);
    const outer = widgetFor(cell(2).mapping.uuid);
    const inner = widgetFor(cell(2).mapping.uuid);
    await targetCell(cell(2).mapping, () =>
      world.lib.transaction(async () => {
        await widgets.insert(outer);
        await expect(
          world.lib.transaction(async () => {
            await widgets.insert(inner);
            throw new Error('inner');
          }),
        ).rejects.toThrow('inner');
      }),
    );
    expect(await countIn(2, outer.uuid)).toBe(1);
    expect(await countIn(2, inner.uuid)).toBe(0);
  });

  it('runs a nested transaction in a copy of the context, so its changes stay inside', async () => {
    await targetCell(cell(0).mapping, () =>
      world.lib.transaction(async () => {
        await world.lib.transaction(async () => {
          getContext().readDeleted = 'yes';
        });
        expect(getContext().readDeleted).toBe('no');
      }),
    );
  });

  it('keeps 200 concurrent transactions over 3 cells apart', async () => {
    const widgets = world.lib.getRepository(Widget);
    const tag = `tx-many-${Date.now()}`;
    await Promise.all(
      Array.from({ length: 200 }, (_, i) => {
        const target = cell(i % 3).mapping;
        return targetCell(target, () =>
          world.lib
            .transaction(async () => {
              await widgets.insert(widgetFor(target.uuid, tag));
              await sleep(i % 5);
              await widgets.insert(widgetFor(target.uuid, tag));
              if (i % 4 === 0) throw new Error('rollback');
            })
            .catch(() => undefined),
        );
      }),
    );
    for (let i = 0; i < 3; i++) {
      const rows = await rowsIn<{ intended_cell: string }>(cell(i).db.url, 'SELECT intended_cell FROM widgets WHERE name = $1', [tag]);
      const committed = Array.from({ length: 200 }, (_, k) => k).filter((k) => k % 3 === i && k % 4 !== 0).length;
      expect(rows).toHaveLength(committed * 2);
      expect(rows.every((r) => r.intended_cell === cell(i).mapping.uuid)).toBe(true);
    }
  });

  it('runs a transaction on the API database, outside any context too', async () => {
    const mappings = world.lib.getRepository(CellMapping, 'api');
    const before = await mappings.count();
    await expect(
      world.lib.transaction(
        async () => {
          await mappings.insert({ uuid: '99999999-9999-4999-8999-999999999999', name: 'tx-api', databaseConnection: 'postgres://x@h/db' });
          expect(await mappings.count()).toBe(before + 1);
          throw new Error('undo');
        },
        { db: 'api' },
      ),
    ).rejects.toThrow('undo');
    expect(await mappings.count()).toBe(before);
  });

  it('throws NoContextError for a main transaction outside any context', async () => {
    await expect(world.lib.transaction(async () => 1)).rejects.toThrow(NoContextError);
  });
});
