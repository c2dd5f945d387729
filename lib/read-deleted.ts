import {
  EntityNotFoundError,
  type EntityManager,
  type EntityMetadata,
  type EntityTarget,
  type FindOptionsWhere,
  type ObjectLiteral,
  type Repository,
  type SelectQueryBuilder,
} from 'typeorm';
import type { ReadDeleted } from './context';

/**
 * How `readDeleted` rewrites routed reads of entities with a `@DeleteDateColumn`. TypeORM's own
 * default already hides soft-deleted rows, so `'no'` passes calls through unchanged.
 */

type Where<T> = FindOptionsWhere<T> | FindOptionsWhere<T>[] | undefined;
type FindOptionsLike = { where?: unknown; withDeleted?: boolean } & ObjectLiteral;

/**
 * How each routed read runs as a query builder: the find options it takes (from its arguments) and
 * the builder method that executes it. Mirrors TypeORM's EntityManager, which builds every find the
 * same way; running them here lets readDeleted act on the root alias only.
 */
const READS: ReadonlyMap<string, { options(args: unknown[]): FindOptionsLike; run: string; orFail?: true }> = new Map([
  ['find', { options: (a) => optionsArg(a), run: 'getMany' }],
  ['findBy', { options: (a) => ({ where: a[0] }), run: 'getMany' }],
  ['findAndCount', { options: (a) => optionsArg(a), run: 'getManyAndCount' }],
  ['findAndCountBy', { options: (a) => ({ where: a[0] }), run: 'getManyAndCount' }],
  ['findOne', { options: (a) => ({ ...optionsArg(a), take: 1 }), run: 'getOne' }],
  ['findOneBy', { options: (a) => ({ where: a[0], take: 1 }), run: 'getOne' }],
  ['findOneOrFail', { options: (a) => ({ ...optionsArg(a), take: 1 }), run: 'getOne', orFail: true }],
  ['findOneByOrFail', { options: (a) => ({ where: a[0], take: 1 }), run: 'getOne', orFail: true }],
  ['count', { options: (a) => optionsArg(a), run: 'getCount' }],
  ['countBy', { options: (a) => ({ where: a[0] }), run: 'getCount' }],
  ['exists', { options: (a) => optionsArg(a), run: 'getExists' }],
  ['existsBy', { options: (a) => ({ where: a[0] }), run: 'getExists' }],
]);

/** Aggregate methods: `(columnName, where?)`. */
const AGGREGATE_READS: ReadonlyMap<string, string> = new Map([
  ['sum', 'SUM'],
  ['average', 'AVG'],
  ['minimum', 'MIN'],
  ['maximum', 'MAX'],
]);

function optionsArg(args: unknown[]): FindOptionsLike {
  return (args[0] ?? {}) as FindOptionsLike;
}

/** The property path of the entity's delete date column, or undefined when it has none. */
export function deleteDatePath(metadata: EntityMetadata): string | undefined {
  return metadata.deleteDateColumn?.propertyPath;
}

/**
 * Runs repository read `name` with soft-deleted rows of the queried entity included (`'yes'`) or
 * alone (`'only'`). Like Nova's `read_deleted`, the mode applies to the queried entity only:
 * related rows loaded through `relations` (or eager relations) stay hidden when soft-deleted, on
 * this path and on the query-builder path alike. Any other method runs unchanged.
 */
export async function readWithDeleted(
  manager: EntityManager,
  repo: Repository<ObjectLiteral>,
  name: string,
  args: unknown[],
  mode: Exclude<ReadDeleted, 'no'>,
  path: string,
): Promise<unknown> {
  const methods = repo as unknown as Record<string, (...a: unknown[]) => unknown>;
  const read = READS.get(name);
  if (read !== undefined) {
    // TypeORM's own checks (findOne without `where`) and errors come from TypeORM itself.
    if ((name === 'findOne' || name === 'findOneOrFail') && !(args[0] as FindOptionsLike | undefined)?.where) {
      return methods[name]!(...args);
    }
    const qb = manager.createQueryBuilder(repo.target, repo.metadata.name);
    const options = read.options(args);
    qb.setFindOptions(options as never);
    applyToQueryBuilder(qb, mode, path);
    const value = await (qb as unknown as Record<string, () => Promise<unknown>>)[read.run]!();
    if (read.orFail && value === null) throw new EntityNotFoundError(repo.target, args[0]);
    return value;
  }
  const fn = AGGREGATE_READS.get(name);
  if (fn !== undefined) {
    return aggregateWithDeleted(manager, repo.target, fn, args[0] as string, args[1] as never, mode, path);
  }
  return methods[name]!(...args);
}

/** Runs an aggregate the way TypeORM does, but with soft-deleted rows included or alone. */
async function aggregateWithDeleted(
  manager: EntityManager,
  target: EntityTarget<ObjectLiteral>,
  fn: string,
  columnName: string,
  where: Where<ObjectLiteral>,
  mode: Exclude<ReadDeleted, 'no'>,
  path: string,
): Promise<number | null> {
  const metadata = manager.dataSource.getMetadata(target);
  const column = metadata.columns.find((c) => c.propertyPath === columnName);
  if (column === undefined) {
    // Let TypeORM raise its usual error for an unknown column.
    return (manager as unknown as Record<string, (...a: unknown[]) => Promise<number | null>>)[
      fn === 'SUM' ? 'sum' : fn === 'AVG' ? 'average' : fn === 'MIN' ? 'minimum' : 'maximum'
    ]!(target, columnName, where);
  }
  const qb = manager.createQueryBuilder(target, metadata.name);
  qb.setFindOptions({ where: where ?? {} });
  applyToQueryBuilder(qb, mode, path);
  const escape = (name: string) => manager.dataSource.driver.escape(name);
  const raw = await qb
    .select(`${fn}(${escape(qb.alias)}.${escape(column.databaseName)})`, fn)
    .setOption('disable-global-order')
    .getRawOne<Record<string, string | null>>();
  const value = raw?.[fn];
  return value === null || value === undefined ? null : parseFloat(value);
}

/** Applies the mode to a select query builder just before it executes. */
export function applyToQueryBuilder(
  qb: SelectQueryBuilder<ObjectLiteral>,
  mode: Exclude<ReadDeleted, 'no'>,
  path: string,
): void {
  qb.withDeleted();
  if (mode === 'only') qb.andWhere(`${qb.alias}.${path} IS NOT NULL`);
}
