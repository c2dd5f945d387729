import type { Readable } from 'node:stream';
import {
  DeleteQueryBuilder,
  InsertQueryBuilder,
  RelationQueryBuilder,
  SelectQueryBuilder,
  UpdateQueryBuilder,
  type DataSource,
  type EntityMetadata,
  type ObjectLiteral,
  type QueryRunner,
} from 'typeorm';
import { SoftDeleteQueryBuilder } from 'typeorm/query-builder/SoftDeleteQueryBuilder';
import { isConnectionError, lossOf, markLost, translateConnectionError } from './connection-errors';
import { currentContext } from './context';
import { CellReadOnlyError } from './errors';
import { applyToQueryBuilder, deleteDatePath } from './read-deleted';
import type { DatabaseSelector, Route } from './route';
import type { OnRoute, Telemetry } from './telemetry';

/**
 * Routed query builders. A builder made by a routed repository holds no connection: each execution
 * (`getMany()`, `execute()`, `stream()`, a relation's `add()`...) routes by the context active at
 * that moment, takes a lease, and runs on a private copy of the builder bound to the route's
 * DataSource (and transaction). The shared builder is never written to while it executes, so one
 * builder may be executed by any number of concurrent requests on any cells, and what one
 * execution applies (readDeleted, a transaction's query runner) never sticks to the next.
 * Every builder derived from a routed one (`clone`, `createQueryBuilder`, `subQuery`, `select`,
 * `insert`, `update`, `delete`, `softDelete`, `restore`, `relation`) is routed the same way.
 */

export type { DatabaseSelector } from './route';

/** What routed repositories and builders need from `Cells`. @internal */
export interface Router {
  /** The route of the current context (or `ctx`) for `db`, with a lease taken. */
  route(db: DatabaseSelector, ctx?: ReturnType<typeof currentContext>): Route | Promise<Route>;
  /** Spans and metrics of routed calls; `on` false when nothing records. */
  readonly telemetry: Telemetry;
}

/** Where a routed builder sends its executions. @internal */
export interface Routing {
  readonly router: Router;
  readonly db: DatabaseSelector;
}

const kRouting = Symbol('typeorm-cells.routing');

type AnyFn = (...args: unknown[]) => unknown;
/** What this module reads and writes of a TypeORM builder (some of it protected in TypeORM's types). */
interface Builder {
  dataSource: DataSource;
  queryRunner: QueryRunner | undefined;
  expressionMap: {
    dataSource: DataSource;
    queryType?: string;
    mainAlias?: { hasMetadata: boolean; metadata: EntityMetadata };
    aliases?: Array<{ hasMetadata: boolean; metadata: EntityMetadata }>;
  };
  [kRouting]?: Routing;
}
type BuilderClass = new (source: unknown, queryRunner?: QueryRunner) => Builder;

/** Builder methods that run a statement, per builder class. */
const EXECUTIONS = new Map<BuilderClass, readonly string[]>([
  [
    SelectQueryBuilder as unknown as BuilderClass,
    ['getMany', 'getOne', 'getOneOrFail', 'getRawMany', 'getRawOne', 'getManyAndCount', 'getRawAndEntities',
      'getCount', 'getExists', 'stream', 'execute'],
  ],
  [InsertQueryBuilder as unknown as BuilderClass, ['execute']],
  [UpdateQueryBuilder as unknown as BuilderClass, ['execute']],
  [DeleteQueryBuilder as unknown as BuilderClass, ['execute']],
  [SoftDeleteQueryBuilder as unknown as BuilderClass, ['execute']],
  [RelationQueryBuilder as unknown as BuilderClass, ['set', 'add', 'remove', 'addAndRemove', 'loadOne', 'loadMany']],
]);

/** Methods that may return a builder of another class (TypeORM builds it from the receiver). */
const DERIVATIONS = ['select', 'insert', 'update', 'delete', 'softDelete', 'restore', 'relation'] as const;

/** Builder classes whose executions write; refused on a read-only cell (see CellReadOnlyError). */
const WRITE_BUILDERS: ReadonlyMap<BuilderClass, string> = new Map([
  [InsertQueryBuilder as unknown as BuilderClass, 'an insert query builder'],
  [UpdateQueryBuilder as unknown as BuilderClass, 'an update query builder'],
  [DeleteQueryBuilder as unknown as BuilderClass, 'a delete query builder'],
  [SoftDeleteQueryBuilder as unknown as BuilderClass, 'a soft-delete query builder'],
]);

/** Relation builder methods that write (the others load). */
const RELATION_WRITES: ReadonlySet<string> = new Set(['set', 'add', 'remove', 'addAndRemove']);

