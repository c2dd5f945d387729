import { Inject } from '@nestjs/common';
import type { EntityTarget, ObjectLiteral } from 'typeorm';
import { InvalidArgumentError } from '../errors';
import type { DatabaseSelector } from '../repository';

const byObject = new WeakMap<object, Map<DatabaseSelector, symbol>>();
const byName = new Map<string, Map<DatabaseSelector, symbol>>();

/**
 * The injection token of the routed repository of `entity` on `db`, as `CellsModule.forFeature`
 * provides it: one symbol per entity and database, so two entity classes of the same name never
 * share a token.
 * @param db `'main'` (default: the cell of the current request context) or `'api'`.
 * @throws InvalidArgumentError when `db` is not `'api'` or `'main'`, or `entity` is not a class,
 * an EntitySchema or an entity name.
 */
export function getCellsRepositoryToken(entity: EntityTarget<ObjectLiteral>, db: DatabaseSelector = 'main'): symbol {
  if (db !== 'main' && db !== 'api') throw new InvalidArgumentError(`db must be 'api' or 'main', got ${String(db).slice(0, 40)}.`);
  let tokens: Map<DatabaseSelector, symbol> | undefined;
  if (typeof entity === 'string') {
    tokens = byName.get(entity) ?? new Map();
    byName.set(entity, tokens);
  } else if ((typeof entity === 'function' || typeof entity === 'object') && entity !== null) {
    tokens = byObject.get(entity) ?? new Map();
    byObject.set(entity, tokens);
  } else {
    throw new InvalidArgumentError('An entity must be an entity class, an EntitySchema or an entity name.');
  }
  let token = tokens.get(db);
  if (token === undefined) {
    token = Symbol(`CellsRepository(${entityName(entity)}, ${db})`);
    tokens.set(db, token);
  }
  return token;
}

/**
 * Injects the routed repository of `entity` on `db` that `CellsModule.forFeature([entity], db)`
 * provides: a TypeORM `Repository` whose every call goes to the database the request context
 * names, as `cells.getRepository(entity, db)`.
 * @param db `'main'` (default) or `'api'`.
 */
export function InjectCellsRepository(entity: EntityTarget<ObjectLiteral>, db: DatabaseSelector = 'main'): PropertyDecorator & ParameterDecorator {
  return Inject(getCellsRepositoryToken(entity, db));
}

function entityName(entity: EntityTarget<ObjectLiteral>): string {
  if (typeof entity === 'string') return entity;
  if (typeof entity === 'function') return entity.name;
  const named = entity as { name?: unknown; options?: { name?: unknown } };
  return String(named.options?.name ?? named.name ?? 'entity');
}
