import {
  Repository,
  type EntityManager,
  type EntityMetadata,
  type EntityTarget,
  type ObjectLiteral,
  type QueryRunner,
  type SelectQueryBuilder,
} from 'typeorm';
import { translateConnectionError } from './connection-errors';
import { currentContext, type ReadDeleted, type RequestContext } from './context';
import {
  AGGREGATE_READS,
  OPTIONS_READS,
  WHERE_READS,
  aggregateWithDeleted,
  applyToOptions,
  applyToQueryBuilder,
  deleteDatePath,
} from './read-deleted';
import type { Route } from './registry';

/** Which database a routed repository talks to: the API database, or the current cell (`'main'`). */
export type DatabaseSelector = 'api' | 'main';

/** What a routed repository needs from `Cells`. @internal */
export interface Router {
  /** The route of `ctx` (default: the current context) for `db`, with a lease taken. */
  route(db: DatabaseSelector, ctx?: RequestContext): Route | Promise<Route>;
  /** A manager whose metadata describes `db`'s entities, usable without a connection. */
  metadataManager(db: DatabaseSelector): EntityManager;
}

/** Repository methods that run queries; each is routed at call time and holds a lease while running. */
export const ROUTED_METHODS = [
  'preload', 'save', 'remove', 'softRemove', 'recover', 'insert', 'update', 'updateAll', 'upsert',
  'delete', 'deleteAll', 'softDelete', 'restore', 'exists', 'existsBy', 'count', 'countBy', 'sum',
  'average', 'minimum', 'maximum', 'find', 'findBy', 'findAndCount', 'findAndCountBy', 'findOne',
  'findOneBy', 'findOneOrFail', 'findOneByOrFail', 'query', 'sql', 'clear', 'increment', 'decrement',
] as const;

/** Repository methods that only need entity metadata, never a connection. */
export const METADATA_METHODS = ['hasId', 'getId', 'create', 'merge'] as const;

/** Methods implemented by RoutedRepository itself. */
export const OWN_METHODS = ['createQueryBuilder', 'extend'] as const;

const QB_READS = [
  'getMany', 'getOne', 'getOneOrFail', 'getRawMany', 'getRawOne', 'getManyAndCount',
  'getRawAndEntities', 'getCount', 'getExists', 'stream',
] as const;
const QB_DERIVED = ['insert', 'update', 'delete', 'softDelete', 'restore'] as const;

type AnyFn = (...args: unknown[]) => unknown;
type MethodTable = Record<string, AnyFn>;

/**
 * A TypeORM `Repository` whose DataSource is chosen at each call from the current request context:
 * the API database, or the cell named by the context (the default main database when untargeted).
 * One instance serves every cell; creating it needs no context.
 */
class RoutedRepository<T extends ObjectLiteral> {
  constructor(
    private readonly router: Router,
    readonly target: EntityTarget<T>,
    private readonly db: DatabaseSelector,
  ) {}

  /** The manager of the database the current context routes to; synchronous only when it is open. */
  get manager(): EntityManager {
    const route = this.router.route(this.db);
    if (route instanceof Promise) {
      route.then((r) => r.release(), () => undefined);
      return this.router.metadataManager(this.db);
    }
    route.release();
    return route.manager;
  }

  get metadata(): EntityMetadata {
    return this.router.metadataManager(this.db).dataSource.getMetadata(this.target);
  }

  /** The current transaction's query runner, else undefined (non-transaction managers have none). */
  get queryRunner(): QueryRunner | undefined {
    return this.manager.queryRunner;
  }

  /**
   * Creates a query builder that binds to the current context's database when it executes, and
   * holds a lease on it only while executing. Write builders derived with insert(), update(),
   * delete(), softDelete() or restore() bind the same way.
   */
  createQueryBuilder(alias?: string, queryRunner?: QueryRunner): SelectQueryBuilder<T> {
    const template = this.router.metadataManager(this.db).getRepository(this.target);
    const qb = template.createQueryBuilder(alias, queryRunner);
    bindOnExecute(qb as unknown as QueryBuilderLike, this.router, this.db, queryRunner !== undefined);
    return qb;
  }

  /** Like TypeORM's `Repository.extend`: returns a routed repository with the custom methods added. */
  extend<C>(customs: C & ThisType<this & C>): this & C {
    const extended = Object.create(this) as this & C;
    return Object.assign(extended, customs);
  }
}
Object.setPrototypeOf(RoutedRepository.prototype, Repository.prototype);

for (const name of ROUTED_METHODS) {
  Object.defineProperty(RoutedRepository.prototype, name, {
    value: routedMethod(name),
    writable: true,
    configurable: true,
  });
}
for (const name of METADATA_METHODS) {
  Object.defineProperty(RoutedRepository.prototype, name, {
    value: function (this: RoutedRepository<ObjectLiteral>, ...args: unknown[]) {
      const repo = routerOf(this).metadataManager(dbOf(this)).getRepository(this.target);
      return (repo as unknown as MethodTable)[name]!(...args);
    },
    writable: true,
    configurable: true,
  });
}