/** Select-query reads, to which the context's readDeleted mode applies. */
const READS: ReadonlySet<string> = new Set([
  'getMany', 'getOne', 'getOneOrFail', 'getRawMany', 'getRawOne', 'getManyAndCount', 'getRawAndEntities',
  'getCount', 'getExists', 'stream',
]);

/** The routed subclass of each TypeORM builder class. */
const ROUTED = new Map<BuilderClass, BuilderClass>();
for (const [base, executions] of EXECUTIONS) ROUTED.set(base, routedClass(base, executions));

function routedClass(Base: BuilderClass, executions: readonly string[]): BuilderClass {
  // TypeORM's builder classes are abstract in their types only; each listed here is concrete.
  const Routed = class extends (Base as new (source: unknown, queryRunner?: QueryRunner) => Builder) {
    constructor(source: unknown, queryRunner?: QueryRunner) {
      super(source, queryRunner);
      // clone() and TypeORM's own copies call `new this.constructor(this)`: keep the routing.
      const routing = (source as Builder | null)?.[kRouting];
      if (routing !== undefined) (this as Builder)[kRouting] = routing;
    }
  };
  const proto = Routed.prototype as unknown as Record<string, unknown>;
  for (const name of executions) {
    const original = (Base.prototype as unknown as Record<string, AnyFn>)[name]!;
    proto[name] = function (this: Builder, ...args: unknown[]) {
      return executeRouted(this, Base, original, name, args);
    };
  }
  for (const name of DERIVATIONS) {
    const original = (Base.prototype as unknown as Record<string, AnyFn | undefined>)[name];
    if (original === undefined) continue;
    proto[name] = function (this: Builder, ...args: unknown[]) {
      const derived = original.apply(this, args) as Builder;
      return derived === this ? derived : adopt(derived, this[kRouting]);
    };
  }
  // TypeORM passes the DataSource here, not the builder, so the constructor cannot copy the routing.
  proto.createQueryBuilder = function (this: Builder, queryRunner?: QueryRunner) {
    const created = new (this.constructor as BuilderClass)(this.dataSource, queryRunner ?? this.queryRunner);
    if (this[kRouting] !== undefined) created[kRouting] = this[kRouting];
    return created;
  };
  Object.defineProperty(Routed, 'name', { value: Base.name });
  return Routed;
}

/** Returns a routed copy of `builder` (a plain TypeORM builder), or `builder` itself when routing is unknown. */
function adopt(builder: Builder, routing: Routing | undefined): Builder {
  if (routing === undefined) return builder;
  const Routed = ROUTED.get(builder.constructor as BuilderClass);
  if (Routed === undefined) return builder;
  const routed = new Routed(builder);
  copyBuilderState(builder, routed);
  routed[kRouting] = routing;
  return routed;
}

/**
 * Makes `builder` (made on the metadata DataSource) routed: each execution goes to `routing`.
 * @internal
 */
export function routeBuilder<B>(builder: B, routing: Routing): B {
  return adopt(builder as unknown as Builder, routing) as unknown as B;
}

/** The state a builder keeps outside its expression map (find options, parameter counter). */
function copyBuilderState(from: Builder, to: Builder): void {
  for (const key of Object.keys(from)) {
    if (key === 'expressionMap' || key === 'dataSource' || key === 'queryRunner') continue;
    (to as unknown as Record<string, unknown>)[key] = (from as unknown as Record<string, unknown>)[key];
  }
}

/**
 * Runs `original` on a private copy of `shared`, bound to the route of the current context; in a
 * span named after the statement kind (`getMany`, or `select`/`insert`/... for `execute`) and the
 * main table when telemetry is on.
 */
function executeRouted(shared: Builder, Base: BuilderClass, original: AnyFn, name: string, args: unknown[]): Promise<unknown> {
  const routing = shared[kRouting];
  const telemetry = routing?.router.telemetry;
  if (telemetry === undefined || !telemetry.on) return executeCopy(shared, Base, original, name, args);
  const map = shared.expressionMap;
  const operation = name === 'execute' ? (map.queryType ?? name) : name;
  const main = map.mainAlias;
  const collection = main?.hasMetadata ? main.metadata.tableName : undefined;
  return telemetry.operation(operation, collection, (onRoute) => executeCopy(shared, Base, original, name, args, onRoute));
}

