import {
  IsNull,
  Not,
  type EntityManager,
  type EntityMetadata,
  type EntityTarget,
  type FindOptionsWhere,
  type ObjectLiteral,
  type SelectQueryBuilder,
} from 'typeorm';
import type { ReadDeleted } from './context';

/**
 * How `readDeleted` rewrites routed reads of entities with a `@DeleteDateColumn`. TypeORM's own
 * default already hides soft-deleted rows, so `'no'` passes calls through unchanged.
 */

type Where<T> = FindOptionsWhere<T> | FindOptionsWhere<T>[] | undefined;
type FindOptionsLike = { where?: unknown; withDeleted?: boolean } & ObjectLiteral;

/** Methods whose first argument is a FindManyOptions / FindOneOptions object. */
export const OPTIONS_READS: ReadonlySet<string> = new Set([
  'find',
  'findAndCount',
  'findOne',
  'findOneOrFail',
  'count',
  'exists',
]);

/** Methods whose first argument is a `where`, mapped to the options form that accepts `withDeleted`. */
export const WHERE_READS: ReadonlyMap<string, string> = new Map([
  ['findBy', 'find'],
  ['findAndCountBy', 'findAndCount'],
  ['findOneBy', 'findOne'],
  ['findOneByOrFail', 'findOneOrFail'],
  ['countBy', 'count'],
  ['existsBy', 'exists'],
]);

/** Aggregate methods: `(columnName, where?)`. */
export const AGGREGATE_READS: ReadonlyMap<string, string> = new Map([
  ['sum', 'SUM'],
  ['average', 'AVG'],
  ['minimum', 'MIN'],
  ['maximum', 'MAX'],
]);

/** The property path of the entity's delete date column, or undefined when it has none. */
export function deleteDatePath(metadata: EntityMetadata): string | undefined {
  return metadata.deleteDateColumn?.propertyPath;
}

/** Adds `withDeleted` (and for `'only'`, a NOT NULL condition on the delete date) to find options. */
export function applyToOptions<T extends FindOptionsLike>(
  options: T | undefined,
  mode: Exclude<ReadDeleted, 'no'>,
  path: string,
): T {
  const base = (options ?? {}) as T;
  if (mode === 'yes') return { ...base, withDeleted: true };
  return { ...base, withDeleted: true, where: onlyDeleted(base.where as Where<ObjectLiteral>, path) };
}

function onlyDeleted<T>(where: Where<T>, path: string): Where<T> {
  const condition = { [path]: Not(IsNull()) } as FindOptionsWhere<T>;
  if (where === undefined) return condition;
  if (Array.isArray(where)) return where.length === 0 ? condition : where.map((w) => ({ ...w, ...condition }));
  return { ...where, ...condition };
}

/** Runs an aggregate the way TypeORM does, but with soft-deleted rows included or alone. */
export async function aggregateWithDeleted(
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
  qb.setFindOptions(applyToOptions({ where }, mode, path));
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
