import { targetCell, type CellMapping } from '../../lib';
import { sleep } from '../reliability/support-load';
import { createCellWorld, widgetFor, type CellWorld } from '../support/cells';
import { rowsIn } from '../support/databases';
import { expectNoConnectionInTransaction } from '../support/pg-activity';
import { Widget } from '../support/widget';

// Issue 9, case 3: nested cells.transaction calls started together inside one transaction share its
// connection. They must run one at a time, each in its own savepoint: only the one that throws
// rolls back, the outer transaction commits the rest, and no connection goes back to the pool
// inside a transaction.

let world: CellWorld;
beforeAll(async () => {
  world = await createCellWorld('conc_nested', { cellCount: 3 });
});
afterAll(async () => {
  await world?.destroy();
});

const cell = (i: number): CellMapping => world.cells[i]!.mapping;
const widgets = () => world.lib.getRepository(Widget);
const namesIn = async (i: number, prefix: string) =>
  (await rowsIn<{ name: string }>(world.cells[i]!.db.url, 'SELECT name FROM widgets WHERE name LIKE $1', [`${prefix}%`]))
    .map((r) => r.name)
    .sort();

/** Inside a transaction: three nested ones at once, the second throwing, with awaits inside each. */
function parallelNested(mapping: CellMapping, prefix: string) {
  return world.lib.transaction(async () => {
    await widgets().insert(widgetFor(mapping.uuid, `${prefix}-outer-1`));
    const settled = await Promise.allSettled(
      ['a', 'b', 'c'].map((name) =>
        world.lib.transaction(async () => {
          await widgets().insert(widgetFor(mapping.uuid, `${prefix}-${name}-1`));
          await sleep(2);
          await widgets().insert(widgetFor(mapping.uuid, `${prefix}-${name}-2`));
          if (name === 'b') throw new Error(`${prefix} b fails`);
          return name;
        }),
      ),
    );
    await widgets().insert(widgetFor(mapping.uuid, `${prefix}-outer-2`));
    return settled.map((s) => (s.status === 'fulfilled' ? s.value : (s.reason as Error).message));
  });
}

const committed = (prefix: string) =>
  [`${prefix}-a-1`, `${prefix}-a-2`, `${prefix}-c-1`, `${prefix}-c-2`, `${prefix}-outer-1`, `${prefix}-outer-2`].sort();

describe('nested transactions started in parallel', () => {
  it('rolls back only the nested transaction that throws, and commits the outer with the rest', async () => {
    const outcome = await targetCell(cell(0), () => parallelNested(cell(0), 'p1'));
    expect(outcome).toEqual(['a', 'p1 b fails', 'c']);
    expect(await namesIn(0, 'p1-')).toEqual(committed('p1'));
  });

  it('leaves no connection of the cell idle in a transaction, and later requests succeed', async () => {
    await targetCell(cell(1), () => parallelNested(cell(1), 'p2')).catch(() => undefined);
    await expectNoConnectionInTransaction(world.cells[1]!.db.name);
    const later = await Promise.allSettled(
      Array.from({ length: 12 }, (_, i) =>
        targetCell(cell(1), () => widgets().insert(widgetFor(cell(1).uuid, `p2-later-${i}`))),
      ),
    );
    expect(later.filter((s) => s.status === 'rejected')).toEqual([]);
    expect(await namesIn(1, 'p2-later-')).toHaveLength(12);
  });

  it('runs nested transactions on one connection one at a time', async () => {
    const events: string[] = [];
    await targetCell(cell(2), () =>
      world.lib.transaction(async () => {
        await Promise.allSettled(
          ['x', 'y', 'z'].map((name) =>
            world.lib.transaction(async () => {
              events.push(`start ${name}`);
              await widgets().count();
              await sleep(5);
              await widgets().count();
              events.push(`end ${name}`);
              if (name === 'y') throw new Error('y fails');
            }),
          ),
        );
      }),
    );
    // Each start is followed by its own end before the next nested transaction starts.
    expect(events).toHaveLength(6);
    for (let k = 0; k < 6; k += 2) {
      expect(events[k + 1]).toBe(events[k]!.replace('start', 'end'));
    }
  });

  it('keeps 45 requests over 3 cells, each with parallel nested transactions, correct', async () => {
    const outcomes = await Promise.allSettled(
      Array.from({ length: 45 }, (_, i) => targetCell(cell(i % 3), () => parallelNested(cell(i % 3), `m${i}`))),
    );
    const failed = outcomes.flatMap((o, i) => (o.status === 'rejected' ? [`${i}: ${String(o.reason)}`] : []));
    expect(failed.slice(0, 5)).toEqual([]);
    for (let i = 0; i < 45; i++) {
      expect(await namesIn(i % 3, `m${i}-`)).toEqual(committed(`m${i}`));
    }
    for (const c of world.cells) await expectNoConnectionInTransaction(c.db.name);
  });
});
