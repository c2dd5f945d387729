import { DataSource, EntitySchema, type EntitySchemaRelationOptions } from 'typeorm';
import { Client } from 'pg';

/**
 * An application's entity model of any size, generated in code for the cold-open benchmark:
 * `count` entities `model_<i>`, each with a few columns and a soft-delete column, a many-to-one to
 * the previous entity (and its one-to-many inverse), and on every fifth entity a many-to-many to
 * entity 0 through a join table. TypeORM builds metadata for all of them at each DataSource open.
 */
export interface EntityModel {
  /** The EntitySchemas, for `Cells`' and a plain DataSource's `entities`. */
  entities: EntitySchema[];
  /** The entity the first query of a cold cell reads (`count()`). */
  first: EntitySchema;
}

/** The generated model of `count` entities (at least 1). */
export function entityModel(count: number): EntityModel {
  const name = (i: number): string => `model_${i}`;
  const entities = Array.from({ length: count }, (_, i) => {
    const relations: Record<string, EntitySchemaRelationOptions> = {};
    if (i > 0)
      relations.parent = {
        type: 'many-to-one',
        target: name(i - 1),
        inverseSide: 'children',
        nullable: true,
      };
    if (i + 1 < count)
      relations.children = { type: 'one-to-many', target: name(i + 1), inverseSide: 'parent' };
    if (i > 0 && i % 5 === 0) {
      relations.peers = {
        type: 'many-to-many',
        target: name(0),
        joinTable: { name: `${name(i)}_peers` },
      };
    }
    return new EntitySchema({
      name: name(i),
      tableName: name(i),
      columns: {
        id: { type: 'integer', primary: true, generated: 'increment' },
        title: { type: 'varchar', length: 64 },
        size: { type: 'integer', default: 0 },
        createdAt: { type: 'timestamptz', createDate: true, name: 'created_at' },
        deletedAt: { type: 'timestamptz', deleteDate: true, name: 'deleted_at', nullable: true },
      },
      relations,
      indices: [{ name: `${name(i)}_title`, columns: ['title'] }],
    });
  });
  return { entities, first: entities[0]! };
}

/** Creates the tables of `model` in the database at `url` (TypeORM's synchronize). */
export async function createModelTables(url: string, model: EntityModel): Promise<void> {
  await withModelDataSource(url, model, (dataSource) => dataSource.synchronize());
}

/** Runs `use` on a one-connection DataSource of `model` at `url`, destroyed afterwards. */
async function withModelDataSource<T>(url: string, model: EntityModel, use: (dataSource: DataSource) => Promise<T>): Promise<T> {
  const dataSource = new DataSource({
    type: 'postgres',
    url,
    entities: model.entities,
    poolSize: 1,
  });
  await dataSource.initialize();
  try {
    return await use(dataSource);
  } finally {
    await dataSource.destroy();
  }
}

/**
 * The DDL that creates `model`'s tables, as TypeORM's synchronize would run it, computed against
 * the empty database at `url` (left empty): for creating the same tables in many databases with
 * one round trip each instead of a synchronize each.
 *
 * @throws Error when the schema builder produces a parameterised statement (not expected for the
 *   generated model), or when `url`'s database is not empty of the model's tables.
 */
export async function modelTablesSql(url: string, model: EntityModel): Promise<string> {
  return withModelDataSource(url, model, async (dataSource) => {
    const { upQueries } = await dataSource.driver.createSchemaBuilder().log();
    if (upQueries.some((q) => q.parameters !== undefined && q.parameters.length > 0)) {
      throw new Error('the model DDL has parameterised statements; use createModelTables instead');
    }
    return upQueries.map((q) => q.query).join(';\n');
  });
}

/**
 * Inserts `rows` rows into the table of `model.first` in the database at `url`, one minute apart,
 * every fifth soft-deleted, and analyses the table, so list queries read real rows and filter
 * deleted ones.
 */
export async function seedModelRows(url: string, model: EntityModel, rows: number): Promise<void> {
  const table = model.first.options.tableName ?? model.first.options.name;
  const client = new Client({ connectionString: url });
  client.on('error', () => undefined);
  await client.connect();
  try {
    await client.query(
      `INSERT INTO "${table}" (title, size, created_at, deleted_at)
       SELECT 'row-' || g, g, now() - g * interval '1 minute',
              CASE WHEN g % 5 = 0 THEN now() END
       FROM generate_series(1, ${rows}) g`,
    );
    await client.query(`ANALYZE "${table}"`);
  } finally {
    await client.end();
  }
}
