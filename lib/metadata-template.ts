import {
  BaseEntity,
  DataSource,
  InstanceChecker,
  type EntityManager,
  type EntityMetadata,
} from 'typeorm';
import { ConnectionMetadataBuilder } from 'typeorm/connection/ConnectionMetadataBuilder';
import { ObjectUtils } from 'typeorm/util/ObjectUtils';
import type { PostgresOptions } from './data-source-options';

/**
 * Entity metadata built once per `Cells` and copied into every cell DataSource it opens.
 *
 * TypeORM builds every entity's metadata again in each DataSource's `initialize()`: for an
 * application of 100 entities that costs more than the whole SCRAM handshake of the open. A cell
 * DataSource differs from the others only by its connection fields, which no metadata depends on,
 * so the metadata is built once on a DataSource that never connects (the template) and each cell
 * gets a copy of the graph. In that graph only `EntityMetadata.dataSource` refers to a DataSource
 * (read when an entity is created: its lazy relations load through that DataSource's
 * RelationLoader), but every column, relation, index, foreign key... refers to its EntityMetadata,
 * so every object from which the template DataSource can be reached is copied, with the cell
 * DataSource in its place; what cannot reach it (the decorator arguments, targets, names, column
 * options) is shared, as TypeORM shares it between DataSources already. The copy plan is worked out
 * once, on the template's graph; a graph it cannot copy faithfully (a Map or Set, an accessor or a
 * hidden property on a copied object: a later TypeORM) makes every cell build its own metadata,
 * as TypeORM does. Subscribers and migrations are still instantiated per DataSource.
 *
 * What stays shared between cells, as between any DataSources of one process: lazy-relation
 * accessors TypeORM defines on an entity class's prototype (for instances made with `new`; an
 * entity loaded or created through a cell has its own, bound to that cell) belong to the template,
 * which has no connection, where TypeORM's own build would bind them to the cell opened last; and
 * `BaseEntity` statics point at the cell opened last, as TypeORM does. @internal
 */
export class MetadataTemplate {
  /** The DataSource the metadata is built on; never connected. */
  private readonly template: DataSource;
  private plan: CopyPlan | undefined;

  constructor(options: Omit<PostgresOptions, 'host'>) {
    this.template = new DataSource({ ...options, type: 'postgres' });
  }

  /** Builds the template's metadata and the plan to copy it. @throws what TypeORM's build throws (a bad entity). */
  async build(): Promise<void> {
    await (this.template as unknown as { buildMetadatas(): Promise<void> }).buildMetadatas();
    this.plan = planCopy(this.template);
  }

  /** A manager of the template DataSource: entity metadata for create(), merge() and query builders. */
  get manager(): EntityManager {
    return this.template.manager;
  }

  /**
   * A DataSource of `options` that takes a copy of the template's metadata when it initializes
   * instead of building its own; a plain DataSource when the options shape metadata differently
   * from the template's or when the template cannot be copied.
   */
  dataSource(options: PostgresOptions): DataSource {
    const plan = this.plan;
    if (
      plan === undefined ||
      !sameMetadataOptions(this.template.options as PostgresOptions, options)
    ) {
      return new DataSource(options);
    }
    return new TemplatedDataSource(options, plan);
  }
}

/** The options TypeORM reads while building metadata; a cell's other options are its connection. */
function sameMetadataOptions(a: PostgresOptions, b: PostgresOptions): boolean {
  return (
    a.entities === b.entities &&
    a.namingStrategy === b.namingStrategy &&
    a.entityPrefix === b.entityPrefix &&
    a.entitySkipConstructor === b.entitySkipConstructor &&
    a.schema === b.schema &&
    a.typename === b.typename &&
    a.type === b.type
  );
}

/** A DataSource whose `buildMetadatas` copies the template's metadata, as TypeORM would build it. */
class TemplatedDataSource extends DataSource {
  constructor(
    options: PostgresOptions,
    private readonly plan: CopyPlan,
  ) {
    super(options);
  }

  // Mirrors DataSource.buildMetadatas (TypeORM 1.1), with the entity build and its validation
  // (done on the template) replaced by the copy.
  protected override async buildMetadatas(): Promise<void> {
    const builder = new ConnectionMetadataBuilder(this);
    const subscribers = await builder.buildSubscribers(
      ObjectUtils.mixedListToArray(this.options.subscribers ?? []),
    );
    const entityMetadatas = copyMetadata(this.plan, this);
    const migrations = await builder.buildMigrations(
      ObjectUtils.mixedListToArray(this.options.migrations ?? []),
    );
    Object.assign(this, {
      subscribers,
      entityMetadatas,
      entityMetadatasMap: new Map(entityMetadatas.map((metadata) => [metadata.target, metadata])),
      migrations,
    });
    for (const metadata of entityMetadatas) {
      if (InstanceChecker.isBaseEntityConstructor(metadata.target))
        (metadata.target as typeof BaseEntity).useDataSource(this);
    }
  }
}

