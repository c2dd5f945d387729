import { RequestContext, runWithContext, type ReadDeleted } from '../../lib';
import { sleep } from '../reliability/support-load';
import { createCellWorld, type CellWorld } from '../support/cells';
import { rowsIn } from '../support/databases';
import { CreatePosts1764072200000, POST_ENTITIES, Post } from '../support/posts';
import { CreateWidgets1764072100000, Widget } from '../support/widget';

// Issue 9, case 8: readDeleted and relations. The chosen semantic is Nova's: read_deleted applies to
// the queried (root) entity only; related rows follow TypeORM's default, so soft-deleted related
// rows stay hidden in every mode. find({ relations }) and the query-builder path
// (leftJoinAndSelect) must agree.

let world: CellWorld;

beforeAll(async () => {
  world = await createCellWorld('conc_rd_rel', {
    cellCount: 2,
    cellMigrations: [CreateWidgets1764072100000, CreatePosts1764072200000],
    cells: { entities: [Widget, ...POST_ENTITIES] },
  });
  for (const { db } of world.cells) {
    await rowsIn(
      db.url,
      `WITH p AS (INSERT INTO posts (id, title, deleted_at) VALUES (1, 'live-post', NULL), (2, 'gone-post', now())),
            t AS (INSERT INTO tags (id, label, deleted_at) VALUES (101, 'live-tag', NULL), (102, 'gone-tag', now()))
       SELECT 1`,
    );
    await rowsIn(
      db.url,
      `WITH c AS (INSERT INTO comments (id, body, "postId", deleted_at) VALUES
                   (11, 'live-comment', 1, NULL), (12, 'gone-comment', 1, now()),
                   (21, 'c2-live', 2, NULL), (22, 'c2-gone', 2, now()))
       INSERT INTO post_tags (post_id, tag_id) VALUES (1, 101), (1, 102), (2, 101), (2, 102)`,
    );
  }
});
afterAll(async () => {
  await world?.destroy();
});

function inMode<T>(mode: ReadDeleted, cellIndex: number, fn: () => Promise<T>): Promise<T> {
  return runWithContext(new RequestContext({ readDeleted: mode, cell: world.cells[cellIndex]!.mapping }), fn);
}

/** A post as the specs compare it: title, comment bodies and tag labels, sorted. */
const shape = (posts: Post[]) =>
  posts
    .map((p) => ({
      title: p.title,
      comments: p.comments.map((c) => c.body).sort(),
      tags: p.tags.map((t) => t.label).sort(),
    }))
    .sort((a, b) => a.title.localeCompare(b.title));

const LIVE = { title: 'live-post', comments: ['live-comment'], tags: ['live-tag'] };
const GONE = { title: 'gone-post', comments: ['c2-live'], tags: ['live-tag'] };
const EXPECTED: Record<ReadDeleted, unknown[]> = { no: [LIVE], yes: [GONE, LIVE], only: [GONE] };

const posts = () => world.lib.getRepository(Post);
const viaFind = () => posts().find({ relations: { comments: true, tags: true }, order: { id: 'ASC' } });
const viaBuilder = () =>
  posts()
    .createQueryBuilder('p')
    .leftJoinAndSelect('p.comments', 'c')
    .leftJoinAndSelect('p.tags', 't')
    .orderBy('p.id')
    .getMany();

describe.each(['no', 'yes', 'only'] as ReadDeleted[])("readDeleted '%s' with relations", (mode) => {
  it('applies to the root entity of find({ relations }) and hides soft-deleted related rows', async () => {
    expect(shape(await inMode(mode, 0, viaFind))).toEqual(EXPECTED[mode]);
  });

  it('applies to the root entity of a query builder with leftJoinAndSelect and hides soft-deleted related rows', async () => {
    expect(shape(await inMode(mode, 0, viaBuilder))).toEqual(EXPECTED[mode]);
  });

  it('gives findOne with relations the same related rows as the query builder', async () => {
    const id = mode === 'no' ? 1 : 2;
    const found = await inMode(mode, 0, () => posts().findOne({ where: { id }, relations: { comments: true, tags: true } }));
    const built = await inMode(mode, 0, () =>
      posts()
        .createQueryBuilder('p')
        .leftJoinAndSelect('p.comments', 'c')
        .leftJoinAndSelect('p.tags', 't')
        .where('p.id = :id', { id })
        .getOne(),
    );
    expect(shape(found ? [found] : [])).toEqual(shape(built ? [built] : []));
    expect(shape(found ? [found] : [])).toEqual([id === 1 ? LIVE : GONE]);
  });
});

describe('readDeleted with relations under concurrency', () => {
  it('gives 180 interleaved requests in three modes, on both paths and 2 cells, the same semantic', async () => {
    const modes: ReadDeleted[] = ['no', 'yes', 'only'];
    const results = await Promise.all(
      Array.from({ length: 180 }, async (_, i) => {
        const mode = modes[i % 3]!;
        const path = Math.floor(i / 3) % 2 === 0 ? 'find' : 'builder';
        const read = await inMode(mode, Math.floor(i / 6) % 2, async () => {
          await sleep(i % 3);
          return shape(await (path === 'find' ? viaFind() : viaBuilder()));
        });
        return { i, mode, path, read };
      }),
    );
    const wrong = results.filter(({ mode, read }) => JSON.stringify(read) !== JSON.stringify(EXPECTED[mode]));
    expect(wrong.slice(0, 4)).toEqual([]);
  });
});
