import 'reflect-metadata';
import {
  DataSource,
  type EntityMetadata,
  type ObjectLiteral,
  type Repository,
  type EntityTarget,
} from 'typeorm';
import { ConnectionMetadataBuilder } from 'typeorm/connection/ConnectionMetadataBuilder';
import { RequestContext, runWithContext, targetCell, type CellMapping } from '../lib';
import type { RegistryEntry } from '../lib/registry';
import { createCellWorld, migrateCellDatabase, type CellWorld } from './support/cells';
import { assertCliBuilt, createProject, runCli } from './support/cli';
import { createTestDatabase, rowsIn, type TestDatabase } from './support/databases';
import {
  Author,
  BOOK_INSERTS,
  Book,
  BookSubscriber,
  CreateLibrary1764072300000,
  Genre,
  LIBRARY_ENTITIES,
} from './support/library';
import { join } from 'node:path';

const ROOT = join(__dirname, '..');
let world: CellWorld;

beforeAll(async () => {
  world = await createCellWorld('metadata_template', {
    cellCount: 3,
    cellMigrations: [CreateLibrary1764072300000],
    cells: {
      entities: LIBRARY_ENTITIES,
      migrations: [CreateLibrary1764072300000],
      cellDataSourceOptions: { subscribers: [BookSubscriber] },
    },
  });
});

afterAll(async () => {
  await world.destroy();
});

/** The registry's DataSource of `cell`, opened now if needed. */
async function cellDataSource(cell: CellMapping): Promise<DataSource> {
  return runWithContext(new RequestContext({ cell }), async () => {
    const entry = (await world.lib.route('main')) as RegistryEntry;
    entry.release();
    return entry.dataSource;
  });
}

/** Every object of a DataSource's metadata graph that is an EntityMetadata, reached through relations too. */
function metadataOf(dataSource: DataSource): Set<EntityMetadata> {
  const found = new Set<EntityMetadata>(dataSource.entityMetadatas);
  for (const metadata of dataSource.entityMetadatas) {
    for (const relation of metadata.relations) {
      found.add(relation.entityMetadata);
      found.add(relation.inverseEntityMetadata);
      if (relation.junctionEntityMetadata) found.add(relation.junctionEntityMetadata);
    }
    for (const column of metadata.columns) found.add(column.entityMetadata);
  }
  return found;
}

/** The repositories a scenario runs on: routed to a cell, or of a plain DataSource. */
type Repositories = <T extends ObjectLiteral>(entity: EntityTarget<T>) => Repository<T>;

/**
 * Relations, lazy and eager loading, the listener, the subscriber and soft delete, with ids and
 * names from `seed`; returns what was read back, for comparison.
 */
async function libraryScenario(repo: Repositories, seed: number, tag: string): Promise<unknown> {
  const authors = repo(Author);
  const books = repo(Book);
  const genres = repo(Genre);
  const [g1, g2] = await genres.save([
    genres.create({ id: seed + 1, name: `${tag}-poetry` }),
    genres.create({ id: seed + 2, name: `${tag}-prose` }),
  ]);
  await authors.save(authors.create({ id: seed, name: `${tag}-author` }));
  // The author by id, as a plain object (a routed create() would do too: spec/lazy-relations.spec.ts).
  const author = { id: seed } as Author;
  await books.save([
    books.create({ id: seed + 1, title: `${tag} First Book`, author, genres: [g1!, g2!] }),
    books.create({ id: seed + 2, title: `${tag} Second Book`, author, genres: [g2!] }),
  ]);
  const loaded = await authors.findOneByOrFail({ id: seed });
  const lazy = (await loaded.books).map((b) => [b.id, b.title, b.slug]).sort();
  const eager = await books.findOneByOrFail({ id: seed + 1 });
  const withGenres = await books.findOneOrFail({
    where: { id: seed + 1 },
    relations: { genres: true },
  });
  await books.softDelete({ id: seed + 2 });
  const afterSoftDelete = await books.countBy({ author: { id: seed } });
  const withDeleted = await books.count({ where: { author: { id: seed } }, withDeleted: true });
  const lazyAfterDelete = (await (await authors.findOneByOrFail({ id: seed })).books).length;
  await books.restore({ id: seed + 2 });
  const afterRestore = await books.countBy({ author: { id: seed } });
  return {
    lazy,
    eagerAuthor: eager.author?.name,
    genres: withGenres.genres.map((g) => g.name).sort(),
    afterSoftDelete,
    withDeleted,
    lazyAfterDelete,
    afterRestore,
  };
}

it('opens cell DataSources without building entity metadata again, all sharing one graph bound to no cell', async () => {
  const build = jest.spyOn(ConnectionMetadataBuilder.prototype, 'buildEntityMetadatas');
  try {
    const dataSources = await Promise.all(world.cells.map((cell) => cellDataSource(cell.mapping)));
    expect(build).not.toHaveBeenCalled();
    const [first, ...others] = dataSources.map((dataSource) => metadataOf(dataSource));
    expect(first!.size).toBe(dataSources[0]!.entityMetadatas.length);
    for (const graph of others) {
      // The same objects (compared by identity: printing a DataSource's graph throws).
      expect(graph.size).toBe(first!.size);
      expect([...graph].every((metadata) => first!.has(metadata))).toBe(true);
    }
    for (const metadata of first!) {
      // The template: never connected, and none of the cells (compared by identity, not printed).
      expect(metadata.dataSource.isInitialized).toBe(false);
      expect(dataSources.some((dataSource) => dataSource === metadata.dataSource)).toBe(false);
    }
  } finally {
    build.mockRestore();
  }
});

