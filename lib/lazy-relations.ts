import type { DataSource, ObjectLiteral, QueryRunner } from 'typeorm';
import { RelationLoader } from 'typeorm/query-builder/RelationLoader';
import type { RelationMetadata } from 'typeorm/metadata/RelationMetadata';
import { translateConnectionError } from './connection-errors';
import { RequestContext, currentContext, runInternal } from './context';
import type { Route } from './route';

/** Picks the route of a routed `'main'` call from `ctx` (`Cells.route`). */
export type MainRoute = (ctx: RequestContext | undefined) => Route | Promise<Route>;

/**
 * The RelationLoader of the metadata template (metadata-template.ts): it loads lazy relations
 * through the route of a routed call instead of through a DataSource of its own, which has no
 * connection.
 *
 * Every cell DataSource shares the template's entity metadata, so every lazy relation accessor
 * is made here: on each entity class's prototype when the metadata is built (for an entity made
 * with `new`), and on each entity TypeORM creates (routed `create()`, and every entity a query
 * loads). A load then runs on:
 * - the query runner the entity was created with (inside a TypeORM transaction), through that
 *   runner's DataSource, exactly as TypeORM does;
 * - else the cell whose context the entity was created or loaded in, so an entity loaded from
 *   one cell never reads another cell's rows, wherever its relation is awaited;
 * - else (an entity made with `new`, or created outside any context) the route of the current
 *   context: its target cell (joining its running transaction), or the default main database.
 *
 * A lease on the route is held until the load settles. Outside any context, with nothing
 * captured, the load fails with NoContextError; in a context targeting no cell without a default
 * main database, with NoTargetCellError. TypeORM's accessor keeps a failed load's promise for
 * ever and leaves a derived promise rejected with nobody to handle it (an unhandled rejection,
 * which ends a Node process); here a failed load is handled and forgotten, so the next access
 * loads again. @internal
 */
export class RoutedRelationLoader extends RelationLoader {
  constructor(
    private readonly template: DataSource,
    private readonly route: MainRoute,
  ) {
    super(template);
  }

  // TypeORM 1.1's RelationLoader.enableLazyLoad, with the load routed and its failure handled.
  override enableLazyLoad(
    relation: RelationMetadata,
    entity: ObjectLiteral,
    queryRunner?: QueryRunner,
  ): void {
    const load = (target: ObjectLiteral): Promise<ObjectLiteral[]> =>
      this.loadRouted(relation, target, queryRunner, cell);
    // An entity being created (not a prototype) remembers the cell of the context creating it.
    const cell = isPrototype(entity) ? undefined : (currentContext()?.cellUuid ?? undefined);
    const dataIndex = `__${relation.propertyName}__`;
    const promiseIndex = `__promise_${relation.propertyName}__`;
    const resolveIndex = `__has_${relation.propertyName}__`;
    const setData = (target: ObjectLiteral, value: unknown): unknown => {
      target[dataIndex] = value;
      target[resolveIndex] = true;
      delete target[promiseIndex];
      return value;
    };
    const setPromise = (target: ObjectLiteral, value: Promise<unknown>): Promise<unknown> => {
      delete target[resolveIndex];
      delete target[dataIndex];
      target[promiseIndex] = value;
      value.then(
        (result) => (target[promiseIndex] === value ? setData(target, result) : result),
        () => {
          // The caller gets the rejection; the next access loads again.
          if (target[promiseIndex] === value) delete target[promiseIndex];
        },
      );
      return value;
    };
    Object.defineProperty(entity, relation.propertyName, {
      get(this: ObjectLiteral) {
        if (this[resolveIndex] === true || this[dataIndex] !== undefined)
          return Promise.resolve(this[dataIndex]);
        if (this[promiseIndex]) return this[promiseIndex] as Promise<unknown>;
        const loading = load(this).then((result) =>
          relation.isOneToOne || relation.isManyToOne
            ? result.length === 0
              ? null
              : result[0]
            : result,
        );
        return setPromise(this, loading);
      },
      set(this: ObjectLiteral, value: unknown) {
        if (value instanceof Promise) setPromise(this, value);
        else setData(this, value);
      },
      configurable: true,
      enumerable: false,
    });
  }

  /** Loads `relation` of `entity` on the route described in the class comment. */
  private async loadRouted(
    relation: RelationMetadata,
    entity: ObjectLiteral,
    queryRunner: QueryRunner | undefined,
    cell: string | undefined,
  ): Promise<ObjectLiteral[]> {
    if (queryRunner !== undefined && queryRunner.connection !== this.template) {
      return queryRunner.connection.relationLoader.load(relation, entity, queryRunner);
    }
    let ctx = currentContext();
    // A context of its own for the creating cell, so the entities loaded here remember it too.
    if (cell !== undefined && ctx?.cellUuid !== cell) ctx = new RequestContext({ cell });
    const at = ctx;
    const route = await this.route(at);
    const load = (): Promise<ObjectLiteral[]> =>
      route.manager.connection.relationLoader.load(relation, entity, route.manager.queryRunner);
    try {
      return await (at === undefined ? load() : runInternal(at, load));
    } catch (error) {
      throw translateConnectionError(error, route.label, route.manager.queryRunner);
    } finally {
      route.release();
    }
  }
}

/** True when `entity` is a class's prototype (the accessors TypeORM makes while building metadata). */
function isPrototype(entity: ObjectLiteral): boolean {
  const constructor = (entity as { constructor?: unknown }).constructor;
  return typeof constructor === 'function' && constructor.prototype === entity;
}
