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
import { currentContext, type ReadDeleted } from './context';
import { CellReadOnlyError } from './errors';
import { routeBuilder, type DatabaseSelector, type Router } from './query-builder';
import { deleteDatePath, readWithDeleted } from './read-deleted';
import type { Route } from './route';
import type { OnRoute } from './telemetry';

export type { DatabaseSelector } from './query-builder';

/** What a routed repository needs from `Cells`. @internal */
export interface RepositoryRouter extends Router {
  /**
   * A manager whose metadata describes `db`'s entities, usable without a connection (and after
   * `destroy()` has begun: metadata-only methods never need one).
   */
  metadataManager(db: DatabaseSelector): EntityManager;
  /**
   * The manager of the transaction on `db` that the current context's calls join, if any; known
   * at once, also while a nested transaction is queued or open (a routed call then waits its turn).
   */
  transactionManager(db: DatabaseSelector): EntityManager | undefined;
}

/** Repository methods that run queries; each is routed at call time and holds a lease while running. */
export const ROUTED_METHODS = [
  'preload', 'save', 'remove', 'softRemove', 'recover', 'insert', 'update', 'updateAll', 'upsert',
  'delete', 'deleteAll', 'softDelete', 'restore', 'exists', 'existsBy', 'count', 'countBy', 'sum',
  'average', 'minimum', 'maximum', 'find', 'findBy', 'findAndCount', 'findAndCountBy', 'findOne',
  'findOneBy', 'findOneOrFail', 'findOneByOrFail', 'query', 'sql', 'clear', 'increment', 'decrement',
] as const;

/**
 * Routed methods that write: refused with CellReadOnlyError on a read-only cell before reaching it.
 * `query` and `sql` run SQL the library does not read: the cell's read-only transactions refuse
 * a write among them on the server.
 */
const WRITE_METHODS: ReadonlySet<string> = new Set([
  'save', 'remove', 'softRemove', 'recover', 'insert', 'update', 'updateAll', 'upsert', 'delete',
  'deleteAll', 'softDelete', 'restore', 'clear', 'increment', 'decrement',
]);

/** Repository methods that only need entity metadata, never a connection. */
export const METADATA_METHODS = ['hasId', 'getId', 'create', 'merge'] as const;

/** Methods implemented by RoutedRepository itself. */
export const OWN_METHODS = ['createQueryBuilder', 'extend'] as const;

type AnyFn = (...args: unknown[]) => unknown;
type MethodTable = Record<string, AnyFn>;

/**
 * A TypeORM `Repository` whose DataSource is chosen at each call from the current request context:
 * the API database, or the cell named by the context (the default main database when untargeted).
 * One instance serves every cell; creating it needs no context.
 */
class RoutedRepository<T extends ObjectLiteral> {
  constructor(
    private readonly router: RepositoryRouter,
    readonly target: EntityTarget<T>,
    private readonly db: DatabaseSelector,
  ) {}

  /**
   * Inside `cells.transaction`, the transaction's manager (at every stage of it); otherwise the
   * manager of the database the current context routes to, or a metadata-only manager while that
   * database is not open.
   */
  get manager(): EntityManager {
    const joined = this.router.transactionManager(this.db);
    if (joined !== undefined) return joined;
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
   * Creates a query builder that routes each execution by the context active at that moment and
   * holds a lease only while executing (a `stream()` until it ends). Safe to share: executions run
   * on private copies, so concurrent requests on any cells each get their own result. Builders
   * derived from it (`clone`, `subQuery`, `relation`, `insert`, `update`...) route the same way.
   */
  createQueryBuilder(alias?: string, queryRunner?: QueryRunner): SelectQueryBuilder<T> {
    const template = this.router.metadataManager(this.db).getRepository(this.target);
    return routeBuilder(template.createQueryBuilder(alias, queryRunner), { router: this.router, db: this.db });
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

function routerOf(repo: RoutedRepository<ObjectLiteral>): RepositoryRouter {
  return (repo as unknown as { router: RepositoryRouter }).router;
}
function dbOf(repo: RoutedRepository<ObjectLiteral>): DatabaseSelector {
  return (repo as unknown as { db: DatabaseSelector }).db;
}

function routedMethod(name: string): AnyFn {
  return function (this: RoutedRepository<ObjectLiteral>, ...args: unknown[]) {
    const { telemetry } = routerOf(this);
    if (!telemetry.on) return call(this, name, args);
    return telemetry.operation(name, collectionOf(this), (onRoute) => call(this, name, args, onRoute));
  };
}

/** The routed call `name`: routes it by the current context and runs it there. */
function call(repo: RoutedRepository<ObjectLiteral>, name: string, args: unknown[], onRoute?: OnRoute): Promise<unknown> {
  // The context is read once per call: it picks the route and the readDeleted mode.
  const ctx = currentContext();
  const mode = ctx?.readDeleted ?? 'no';
  let route: Route | Promise<Route>;
  try {
    route = routerOf(repo).route(dbOf(repo), ctx);
  } catch (error) {
    // Like TypeORM's own async methods: report every failure through the returned promise.
    return Promise.reject(error);
  }
  if (route instanceof Promise) return route.then((r) => invoke(r, repo.target, name, args, mode, onRoute));
  return invoke(route, repo.target, name, args, mode, onRoute);
}

const kCollection = Symbol('typeorm-cells.collection');

/** `db.collection.name` of a routed repository: its entity's table, looked up once. */
function collectionOf(repo: RoutedRepository<ObjectLiteral>): string | undefined {
  const cached = repo as unknown as { [kCollection]?: string | null };
  if (cached[kCollection] === undefined) {
    try {
      cached[kCollection] = repo.metadata.tableName;
    } catch {
      // Not an entity of this database: TypeORM says so when the call runs.
      cached[kCollection] = null;
    }
  }
  return cached[kCollection] ?? undefined;
}

async function invoke(
  route: Route,
  target: EntityTarget<ObjectLiteral>,
  name: string,
  args: unknown[],
  mode: ReadDeleted,
  onRoute?: OnRoute,
): Promise<unknown> {
  onRoute?.(route.telemetry);
  try {
    if (route.readOnly === true && WRITE_METHODS.has(name)) throw new CellReadOnlyError(route.label, `${name}()`);
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

/** Creates the routed repository of `target` on `db`. @internal */
export function createRoutedRepository<T extends ObjectLiteral>(
  router: RepositoryRouter,
  target: EntityTarget<T>,
  db: DatabaseSelector,
): Repository<T> {
  return new RoutedRepository(router, target, db) as unknown as Repository<T>;
}
