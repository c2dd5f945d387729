import { randomUUID } from 'node:crypto';
import { targetCell, type CellMapping } from '../../lib';
import { sleep } from '../reliability/support-load';
import { createCellWorld, widgetFor, widgetRowsIn, type CellWorld } from '../support/cells';
import { rowsIn } from '../support/databases';
import { expectNoConnectionInTransaction } from '../support/pg-activity';
import { Widget } from '../support/widget';

// Issue 9, case 1: one query builder, made once, executed by any number of concurrent requests on
// any cells, inside and outside transactions. Each execution must work on its own state: its own
// DataSource, its own query runner, its own result.

const SEEDS_PER_CELL = 4;
let world: CellWorld;

beforeAll(async () => {
  world = await createCellWorld('conc_qb', { cellCount: 3 });
});
afterAll(async () => {
  await world?.destroy();
});

const cell = (i: number): CellMapping => world.cells[i]!.mapping;
const widgets = () => world.lib.getRepository(Widget);

/**
 * Seeds each cell with rows named `seed-<tag>` and returns the shared builder of one test: those
 * rows, and the rows named `pending-<tag>-*` that a transaction inserts and removes again before it
 * ends, so only that transaction ever sees them. A tag per test keeps a test's leaks out of the next.
 */
async function seededBuilder() {
  const tag = randomUUID().slice(0, 8);
  for (const mapping of world.cells.map((c) => c.mapping)) {
    await targetCell(mapping, () =>
      widgets().insert(Array.from({ length: SEEDS_PER_CELL }, () => widgetFor(mapping.uuid, `seed-${tag}`))),
    );
  }
  const qb = widgets()
    .createQueryBuilder('w')
    .where('(w.name = :seed OR w.name LIKE :pending)', { seed: `seed-${tag}`, pending: `pending-${tag}-%` })
    .orderBy('w.uuid');
  return { qb, tag };
}

/** What one execution read: where each row was meant to be, and its name without the test's tag. */
const summary = (rows: Widget[]) =>
  rows.map((r) => `${r.intendedCell}/${r.name.replace(/-[0-9a-f]{8}/, '')}`).sort();
/** What an execution in `mapping` should read: the seeds, and the transaction's own pending rows. */
const seedsOf = (mapping: CellMapping, ...own: string[]) =>
  [...Array.from({ length: SEEDS_PER_CELL }, () => `${mapping.uuid}/seed`), ...own.map((n) => `${mapping.uuid}/${n}`)].sort();

const countIn = (i: number, uuid: string | undefined) => widgetRowsIn(world.cells[i]!.db.url, uuid);

/** A short account of what went wrong: how many, and the first few. */
const firstFew = (problems: string[]) =>
  [`${problems.length} unexpected outcomes`, ...problems.slice(0, 6)].join('\n');

async function expectNoCellInTransaction(): Promise<void> {
  for (const c of world.cells) await expectNoConnectionInTransaction(c.db.name);
}

