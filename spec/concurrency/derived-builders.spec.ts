import { randomUUID } from 'node:crypto';
import { targetCell, type CellMapping } from '../../lib';
import { sleep } from '../reliability/support-load';
import { createCellWorld, widgetFor, type CellWorld } from '../support/cells';
import { rowsIn } from '../support/databases';
import { expectNoConnectionInTransaction } from '../support/pg-activity';
import { CreatePosts1764072200000, Comment, POST_ENTITIES, Post, Tag } from '../support/posts';
import { CreateWidgets1764072100000, Widget } from '../support/widget';

// Issue 9, case 10: every builder reachable from a routed repository, however derived (clone(),
// relation(), subQuery(), createQueryBuilder() on a builder, write builders), routes at execution
// to the context's database, like the builder it came from.

let world: CellWorld;
const SEEDS = [3, 5]; // widgets seeded in cell 0 and cell 1: counts tell the cells apart

beforeAll(async () => {
  world = await createCellWorld('conc_derived', {
    cellCount: 2,
    cellMigrations: [CreateWidgets1764072100000, CreatePosts1764072200000],
    cells: { entities: [Widget, ...POST_ENTITIES] },
  });
  for (const [i, { mapping, db }] of world.cells.entries()) {
    await targetCell(mapping, () =>
      world.lib.getRepository(Widget).insert(Array.from({ length: SEEDS[i]! }, () => widgetFor(mapping.uuid, 'seed'))),
    );
    await rowsIn(
      db.url,
      `WITH p AS (INSERT INTO posts (id, title) VALUES (1, 'post-1'), (2, 'post-2')),
            t AS (INSERT INTO tags (id, label) VALUES (101, 'tag-101'), (102, 'tag-102'), (103, 'tag-103'))
       INSERT INTO comments (id, body) VALUES (11, 'comment-11'), (12, 'comment-12')`,
    );
  }
});
afterAll(async () => {
  await world?.destroy();
});

const cell = (i: number): CellMapping => world.cells[i]!.mapping;
const widgets = () => world.lib.getRepository(Widget);
const posts = () => world.lib.getRepository(Post);
const seedsQuery = () => widgets().createQueryBuilder('w').where(`w.name = 'seed'`).orderBy('w.uuid');
const cellsOf = (rows: Widget[]) => [...new Set(rows.map((r) => r.intendedCell))];
const tagIds = (rows: Tag[]) => rows.map((t) => t.id).sort();
const tagLinks = async (i: number, postId: number) =>
  (await rowsIn<{ tag_id: number }>(world.cells[i]!.db.url, 'SELECT tag_id FROM post_tags WHERE post_id = $1 ORDER BY tag_id', [postId])).map(
    (r) => r.tag_id,
  );

describe('clone() of a routed builder', () => {
  it("reads the context's cell, not the cell where the original last ran", async () => {
    const base = seedsQuery();
    expect(cellsOf(await targetCell(cell(1), () => base.getMany()))).toEqual([cell(1).uuid]);
    const copy = base.clone();
    const rows = await targetCell(cell(0), () => copy.getMany());
    expect([rows.length, ...cellsOf(rows)]).toEqual([SEEDS[0], cell(0).uuid]);
  });

  it('works for a builder that never ran', async () => {
    const copy = seedsQuery().clone();
    expect(await targetCell(cell(0), () => copy.getCount())).toBe(SEEDS[0]);
    expect(await targetCell(cell(1), () => copy.getCount())).toBe(SEEDS[1]);
  });

  it('counts its own cell in 80 interleaved requests cloning one shared base over 2 cells', async () => {
    const base = seedsQuery();
    const counts = await Promise.all(
      Array.from({ length: 80 }, (_, i) =>
        targetCell(cell(i % 2), async () => {
          await sleep(i % 3);
          const [rows, total] = await Promise.all([base.getMany(), base.clone().getCount()]);
          return [i % 2, rows.length, total];
        }),
      ),
    );
    expect(counts.filter(([c, n, total]) => n !== SEEDS[c!] || total !== SEEDS[c!])).toEqual([]);
  });
});

describe('relation() of a routed builder', () => {
  it('adds, loads and removes many-to-many links in the context cell outside a transaction', async () => {
    const tags = () => posts().createQueryBuilder().relation(Post, 'tags').of(1);
    await targetCell(cell(0), async () => {
      await tags().add([101, 102]);
      expect(tagIds(await tags().loadMany<Tag>())).toEqual([101, 102]);
      await tags().remove(101);
      expect(tagIds(await tags().loadMany<Tag>())).toEqual([102]);
    });
    expect(await tagLinks(0, 1)).toEqual([102]);
    expect(await tagLinks(1, 1)).toEqual([]);
  });

  it('sets and loads a many-to-one relation in the context cell', async () => {
    const postOf = () => world.lib.getRepository(Comment).createQueryBuilder().relation(Comment, 'post').of(11);
    await targetCell(cell(1), async () => {
      await postOf().set(2);
      expect((await postOf().loadOne<Post>())?.title).toBe('post-2');
      await postOf().set(null);
      expect(await postOf().loadOne<Post>()).toBeUndefined();
    });
  });

  it('joins the transaction: links added in a rolled-back transaction are gone, committed ones stay', async () => {
    const tags = () => posts().createQueryBuilder().relation(Post, 'tags').of(2);
    await expect(
      targetCell(cell(1), () =>
        world.lib.transaction(async () => {
          await tags().add(101);
          expect(tagIds(await tags().loadMany<Tag>())).toEqual([101]);
          throw new Error('roll back');
        }),
      ),
    ).rejects.toThrow('roll back');
    expect(await tagLinks(1, 2)).toEqual([]);
    await targetCell(cell(1), () => world.lib.transaction(() => tags().add(103)));
    expect(await tagLinks(1, 2)).toEqual([103]);
    await expectNoConnectionInTransaction(world.cells[1]!.db.name);
  });
});

