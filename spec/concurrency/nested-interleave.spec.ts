import { randomUUID } from 'node:crypto';
import { targetCell } from '../../lib';
import { sleep } from '../reliability/support-load';
import { createCellWorld, widgetFor, type CellWorld } from '../support/cells';
import { rowsIn } from '../support/databases';
import { expectNoConnectionInTransaction } from '../support/pg-activity';
import { Widget } from '../support/widget';

// Attack: nested transactions are serialised among themselves, but the enclosing transaction's own
// statements are not serialised with them: one issued while a nested savepoint is open runs inside
// that savepoint, and the nested one's rollback undoes the enclosing transaction's work.

let world: CellWorld;
beforeAll(async () => {
  world = await createCellWorld('atk_nest', { cellCount: 1 });
});
afterAll(async () => {
  await world?.destroy();
});

const namesIn = async (tag: string) =>
  (await rowsIn<{ name: string }>(world.cells[0]!.db.url, 'SELECT name FROM widgets WHERE name LIKE $1 ORDER BY name', [`${tag}%`])).map((r) => r.name);

describe('an enclosing transaction working while a nested one runs', () => {
  it('keeps its own write when the nested transaction started before it rolls back', async () => {
    const cell = world.cells[0]!.mapping;
    const repo = world.lib.getRepository(Widget);
    const tag = randomUUID().slice(0, 8);
    const outcome = await targetCell(cell, () =>
      world.lib.transaction(async () => {
        const nested = world.lib.transaction(async () => {
          await repo.insert(widgetFor(cell.uuid, `${tag}-nested`));
          await sleep(150);
          throw new Error('nested fails');
        });
        await sleep(50);
        // The enclosing transaction's own work, not part of the nested one.
        await repo.insert(widgetFor(cell.uuid, `${tag}-outer`));
        return nested.then(() => 'nested ok', (e: Error) => e.message);
      }),
    );
    expect(outcome).toBe('nested fails');
    // Only the nested transaction's row is rolled back.
    expect(await namesIn(tag)).toEqual([`${tag}-outer`]);
    await expectNoConnectionInTransaction(world.cells[0]!.db.name);
  });

  it('keeps a parallel (non-transaction) request of the same context out of a sibling savepoint', async () => {
    const cell = world.cells[0]!.mapping;
    const repo = world.lib.getRepository(Widget);
    const tag = randomUUID().slice(0, 8);
    await targetCell(cell, () =>
      world.lib.transaction(async () => {
        await Promise.allSettled([
          world.lib.transaction(async () => {
            await repo.insert(widgetFor(cell.uuid, `${tag}-a`));
            await sleep(100);
            throw new Error('a fails');
          }),
          (async () => {
            await sleep(30);
            await repo.insert(widgetFor(cell.uuid, `${tag}-b`));
          })(),
        ]);
      }),
    );
    expect(await namesIn(tag)).toEqual([`${tag}-b`]);
  });
});