it('gives a cell the answers a plain DataSource gives: relations, lazy and eager loading, listener, subscriber, soft delete', async () => {
  const database: TestDatabase = await createTestDatabase('metadata_template_plain');
  const plain = new DataSource({
    type: 'postgres',
    url: database.url,
    entities: LIBRARY_ENTITIES,
    subscribers: [BookSubscriber],
    poolSize: 2,
  });
  try {
    await migrateCellDatabase(database.url, [CreateLibrary1764072300000]);
    await plain.initialize();
    const cell = world.cells[0]!;
    const cellSource = await cellDataSource(cell.mapping);
    BOOK_INSERTS.length = 0;
    const routed = await targetCell(cell.mapping, () =>
      libraryScenario((entity) => world.lib.getRepository(entity), 100, 'same'),
    );
    const routedInserts = BOOK_INSERTS.splice(0).map((insert) => [
      insert.dataSource === cellSource,
      insert.title,
    ]);
    const reference = await libraryScenario((entity) => plain.getRepository(entity), 100, 'same');
    const plainInserts = BOOK_INSERTS.splice(0).map((insert) => [
      insert.dataSource === plain,
      insert.title,
    ]);
    expect(routed).toEqual(reference);
    expect(routed).toMatchObject({
      lazy: [
        [101, 'same First Book', 'same-first-book'],
        [102, 'same Second Book', 'same-second-book'],
      ],
    });
    expect(routedInserts).toEqual(plainInserts);
    expect(routedInserts).toEqual([
      [true, 'same First Book'],
      [true, 'same Second Book'],
    ]);
  } finally {
    await plain.destroy();
    await database.drop();
  }
});

it('keeps lazy relations, subscribers and soft deletes of interleaved requests in their own cell', async () => {
  const tasks = 30;
  const sources = await Promise.all(world.cells.map((cell) => cellDataSource(cell.mapping)));
  BOOK_INSERTS.length = 0;
  const results = await Promise.all(
    Array.from({ length: tasks }, async (_, i) => {
      const index = i % world.cells.length;
      const cell = world.cells[index]!;
      const tag = `c${index}t${i}`;
      // Let the tasks of different cells interleave at every await.
      await new Promise((resolve) => setImmediate(resolve));
      const result = (await targetCell(cell.mapping, () =>
        libraryScenario((entity) => world.lib.getRepository(entity), 1_000 + i * 10, tag),
      )) as { lazy: [number, string, string][] };
      return { index, tag, result };
    }),
  );
  for (const { tag, result } of results) {
    expect(result.lazy.map(([, title]) => title)).toEqual([
      `${tag} First Book`,
      `${tag} Second Book`,
    ]);
  }
  for (const insert of BOOK_INSERTS) {
    const index = Number(/^c(\d+)/.exec(insert.title)![1]);
    expect(insert.dataSource).toBe(sources[index]);
  }
  expect(BOOK_INSERTS).toHaveLength(tasks * 2);
  for (const [index, cell] of world.cells.entries()) {
    const titles = await rowsIn<{ title: string }>(
      cell.db.url,
      `SELECT title FROM books WHERE id >= 1000`,
    );
    expect(titles.length).toBe((tasks / world.cells.length) * 2);
    for (const { title } of titles) expect(title.startsWith(`c${index}t`)).toBe(true);
  }
});

it('migrates cells through the CLI with the same entities, then routes to the migrated tables', async () => {
  assertCliBuilt();
  const cli = await createCellWorld('metadata_template_cli', { cellCount: 2, cellMigrations: [] });
  const config = `
import { BookSubscriber, CreateLibrary1764072300000, LIBRARY_ENTITIES } from ${JSON.stringify(join(ROOT, 'spec', 'support', 'library'))};
export default {
  api: ${JSON.stringify(cli.api.url)},
  entities: LIBRARY_ENTITIES,
  migrations: [CreateLibrary1764072300000],
  cellDataSourceOptions: { subscribers: [BookSubscriber] },
};
`;
  const project = await createProject({ 'cells.config.ts': config }, { linkNodeModules: true });
  try {
    const migrate = await runCli(['db', 'migrate', '--all'], project.dir);
    expect(migrate.code).toBe(0);
    const lib = (await import('../lib')).Cells;
    const cells = new lib({
      api: cli.api.url,
      entities: LIBRARY_ENTITIES,
      migrations: [CreateLibrary1764072300000],
      cellDataSourceOptions: { subscribers: [BookSubscriber] },
      poolSize: 2,
    });
    await cells.initialize();
    try {
      for (const [i, cell] of cli.cells.entries()) {
        const result = await targetCell(cell.mapping, () =>
          libraryScenario((entity) => cells.getRepository(entity), 10, `cli${i}`),
        );
        expect(result).toMatchObject({
          lazy: [
            [11, `cli${i} First Book`, `cli${i}-first-book`],
            [12, `cli${i} Second Book`, `cli${i}-second-book`],
          ],
        });
      }
    } finally {
      await cells.destroy();
    }
  } finally {
    await project.remove();
    await cli.destroy();
  }
});
