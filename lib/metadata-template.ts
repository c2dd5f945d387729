import { BaseEntity, DataSource, InstanceChecker, type EntityManager, type MigrationInterface } from 'typeorm';
import { ConnectionMetadataBuilder } from 'typeorm/connection/ConnectionMetadataBuilder';
import type { EntityMetadata } from 'typeorm/metadata/EntityMetadata';
import { ObjectUtils } from 'typeorm/util/ObjectUtils';
import type { Engine } from './connection-url';
import { sharedOptionsFor, type DatabaseOptions, type PostgresOptions } from './data-source-options';
import { messageOf } from './connection-errors';
import { IncompatibleEntityError } from './errors';
import { loadMysql2 } from './mysql-pool';
import { RoutedRelationLoader, type MainRoute } from './lazy-relations';

/**
 * Entity metadata built once per `Cells` and shared by every cell DataSource it opens.
 *
 * TypeORM builds every entity's metadata again in each DataSource's `initialize()`: for an
 * application of 100 entities that costs more than the whole SCRAM handshake of the open, and a
 * copy of the graph per cell still costs its allocation and the garbage collection of it. A cell
 * DataSource differs from the others only by its connection fields, which no metadata depends on,
 * so the metadata is built once on a DataSource that never connects (the template) and every cell
 * DataSource uses that same graph. In the graph only `EntityMetadata.dataSource` refers to a
 * DataSource, and once built TypeORM reads it only when it creates an entity: for the `typename`
 * option (part of the metadata options, so equal) and for the RelationLoader its lazy relations
 * load through, which on the template is a RoutedRelationLoader (lazy-relations.ts): a load runs
 * on the cell the entity was loaded or created in, or else on the route of the current context.
 * Subscribers and migrations are still instantiated per DataSource.
 *
 * What every cell shares, then: `repository.metadata.dataSource` of a cell is the template, which
 * has no connection (use the repository's `manager`); the lazy-relation accessors TypeORM defines
 * on an entity class's prototype (for instances made with `new`) route through the context; and
 * `BaseEntity` statics point at the cell opened last, as TypeORM does. @internal
 */
export class MetadataTemplate {
  /** The PostgreSQL template: built by `build()`, its manager serves metadata-only calls. */
  private readonly template: DataSource;
  /**
   * The built template of each engine: entity metadata depends on the driver (column types,
   * defaults), so MySQL and MariaDB cells share a template of their own, built at their first open.
   */
  private readonly built = new Map<Engine, DataSource>();
  private readonly building = new Map<Engine, Promise<void>>();
  /** What the PostgresDriver's afterConnect finds in the metadata: which extensions it uses. */
  private extensions: Promise<unknown> | undefined;

  /**
   * @param route - the route of a routed `'main'` call in a context (`Cells.route`), which lazy
   * relations of entities made without a cell load through.
   */
  constructor(
    private readonly options: Omit<PostgresOptions, 'host'>,
    private readonly route: MainRoute,
  ) {
    this.template = this.templateOf('postgres');
  }

  /** @param label - how MissingDriverError names the database that needs the driver. */
  private templateOf(type: Engine, label = 'a MySQL or MariaDB cell'): DataSource {
    const template = new DataSource({
      ...sharedOptionsFor(type, this.options),
      type,
      // TypeORM's MySQL driver loads mysql2 in its constructor: the one typeorm-cells loaded, or MissingDriverError.
      // Its validation wants a database named (no metadata depends on it: each cell names its own).
      ...(type === 'postgres' ? {} : { driver: loadMysql2(label), database: 'typeorm_cells_template' }),
    } as DatabaseOptions);
    // Before the build, which defines the prototypes' lazy accessors through it.
    Object.assign(template, { relationLoader: new RoutedRelationLoader(template, this.route) });
    return template;
  }

  /** Builds the PostgreSQL template's metadata. @throws what TypeORM's build throws (a bad entity). */
  async build(): Promise<void> {
    await (this.template as unknown as { buildMetadatas(): Promise<void> }).buildMetadatas();
    this.extensions = (
      this.template.driver as unknown as ExtensionsCheck
    ).checkMetadataForExtensions();
    this.built.set('postgres', this.template);
  }