/**
 * How to copy the template's metadata graph: `nodes` are the objects to copy (those from which the
 * template DataSource can be reached), each copied whole (natively: `slice`, `Object.assign`) and
 * then given the copies (or the cell DataSource) in place of the properties that refer to nodes.
 */
interface CopyPlan {
  nodes: CopyNode[];
  /** Indexes in `nodes` of the template's entityMetadatas, in order. */
  roots: number[];
}

interface CopyNode {
  /** The template's object. */
  source: object;
  /** Arrays are copied with `slice`, other objects onto an object of this prototype. */
  array: boolean;
  proto: object | null;
  /** The properties to replace, and for each the node index to put there (SELF: the DataSource). */
  keys: (string | symbol)[];
  refs: number[];
}

const SELF = -1;

/** The copy plan of `template`'s metadata, or undefined when the graph cannot be copied faithfully. */
function planCopy(template: DataSource): CopyPlan | undefined {
  const index = new Map<object, number>();
  const objects: object[] = [];
  const children: number[][] = [];
  const visit = (value: object): number => {
    let at = index.get(value);
    if (at === undefined) {
      at = objects.length;
      index.set(value, at);
      objects.push(value);
    }
    return at;
  };
  for (const metadata of template.entityMetadatas) visit(metadata);
  for (let i = 0; i < objects.length; i++) {
    const object = objects[i]!;
    if (
      object instanceof Map ||
      object instanceof Set ||
      object instanceof WeakMap ||
      object instanceof WeakSet
    ) {
      return undefined;
    }
    const edges: number[] = [];
    for (const value of Object.values(object) as unknown[]) {
      if (value === template) edges.push(SELF);
      else if (value !== null && typeof value === 'object') edges.push(visit(value));
    }
    children.push(edges);
  }
  // An object is copied when the template DataSource can be reached from it.
  const copied = new Array<boolean>(objects.length).fill(false);
  const parents = objects.map((): number[] => []);
  const queue: number[] = [];
  children.forEach((edges, i) => {
    for (const child of edges) {
      if (child !== SELF) parents[child]!.push(i);
      else if (!copied[i]) {
        copied[i] = true;
        queue.push(i);
      }
    }
  });
  while (queue.length > 0) {
    for (const parent of parents[queue.pop()!]!) {
      if (!copied[parent]) {
        copied[parent] = true;
        queue.push(parent);
      }
    }
  }
  const position = new Map<object, number>();
  objects.forEach((object, i) => {
    if (copied[i]) position.set(object, position.size);
  });
  const nodes: CopyNode[] = [];
  for (const source of position.keys()) {
    const node: CopyNode = {
      source,
      array: Array.isArray(source),
      proto: Object.getPrototypeOf(source) as object | null,
      keys: [],
      refs: [],
    };
    for (const key of Reflect.ownKeys(source)) {
      if (node.array && key === 'length') continue;
      const descriptor = Object.getOwnPropertyDescriptor(source, key)!;
      // An accessor or a hidden property would not be copied as it is: build per DataSource instead.
      if (
        !('value' in descriptor) ||
        !descriptor.enumerable ||
        !descriptor.writable ||
        !descriptor.configurable
      )
        return undefined;
      const value = descriptor.value as unknown;
      const ref =
        value === template
          ? SELF
          : typeof value === 'object' && value !== null
            ? position.get(value)
            : undefined;
      if (ref !== undefined) {
        node.keys.push(key);
        node.refs.push(ref);
      }
    }
    nodes.push(node);
  }
  return { nodes, roots: template.entityMetadatas.map((metadata) => position.get(metadata)!) };
}

/** A copy of the planned graph in which `dataSource` replaces the template; its entity metadatas. */
function copyMetadata(plan: CopyPlan, dataSource: DataSource): EntityMetadata[] {
  const { nodes } = plan;
  const copies = new Array<Record<string | symbol, unknown>>(nodes.length);
  for (let i = 0; i < nodes.length; i++) {
    const { source, array, proto } = nodes[i]!;
    copies[i] = (
      array ? (source as unknown[]).slice() : Object.assign(Object.create(proto) as object, source)
    ) as Record<string | symbol, unknown>;
  }
  for (let i = 0; i < nodes.length; i++) {
    const { keys, refs } = nodes[i]!;
    const copy = copies[i]!;
    for (let k = 0; k < keys.length; k++) {
      const ref = refs[k]!;
      copy[keys[k]!] = ref === SELF ? dataSource : copies[ref];
    }
  }
  return plan.roots.map((root) => copies[root] as unknown as EntityMetadata);
}
