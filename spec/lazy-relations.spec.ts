import 'reflect-metadata';
import { NoContextError, targetCell } from '../lib';
import { createCellWorld, type CellWorld } from './support/cells';
import { Author, Book, CreateLibrary1764072300000, LIBRARY_ENTITIES } from './support/library';

let world: CellWorld;
const AUTHOR_ID = 7;

beforeAll(async () => {
  world = await createCellWorld('lazy_relations', {
    cellCount: 3,
    cellMigrations: [CreateLibrary1764072300000],
    cells: { entities: LIBRARY_ENTITIES, migrations: [CreateLibrary1764072300000] },
  });
  // Author 7 exists in every cell, with books whose titles name their cell.
  for (const [i, cell] of world.cells.entries()) {
    await targetCell(cell.mapping, async () => {
      const authors = world.lib.getRepository(Author);
      const books = world.lib.getRepository(Book);
      await authors.save(authors.create({ id: AUTHOR_ID, name: `author-c${i}` }));
      const author = { id: AUTHOR_ID } as Author;
      await books.save([
        books.create({ id: 1, title: `c${i} one`, author }),
        books.create({ id: 2, title: `c${i} two`, author }),
      ]);
    });
  }
});

afterAll(async () => {
  await world.destroy();
});

/** Rejections nobody handled while `fn` ran (and a few turns of the event loop after it). */
async function unhandledDuring(fn: () => Promise<void>): Promise<unknown[]> {
  const seen: unknown[] = [];
  const listener = (reason: unknown): void => {
    seen.push(reason);
  };
  process.on('unhandledRejection', listener);
  try {
    await fn();
    for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
  } finally {
    process.off('unhandledRejection', listener);
  }
  return seen;
}

const titles = (books: Book[]): string[] => books.map((book) => book.title).sort();

it('loads lazy relations of new and created entities from the cell of the current context, for interleaved requests', async () => {
  const authors = world.lib.getRepository(Author);
  const results = await Promise.all(
    Array.from({ length: 30 }, async (_, task) => {
      const index = task % world.cells.length;
      return targetCell(world.cells[index]!.mapping, async () => {
        const made = new Author();
        made.id = AUTHOR_ID;
        const created = authors.create({ id: AUTHOR_ID });
        // Let the requests of the three cells interleave before and between the loads.
        await new Promise((resolve) => setImmediate(resolve));
        const fromNew = await made.books;
        await new Promise((resolve) => setImmediate(resolve));
        const fromCreated = await created.books;
        return { index, fromNew: titles(fromNew), fromCreated: titles(fromCreated) };
      });
    }),
  );
  for (const { index, fromNew, fromCreated } of results) {
    expect(fromNew).toEqual([`c${index} one`, `c${index} two`]);
    expect(fromCreated).toEqual([`c${index} one`, `c${index} two`]);
  }
});

it('fails with NoContextError outside any context, leaves no unhandled rejection, and loads once in a context', async () => {
  const made = new Author();
  made.id = AUTHOR_ID;
  const unhandled = await unhandledDuring(async () => {
    await expect(made.books).rejects.toBeInstanceOf(NoContextError);
  });
  expect(unhandled).toEqual([]);
  const books = await targetCell(world.cells[1]!.mapping, () => made.books);
  expect(titles(books)).toEqual(['c1 one', 'c1 two']);
});

it('loads lazy relations of a loaded entity from the cell it was loaded from, wherever they are awaited', async () => {
  const authors = world.lib.getRepository(Author);
  const loaded = await targetCell(world.cells[0]!.mapping, () =>
    authors.findOneByOrFail({ id: AUTHOR_ID }),
  );
  const inOtherCell = await targetCell(world.cells[2]!.mapping, () => loaded.books);
  expect(titles(inOtherCell)).toEqual(['c0 one', 'c0 two']);
});

it('loads lazy relations of a new entity inside the running transaction of the context', async () => {
  const books = world.lib.getRepository(Book);
  const seen = await targetCell(world.cells[2]!.mapping, () =>
    world.lib
      .transaction(async () => {
        await books.insert({
          id: 3,
          title: 'c2 uncommitted',
          slug: 'c2-uncommitted',
          author: { id: AUTHOR_ID },
        });
        const made = new Author();
        made.id = AUTHOR_ID;
        const inside = titles(await made.books);
        throw Object.assign(new Error('roll back'), { inside });
      })
      .catch((error: { inside?: string[] }) => error.inside),
  );
  // Seen only inside the transaction, which rolled back.
  expect(seen).toEqual(['c2 one', 'c2 two', 'c2 uncommitted']);
  const after = await targetCell(world.cells[2]!.mapping, () => books.countBy({ id: 3 }));
  expect(after).toBe(0);
});