  /**
   * Builds the template of `type` unless built (once, for concurrent callers); a cell of that
   * engine then shares its metadata.
   * @param label - the database the template is built for, as MissingDriverError names it.
   * @throws MissingDriverError when `mysql2` is missing; IncompatibleEntityError when TypeORM
   * refuses the entities for the engine (the next open tries again).
   */
  async prepare(type: Engine, label?: string): Promise<void> {
    if (this.built.has(type) || type === 'postgres') return;
    let flight = this.building.get(type);
    if (flight === undefined) {
      const template = this.templateOf(type, label);
      flight = (template as unknown as { buildMetadatas(): Promise<void> }).buildMetadatas().then(
        () => {
          this.built.set(type, template);
        },
        (error: unknown) => {
          throw new IncompatibleEntityError(label ?? `a ${type} cell`, type, messageOf(error), { cause: error });
        },
      );
      this.building.set(type, flight);
      flight.catch(() => this.building.delete(type));
    }
    await flight;
  }

  /** The cell migrations (the `migrations` option), instantiated by `build()`. */
  get migrations(): readonly MigrationInterface[] {
    return this.template.migrations;
  }

  /** A manager of the template DataSource: entity metadata for create(), merge() and query builders. */
  get manager(): EntityManager {
    return this.template.manager;
  }

  /**
   * A DataSource of `options` that uses its engine's template metadata instead of building its
   * own; a plain DataSource when the options shape metadata differently from the template's, or
   * before the template of its engine is built.
   */
  dataSource(options: DatabaseOptions): DataSource {
    const template = this.built.get(options.type as Engine);
    if (template === undefined || !sameMetadataOptions(template.options as PostgresOptions, options as PostgresOptions)) {
      return new DataSource(options);
    }
    const dataSource = new TemplatedDataSource(options, template);
    if (options.type === 'postgres') {
      // The same metadata uses the same extensions: afterConnect need not look through it again.
      const extensions = this.extensions!;
      (dataSource.driver as unknown as ExtensionsCheck).checkMetadataForExtensions = () => extensions;
    }
    return dataSource;
  }
}

/** PostgresDriver's scan of the metadata for the extensions its columns need (TypeORM 1.1). */
interface ExtensionsCheck {
  checkMetadataForExtensions(): Promise<unknown>;
}

/** The options TypeORM reads while building metadata; a cell's other options are its connection. */
function sameMetadataOptions(a: PostgresOptions, b: PostgresOptions): boolean {
  return (
    a.entities === b.entities &&
    a.namingStrategy === b.namingStrategy &&
    a.entityPrefix === b.entityPrefix &&
    a.entitySkipConstructor === b.entitySkipConstructor &&
    (a.type !== 'postgres' || a.schema === b.schema) &&
    a.typename === b.typename &&
    a.type === b.type
  );
}

/** A DataSource whose `buildMetadatas` takes the template's metadata, as TypeORM would build it. */
class TemplatedDataSource extends DataSource {
  constructor(
    options: DatabaseOptions,
    private readonly template: DataSource,
  ) {
    super(options);
  }

  // Mirrors DataSource.buildMetadatas (TypeORM 1.1), with the entity build and its validation
  // (done on the template) replaced by the template's metadata.
  protected override async buildMetadatas(): Promise<void> {
    const builder = new ConnectionMetadataBuilder(this);
    const subscribers = await builder.buildSubscribers(
      ObjectUtils.mixedListToArray(this.options.subscribers ?? []),
    );
    const { entityMetadatas, entityMetadatasMap } = this.template as unknown as {
      entityMetadatas: EntityMetadata[];
      entityMetadatasMap: Map<unknown, EntityMetadata>;
    };
    const migrations = await builder.buildMigrations(
      ObjectUtils.mixedListToArray(this.options.migrations ?? []),
    );
    Object.assign(this, { subscribers, entityMetadatas, entityMetadatasMap, migrations });
    for (const metadata of entityMetadatas) {
      if (InstanceChecker.isBaseEntityConstructor(metadata.target))
        (metadata.target as typeof BaseEntity).useDataSource(this);
    }
  }
}