describe('other builders derived from a routed builder', () => {
  it('runs qb.createQueryBuilder() in the context cell', async () => {
    const derived = seedsQuery().createQueryBuilder().select('x.uuid', 'uuid').from(Widget, 'x').where(`x.name = 'seed'`);
    expect((await targetCell(cell(0), () => derived.getRawMany())).length).toBe(SEEDS[0]);
    expect((await targetCell(cell(1), () => derived.getRawMany())).length).toBe(SEEDS[1]);
  });

  it('runs a builder made with subQuery() in the context cell', async () => {
    const sub = seedsQuery().subQuery().select('count(*)::int', 'n').from(Widget, 'x').where(`x.name = 'seed'`);
    expect(await targetCell(cell(1), () => sub.getRawOne())).toEqual({ n: SEEDS[1] });
  });

  it('routes every execution of one shared write builder to the cell of its context', async () => {
    const tag = `write-${randomUUID().slice(0, 8)}`;
    for (let i = 0; i < 2; i++) {
      await targetCell(cell(i), () => widgets().insert([widgetFor(cell(i).uuid, tag), widgetFor(cell(i).uuid, tag)]));
    }
    const shared = widgets().createQueryBuilder();
    const grow = shared.update().set({ size: () => 'size + 1' }).where('name = :tag', { tag });
    const hide = shared.softDelete().where('name = :tag', { tag });
    const show = shared.restore().where('name = :tag', { tag });
    const sizes = async (i: number) =>
      (await rowsIn<{ size: number; gone: boolean }>(world.cells[i]!.db.url, 'SELECT size, deleted_at IS NOT NULL AS gone FROM widgets WHERE name = $1', [tag]))
        .map((r) => `${r.size}${r.gone ? '-gone' : ''}`);
    const affected = await Promise.all([
      targetCell(cell(0), () => grow.execute()),
      targetCell(cell(1), () => world.lib.transaction(() => grow.execute())),
      targetCell(cell(1), () => grow.execute()),
    ]);
    expect(affected.map((r) => r.affected)).toEqual([2, 2, 2]);
    expect(await sizes(0)).toEqual(['1', '1']);
    expect(await sizes(1)).toEqual(['2', '2']);
    await targetCell(cell(0), () => hide.execute());
    expect(await sizes(0)).toEqual(['1-gone', '1-gone']);
    expect(await sizes(1)).toEqual(['2', '2']);
    await targetCell(cell(0), () => show.execute());
    await targetCell(cell(1), () => shared.delete().from(Widget).where('name = :tag', { tag }).execute());
    expect(await sizes(0)).toEqual(['1', '1']);
    expect(await sizes(1)).toEqual([]);
  });

  it('keeps 90 interleaved executions of one derived write builder, in and out of transactions, in their cells', async () => {
    const tag = `many-${randomUUID().slice(0, 8)}`;
    for (let i = 0; i < 2; i++) await targetCell(cell(i), () => widgets().insert(widgetFor(cell(i).uuid, tag)));
    const grow = widgets().createQueryBuilder().update().set({ size: () => 'size + 1' }).where('name = :tag', { tag });
    const plan = Array.from({ length: 90 }, (_, i) => ({ c: i % 2, kind: (['plain', 'commit', 'rollback'] as const)[Math.floor(i / 2) % 3]! }));
    const outcomes = await Promise.allSettled(
      plan.map(({ c, kind }, i) =>
        targetCell(cell(c), async () => {
          await sleep(i % 4);
          if (kind === 'plain') return grow.execute();
          return world.lib.transaction(async () => {
            const result = await grow.execute();
            await sleep(1);
            if (kind === 'rollback') throw new Error('roll back');
            return result;
          });
        }),
      ),
    );
    const unexpected = outcomes.filter(
      (o, i) => (o.status === 'rejected') !== (plan[i]!.kind === 'rollback') || (o.status === 'rejected' && (o.reason as Error).message !== 'roll back'),
    );
    expect(unexpected.slice(0, 3)).toEqual([]);
    for (let c = 0; c < 2; c++) {
      const [row] = await rowsIn<{ size: number }>(world.cells[c]!.db.url, 'SELECT size FROM widgets WHERE name = $1', [tag]);
      expect([c, row?.size]).toEqual([c, plan.filter((p) => p.c === c && p.kind !== 'rollback').length]);
      await expectNoConnectionInTransaction(world.cells[c]!.db.name);
    }
  });
});
