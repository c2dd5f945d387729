import { EventEmitter, once } from 'node:events';
import { getContext, setTargetCell, targetCell, type CellMapping } from '../../lib';
import { sleep } from '../reliability/support-load';
import { createCellWorld, widgetFor, widgetRowsIn, type CellWorld } from '../support/cells';
import { expectNoConnectionInTransaction } from '../support/pg-activity';
import { Widget } from '../support/widget';

// Issue 9, case 4: work scheduled inside a transaction that runs after the transaction ended (a
// timer, a listener bound with cells.bind, a queued job). The context's cell is still its target:
// the call routes to that cell normally, outside the finished transaction (as Nova's target_cell
// drops transaction state), instead of failing on the released query runner.

let world: CellWorld;
beforeAll(async () => {
  world = await createCellWorld('conc_outlive', { cellCount: 3 });
});
afterAll(async () => {
  await world?.destroy();
});

const cell = (i: number): CellMapping => world.cells[i]!.mapping;
const widgets = () => world.lib.getRepository(Widget);
const countIn = (i: number, uuid: string | undefined) => widgetRowsIn(world.cells[i]!.db.url, uuid);

/** Runs `fn` from a timer `ms` after now; the returned promise settles with it. */
function later<T>(ms: number, fn: () => Promise<T>): Promise<T> {
  return new Promise<T>((resolve, reject) => setTimeout(() => fn().then(resolve, reject), ms));
}