async function executeCopy(
  shared: Builder,
  Base: BuilderClass,
  original: AnyFn,
  name: string,
  args: unknown[],
  onRoute?: OnRoute,
): Promise<unknown> {
  const routing = shared[kRouting];
  if (routing === undefined) return original.apply(shared, args);
  const ctx = currentContext();
  const mode = ctx?.readDeleted ?? 'no';
  // The copy is taken now, before any await: the execution uses the builder as it was when called,
  // whatever is set on it afterwards (a plain TypeORM builder builds its SQL synchronously too).
  const copy = new Base(shared);
  copyBuilderState(shared, copy);
  const ownRunnerGiven = shared.queryRunner !== undefined;
  const route = await routing.router.route(routing.db, ctx);
  onRoute?.(route.telemetry);
  let keepLease = false;
  try {
    if (route.readOnly === true) refuseWrite(route.label, Base, name);
    const manager = route.manager;
    bindTo(copy, manager.dataSource);
    // A query runner given by the caller (createQueryBuilder(alias, runner), setQueryRunner) wins.
    if (!ownRunnerGiven) copy.queryRunner = manager.queryRunner;
    if (mode !== 'no' && READS.has(name)) {
      const main = copy.expressionMap.mainAlias;
      const path = main?.hasMetadata ? deleteDatePath(main.metadata) : undefined;
      if (path !== undefined) applyToQueryBuilder(copy as unknown as SelectQueryBuilder<ObjectLiteral>, mode, path);
    }
    if (name !== 'stream') return await original.apply(copy, args);
    // A stream holds its lease (and its own connection) until it ends, fails or is destroyed, so
    // neither eviction nor the idle sweep closes its DataSource under it.
    // In the mode of TypeORM's other reads: a replica's when the context reads from replicas.
    const ownRunner =
      copy.queryRunner === undefined ? manager.dataSource.createQueryRunner(manager.dataSource.defaultReplicationModeForReads()) : undefined;
    if (ownRunner !== undefined) copy.queryRunner = ownRunner;
    let stream: Readable;
    try {
      stream = (await original.apply(copy, args)) as Readable;
    } catch (error) {
      await ownRunner?.release();
      throw error;
    }
    keepLease = true;
    typeStreamErrors(stream, route.label, copy.queryRunner!);
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      void ownRunner?.release();
      route.release();
    };
    stream.once('end', finish);
    stream.once('error', finish);
    stream.once('close', finish);
    return stream;
  } catch (error) {
    throw translateConnectionError(error, route.label, route.manager.queryRunner);
  } finally {
    if (!keepLease) route.release();
  }
}

/** @throws CellReadOnlyError naming `label` when `name` of a `Base` builder writes. */
function refuseWrite(label: string, Base: BuilderClass, name: string): void {
  const kind = WRITE_BUILDERS.get(Base);
  if (kind !== undefined) throw new CellReadOnlyError(label, kind);
  if (Base === (RelationQueryBuilder as unknown as BuilderClass) && RELATION_WRITES.has(name)) {
    throw new CellReadOnlyError(label, `a relation query builder's ${name}()`);
  }
}

/** What typeStreamErrors replaces of a Readable: its protected `_destroy`. */
type DestroyHook = (error: Error | null, callback: (error?: Error | null) => void) => void;

/**
 * Makes the errors of a routed `stream` typed and masked like every other call's: a lost
 * connection reaches its consumer as CellUnreachableError (QueryTimeoutError when a deadline closed
 * it), never as the raw pg error. A stream fails by destroying itself, and pg-query-stream then
 * closes its cursor and waits for the server's answer: on a lost connection none ever comes, so
 * the consumer would wait for ever. Such a stream fails at once instead, and its connection is
 * marked lost so that its pool destroys it.
 */
function typeStreamErrors(stream: Readable, label: string, queryRunner: QueryRunner): void {
  const readable = stream as unknown as { _destroy: DestroyHook };
  const closeCursor = readable._destroy.bind(stream);
  // translateConnectionError masks what it returns, typed or not.
  const typed = (error: Error | null | undefined): Error | null | undefined =>
    error == null ? error : (translateConnectionError(error, label, queryRunner) as Error);
  readable._destroy = (error, callback) => {
    if (error !== null && (isConnectionError(error) || lossOf(queryRunner) !== undefined)) {
      // Before the release (on 'close'): the connection must leave its pool, not serve a next call.
      markLost(queryRunner, error);
      callback(typed(error));
      return;
    }
    closeCursor(error, (closeError) => callback(typed(closeError ?? error)));
  };
}

/** Points a builder copy (and its expression map and joins) at `dataSource`. */
function bindTo(builder: Builder, dataSource: DataSource): void {
  (builder as { dataSource: DataSource }).dataSource = dataSource;
  builder.expressionMap.dataSource = dataSource;
  // A builder is made on the PostgreSQL metadata; a MySQL or MariaDB cell's metadata (column types,
  // defaults) is its engine's own (metadata-template.ts). The copy's aliases are its own objects.
  for (const alias of builder.expressionMap.aliases ?? []) {
    if (!alias.hasMetadata) continue;
    const own = dataSource.entityMetadatasMap.get(alias.metadata.target);
    if (own !== undefined && own !== alias.metadata) alias.metadata = own;
  }
}