describe('a query builder shared between requests', () => {
  it('gives a transaction on one cell and a plain call on another each its own rows when run at once', async () => {
    const { qb, tag } = await seededBuilder();
    const pending = widgetFor(cell(0).uuid, `pending-${tag}-a`);
    const inTransaction = targetCell(cell(0), () =>
      world.lib.transaction(async () => {
        await widgets().insert(pending);
        const reads: string[][] = [];
        for (let k = 0; k < 8; k++) {
          reads.push(summary(await qb.getMany()));
          await sleep(k % 3);
        }
        await widgets().delete({ uuid: pending.uuid! });
        return reads;
      }),
    );
    const plain = targetCell(cell(1), async () => {
      const reads: string[][] = [];
      for (let k = 0; k < 24; k++) reads.push(summary(await qb.getMany()));
      return reads;
    });
    const [a, b] = await Promise.allSettled([inTransaction, plain]);
    expect(a).toEqual({ status: 'fulfilled', value: Array(8).fill(seedsOf(cell(0), 'pending-a')) });
    expect(b).toEqual({ status: 'fulfilled', value: Array(24).fill(seedsOf(cell(1))) });
    await expectNoCellInTransaction();
  });

  it('commits nothing of a transaction that ran the shared builder and then rolled back', async () => {
    const { qb } = await seededBuilder();
    const first = widgetFor(cell(0).uuid, 'rolled-back');
    const failing = targetCell(cell(0), () =>
      world.lib.transaction(async () => {
        await widgets().insert(first);
        for (let k = 0; k < 6; k++) {
          await qb.getMany();
          await sleep(1);
        }
        throw new Error('roll back');
      }),
    );
    const others = Array.from({ length: 12 }, (_, k) =>
      targetCell(cell(k % 2 === 0 ? 1 : 2), async () => {
        for (let n = 0; n < 4; n++) await qb.getMany();
      }),
    );
    const [outcome] = await Promise.allSettled([failing, ...others]);
    expect(outcome).toEqual({ status: 'rejected', reason: new Error('roll back') });
    // Later requests on the same cell borrow its pooled connections, and may commit as they go.
    await Promise.all(
      Array.from({ length: 10 }, () =>
        targetCell(cell(0), () =>
          world.lib.transaction(async () => {
            await widgets().insert(widgetFor(cell(0).uuid, 'later'));
          }),
        ),
      ),
    );
    expect(await countIn(0, first.uuid!)).toBe(0);
    await expectNoCellInTransaction();
  });

  it('returns the same result from every kind of execution of one builder on 3 cells at once', async () => {
    const { qb } = await seededBuilder();
    const results = await Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        targetCell(cell(i % 3), async () => {
          switch (i % 5) {
            case 0:
              return { i, value: summary(await qb.getMany()) };
            case 1:
              return { i, value: await qb.getCount() };
            case 2:
              return { i, value: (await qb.getRawMany<{ w_intended_cell: string }>()).map((r) => r.w_intended_cell) };
            case 3: {
              const [rows, count] = await qb.getManyAndCount();
              return { i, value: [summary(rows), count] };
            }
            default:
              return { i, value: (await qb.getOne())?.intendedCell };
          }
        }),
      ),
    );
    for (const { i, value } of results) {
      const mapping = cell(i % 3);
      const expected = [
        seedsOf(mapping),
        SEEDS_PER_CELL,
        Array(SEEDS_PER_CELL).fill(mapping.uuid),
        [seedsOf(mapping), SEEDS_PER_CELL],
        mapping.uuid,
      ][i % 5];
      expect({ i, value }).toEqual({ i, value: expected });
    }
    await expectNoCellInTransaction();
  });

  it('keeps 150 interleaved requests over 3 cells, in and out of transactions, apart on one builder', async () => {
    const { qb, tag } = await seededBuilder();
    const keptName = `kept-${tag}`;
    const plan = Array.from({ length: 150 }, (_, i) => ({
      i,
      cell: cell(i % 3),
      kind: (['plain', 'commit', 'rollback'] as const)[Math.floor(i / 3) % 3]!,
      kept: widgetFor(cell(i % 3).uuid, keptName),
    }));
    const outcomes = await Promise.allSettled(
      plan.map(({ i, cell: mapping, kind, kept }) =>
        targetCell(mapping, async () => {
          if (kind === 'plain') {
            const reads: string[][] = [];
            for (let k = 0; k < 3; k++) {
              reads.push(summary(await qb.getMany()));
              await sleep((i + k) % 4);
            }
            return reads;
          }
          return world.lib.transaction(async () => {
            const pending = widgetFor(mapping.uuid, `pending-${tag}-${i}`);
            await widgets().insert([pending, kept]);
            const reads: string[][] = [];
            for (let k = 0; k < 3; k++) {
              await sleep((i + k) % 4);
              reads.push(summary(await qb.getMany()));
            }
            await widgets().delete({ uuid: pending.uuid! });
            if (kind === 'rollback') throw new Error(`rollback ${i}`);
            return reads;
          });
        }),
      ),
    );
    const unexpected: string[] = [];
    for (const [n, outcome] of outcomes.entries()) {
      const { i, cell: mapping, kind } = plan[n]!;
      const expected = kind === 'plain' ? seedsOf(mapping) : seedsOf(mapping, `pending-${i}`);
      if (kind === 'rollback') {
        if (outcome.status !== 'rejected' || (outcome.reason as Error).message !== `rollback ${i}`) {
          unexpected.push(`${i} (${kind}): ${outcome.status === 'rejected' ? String(outcome.reason) : 'fulfilled'}`);
        }
      } else if (outcome.status === 'rejected') {
        unexpected.push(`${i} (${kind}): ${String(outcome.reason)}`);
      } else if (JSON.stringify(outcome.value) !== JSON.stringify([expected, expected, expected])) {
        const sizes = outcome.value.map((read) => read.length).join(', ');
        unexpected.push(`${i} (${kind}): read ${sizes} rows, expected ${expected.length} each time`);
      }
    }
    expect(firstFew(unexpected)).toBe('0 unexpected outcomes');
    for (let c = 0; c < 3; c++) {
      const rows = await rowsIn<{ uuid: string }>(world.cells[c]!.db.url, 'SELECT uuid FROM widgets WHERE name = $1', [keptName]);
      const committed = plan.filter((p) => p.i % 3 === c && p.kind === 'commit').map((p) => p.kept.uuid).sort();
      expect(rows.map((r) => r.uuid).sort()).toEqual(committed);
    }
    await expectNoCellInTransaction();
  });
});