describe('work that outlives its transaction', () => {
  it('routes a write from a timer that fires after the transaction committed to the same cell', async () => {
    const row = widgetFor(cell(0).uuid, 'timer-after-commit');
    let scheduled: Promise<unknown> | undefined;
    await targetCell(cell(0), () =>
      world.lib.transaction(async () => {
        scheduled = later(30, () => widgets().insert(row));
      }),
    );
    await expect(scheduled).resolves.toBeDefined();
    expect(await countIn(0, row.uuid!)).toBe(1);
  });

  it('keeps a timer write made after a rolled-back transaction, since it ran outside it', async () => {
    const row = widgetFor(cell(1).uuid, 'timer-after-rollback');
    let scheduled: Promise<unknown> | undefined;
    await expect(
      targetCell(cell(1), () =>
        world.lib.transaction(async () => {
          scheduled = later(30, () => widgets().insert(row));
          throw new Error('roll back');
        }),
      ),
    ).rejects.toThrow('roll back');
    await expect(scheduled).resolves.toBeDefined();
    expect(await countIn(1, row.uuid!)).toBe(1);
  });

  it('runs a listener bound with cells.bind inside a transaction on its cell once the transaction ended', async () => {
    const emitter = new EventEmitter();
    const row = widgetFor(cell(2).uuid, 'bound-listener');
    await targetCell(cell(2), () =>
      world.lib.transaction(async () => {
        emitter.on(
          'job',
          world.lib.bind(() => {
            widgets()
              .insert(row)
              .then(
                () => emitter.emit('done', getContext().cellUuid),
                (error: unknown) => emitter.emit('done', error),
              );
          }),
        );
      }),
    );
    const done = once(emitter, 'done');
    emitter.emit('job');
    const [result] = await done;
    expect(result).toBe(cell(2).uuid);
    expect(await countIn(2, row.uuid!)).toBe(1);
  });

  it('runs reads, query builders and a new transaction from a timer after the transaction ended', async () => {
    const inside = widgetFor(cell(0).uuid, 'made-inside');
    const fromTimer = widgetFor(cell(0).uuid, 'made-by-timer');
    let scheduled: Promise<unknown[]> | undefined;
    await targetCell(cell(0), () =>
      world.lib.transaction(async () => {
        await widgets().insert(inside);
        scheduled = later(30, async () => [
          (await widgets().findOneBy({ uuid: inside.uuid! }))?.intendedCell,
          (await widgets().createQueryBuilder('w').where('w.uuid = :u', { u: inside.uuid }).getOne())?.intendedCell,
          await world.lib.transaction(async () => {
            await widgets().insert(fromTimer);
            return widgets().countBy({ uuid: fromTimer.uuid! });
          }),
        ]);
      }),
    );
    await expect(scheduled).resolves.toEqual([cell(0).uuid, cell(0).uuid, 1]);
    expect(await countIn(0, fromTimer.uuid!)).toBe(1);
    await expectNoConnectionInTransaction(world.cells[0]!.db.name);
  });

  it('runs a nested transaction started after the callback returned as a transaction of its own', async () => {
    const chained = widgetFor(cell(0).uuid, 'chained-after-return');
    let late: Promise<unknown> | undefined;
    await targetCell(cell(0), () =>
      world.lib.transaction(async () => {
        // Admitted while the callback runs: a savepoint the outer transaction waits for.
        const first = world.lib.transaction(() => sleep(100));
        // Starts once `first` settled, after the callback returned: outside the transaction.
        late = first.then(() => world.lib.transaction(async () => widgets().insert(chained)));
        return 'returned';
      }),
    );
    await expect(late).resolves.toBeDefined();
    expect(await countIn(0, chained.uuid!)).toBe(1);
    await expectNoConnectionInTransaction(world.cells[0]!.db.name);
  });

  it('keeps work that runs while a finished callback waits for its savepoints out of the rolled-back transaction', async () => {
    const timerRow = widgetFor(cell(1).uuid, 'timer-during-finish');
    let timer: Promise<unknown> | undefined;
    await expect(
      targetCell(cell(1), () =>
        world.lib.transaction(async () => {
          void world.lib.transaction(() => sleep(300)).catch(() => undefined);
          timer = later(50, () => widgets().insert(timerRow));
          throw new Error('roll back');
        }),
      ),
    ).rejects.toThrow('roll back');
    await timer;
    expect(await countIn(1, timerRow.uuid!)).toBe(1);
    await expectNoConnectionInTransaction(world.cells[1]!.db.name);
  });

  it('lets work that runs after its transaction ended target another cell', async () => {
    // The transaction is over, so nothing ties the context to its cell any more ("as if no
    // transaction had been opened"): a late job may fan out to other cells.
    const row = widgetFor(cell(1).uuid, 'late-retarget');
    let scheduled: Promise<unknown> | undefined;
    await targetCell(cell(0), () =>
      world.lib.transaction(async () => {
        scheduled = later(30, async () => targetCell(cell(1), () => widgets().insert(row)));
      }),
    );
    await expect(scheduled).resolves.toBeDefined();
    expect(await countIn(1, row.uuid!)).toBe(1);
  });

  it('lets work that runs after its transaction ended retarget its context with setTargetCell', async () => {
    let scheduled: Promise<string | null> | undefined;
    await targetCell(cell(0), () =>
      world.lib.transaction(async () => {
        scheduled = later(30, async () => {
          setTargetCell(getContext(), cell(2));
          return getContext().cellUuid;
        });
      }),
    );
    await expect(scheduled).resolves.toBe(cell(2).uuid);
  });

  it('routes the late work of 90 transactions over 3 cells, committed or rolled back, to their own cells', async () => {
    const plan = Array.from({ length: 90 }, (_, i) => ({
      i,
      index: i % 3,
      rollback: i % 4 === 0,
      inside: widgetFor(cell(i % 3).uuid, `late-inside-${i}`),
      late: widgetFor(cell(i % 3).uuid, `late-${i}`),
    }));
    const scheduled: Array<Promise<unknown>> = [];
    await Promise.allSettled(
      plan.map((p) => {
        // The late work starts only once its transaction has ended (work that runs while the
        // transaction is still open joins it, and rolls back with it).
        let ended!: () => void;
        const transactionEnded = new Promise<void>((resolve) => (ended = resolve));
        return targetCell(cell(p.index), () =>
          world.lib.transaction(async () => {
            await widgets().insert(p.inside);
            scheduled.push(later(p.i % 20, async () => {
              await transactionEnded;
              return widgets().insert(p.late);
            }));
            await sleep(p.i % 7);
            if (p.rollback) throw new Error('roll back');
          }),
        ).finally(ended);
      }),
    );
    const outcomes = await Promise.allSettled(scheduled);
    const failed = outcomes.flatMap((o) => (o.status === 'rejected' ? [String(o.reason)] : []));
    expect(failed.slice(0, 5)).toEqual([]);
    for (const p of plan) {
      expect([p.i, await countIn(p.index, p.late.uuid!), await countIn(p.index, p.inside.uuid!)]).toEqual([
        p.i,
        1,
        p.rollback ? 0 : 1,
      ]);
    }
    for (const c of world.cells) await expectNoConnectionInTransaction(c.db.name);
  });
});