function routerOf(repo: RoutedRepository<ObjectLiteral>): Router {
  return (repo as unknown as { router: Router }).router;
}
function dbOf(repo: RoutedRepository<ObjectLiteral>): DatabaseSelector {
  return (repo as unknown as { db: DatabaseSelector }).db;
}

function routedMethod(name: string): AnyFn {
  return function (this: RoutedRepository<ObjectLiteral>, ...args: unknown[]) {
    // The context is read once per call: it picks the route and the readDeleted mode.
    const ctx = currentContext();
    const mode = ctx?.readDeleted ?? 'no';
    let route: Route | Promise<Route>;
    try {
      route = routerOf(this).route(dbOf(this), ctx);
    } catch (error) {
      // Like TypeORM's own async methods: report every failure through the returned promise.
      return Promise.reject(error);
    }
    if (route instanceof Promise) return route.then((r) => invoke(r, this.target, name, args, mode));
    return invoke(route, this.target, name, args, mode);
  };
}

async function invoke(
  route: Route,
  target: EntityTarget<ObjectLiteral>,
  name: string,
  args: unknown[],
  mode: ReadDeleted,
): Promise<unknown> {
  try {
    const repo = route.manager.getRepository(target);
    if (mode !== 'no') {
      const path = deleteDatePath(repo.metadata);
      if (path !== undefined) return await readWithDeleted(route.manager, repo, name, args, mode, path);
    }
    return await (repo as unknown as MethodTable)[name]!(...args);
  } catch (error) {
    throw translateConnectionError(error, route.label, route.manager.queryRunner);
  } finally {
    route.release();
  }
}

function readWithDeleted(
  manager: EntityManager,
  repo: Repository<ObjectLiteral>,
  name: string,
  args: unknown[],
  mode: Exclude<ReadDeleted, 'no'>,
  path: string,
): unknown {
  const methods = repo as unknown as MethodTable;
  if (OPTIONS_READS.has(name)) {
    return methods[name]!(applyToOptions(args[0] as ObjectLiteral | undefined, mode, path), ...args.slice(1));
  }
  const optionsForm = WHERE_READS.get(name);
  if (optionsForm !== undefined) {
    return methods[optionsForm]!(applyToOptions({ where: args[0] }, mode, path));
  }
  const fn = AGGREGATE_READS.get(name);
  if (fn !== undefined) {
    return aggregateWithDeleted(manager, repo.target, fn, args[0] as string, args[1] as never, mode, path);
  }
  return methods[name]!(...args);
}

interface QueryBuilderLike {
  dataSource: unknown;
  queryRunner: QueryRunner | undefined;
  expressionMap: { dataSource?: unknown; mainAlias?: { hasMetadata: boolean; metadata: EntityMetadata } };
  [method: string]: unknown;
}

/** Patches a builder so that each execution routes, leases, applies readDeleted, and releases. */
function bindOnExecute(qb: QueryBuilderLike, router: Router, db: DatabaseSelector, fixedRunner: boolean): void {
  for (const name of QB_READS) patchExecution(qb, name, router, db, fixedRunner, true);
  patchExecution(qb, 'execute', router, db, fixedRunner, false);
  for (const name of QB_DERIVED) {
    const derive = qb[name];
    if (typeof derive !== 'function') continue;
    qb[name] = function (this: QueryBuilderLike, ...args: unknown[]) {
      const derived = (derive as AnyFn).apply(this, args) as QueryBuilderLike;
      if (derived !== this) bindOnExecute(derived, router, db, fixedRunner);
      return derived;
    };
  }
}

function patchExecution(
  qb: QueryBuilderLike,
  name: string,
  router: Router,
  db: DatabaseSelector,
  fixedRunner: boolean,
  isRead: boolean,
): void {
  const original = qb[name];
  if (typeof original !== 'function') return;
  qb[name] = async function (this: QueryBuilderLike, ...args: unknown[]) {
    const ctx = currentContext();
    const mode = ctx?.readDeleted ?? 'no';
    const route = await router.route(db, ctx);
    try {
      const manager = route.manager;
      this.dataSource = manager.dataSource;
      this.expressionMap.dataSource = manager.dataSource;
      if (!fixedRunner) this.queryRunner = manager.queryRunner;
      const main = this.expressionMap.mainAlias;
      if (isRead && mode !== 'no' && main?.hasMetadata) {
        const path = deleteDatePath(main.metadata);
        if (path !== undefined) applyToQueryBuilder(this as unknown as SelectQueryBuilder<ObjectLiteral>, mode, path);
      }
      return await (original as AnyFn).apply(this, args);
    } catch (error) {
      throw translateConnectionError(error, route.label, route.manager.queryRunner);
    } finally {
      route.release();
    }
  };
}

/** Creates the routed repository of `target` on `db`. @internal */
export function createRoutedRepository<T extends ObjectLiteral>(
  router: Router,
  target: EntityTarget<T>,
  db: DatabaseSelector,
): Repository<T> {
  return new RoutedRepository(router, target, db) as unknown as Repository<T>;
}
