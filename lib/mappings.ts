import { randomUUID } from 'node:crypto';
import { inspect } from 'node:util';
import type { DataSource, EntityManager } from 'typeorm';
import { CELL0_UUID, CellMapping, type CellState } from '../entities/CellMapping';
import { HostMapping } from '../entities/HostMapping';
import { InstanceMapping } from '../entities/InstanceMapping';
import { UUID_PATTERN, booleanArg, cellStateArg, nameArg, objectArg, optionalNameArg, uuidArg } from './arguments';
import { parseConnectionUrl } from './connection-url';
import { maskErrorSecrets, queryErrorCode, translateConnectionError } from './connection-errors';
import { cellUuidOf, type CellRef } from './context';
import {
  BadConnectionUrlError,
  CellInUseError,
  CellsNotReadyError,
  DuplicateMappingError,
  InvalidArgumentError,
  UnknownCellError,
  UnknownHostError,
  UnknownInstanceError,
  MappingWriteConflictError,
} from './errors';
import { ALL_CELLS_KEY, type CachedValue, type LookupCounts, type MappingKind, type MappingCache, type MappingCacheOptions, type MappingCacheStats } from './mapping-cache';
import type { MappingChange } from './mapping-listener';
import { MappingSync } from './mapping-sync';
import { API_LABEL } from './route';

/**
 * `cells.mappings`: the cell, instance and host mappings of the API database, read (cached) and
 * written (validated, notified). Longer than ~300 lines because it is one public class whose every
 * method carries its TSDoc; its parts of other concepts live beside it: the cache in
 * mapping-cache.ts, its coherence across processes in mapping-sync.ts, the LISTEN client in
 * mapping-listener.ts (PostgreSQL), the change-log poller in mapping-change-log.ts (MySQL, MariaDB).
 */

/** Fields of a new cell; `uuid` defaults to a random one. */
export interface CellMappingInit {
  uuid?: string;
  name: string;
  databaseConnection: string;
  /**
   * Reader connections: postgres:// URLs of read replicas of `databaseConnection`, used by routed
   * reads of contexts with `readFrom: 'replica'`. Default: none (`null`; an empty list is `null`).
   */
  readConnections?: readonly string[] | null;
  transportUrl?: string | null;
  /** What the cell serves (see CellState). Default: `'active'`. */
  state?: CellState;
  /** `true` is `state: 'disabled'` (the flag of before cell states). Default: false. */
  disabled?: boolean;
}

/** Fields of a cell that `updateCell` may change. */
export type CellMappingPatch = Partial<
  Pick<CellMapping, 'name' | 'databaseConnection' | 'transportUrl' | 'state'> & {
    /** Replaces the reader connections; `null` or `[]` removes them. */
    readConnections: readonly string[] | null;
    /**
     * The flag of before cell states: `true` sets `state` to `'disabled'`, `false` sets a disabled
     * cell `'active'` and leaves another state as it is.
     */
    disabled: boolean;
  }
>;

/** Which cells `allCells` returns. */
export interface AllCellsOptions {
  /** Include cell0. Default: true. */
  includeCell0?: boolean;
  /** Include cells whose state is `'disabled'`. Default: true. */
  includeDisabled?: boolean;
}

/** Fields of a new instance mapping. */
export interface InstanceMappingInit {
  instanceUuid: string;
  /** The cell holding the instance; `null` while it is not placed yet. */
  cell: CellRef | null;
  projectId: string;
  userId?: string | null;
}

/** Options of `new CellMappings()`; `Cells` sets them from its own options. */
export interface CellMappingsOptions {
  /** Bounds of the lookup cache; see MappingCacheOptions for their defaults. */
  cache?: MappingCacheOptions;
  /**
   * Called (in every process, after the change committed) when a cell was deleted or its database
   * connection changed, so its open DataSource can be closed. Default: none.
   */
  onCellReconnect?: (uuid: string) => void;
  /** Called when the listener reconnected after an outage, in which changes may have been missed. */
  onResync?: () => void;
  /**
   * Called (in every process, after the report committed) when migrations were applied to a cell
   * (`reportMigrated`), so the schema gate checks it again. Default: none.
   */
  onCellMigrated?: (uuid: string) => Promise<void>;
  /**
   * Called with every CellMapping read from the API database (a cache miss or a refresh after the
   * TTL), so a cell re-pointed with plain SQL is noticed by any lookup. Default: none.
   */
  onCellLoaded?: (cell: CellMapping) => void;
  /**
   * Called as each write starts; returns what ends it. `Cells` holds its API database open for the
   * write (so `destroy()` lets a running write finish, like any running call) and refuses a write
   * started once `destroy()` began with CellsNotReadyError. Default: none.
   */
  onWrite?: () => () => void;
}

/** A unique index refused a row: PostgreSQL's SQLSTATE, MySQL's and MariaDB's error code. */
const UNIQUE_VIOLATIONS: ReadonlySet<string> = new Set(['23505', 'ER_DUP_ENTRY']);

/** Longest transport URL accepted, as for database connection URLs. */
const MAX_TRANSPORT_URL = 8192;
/** Most reader connections a cell may list. */
const MAX_READ_CONNECTIONS = 16;

/**
 * `readConnections` checked like `databaseConnection`: `undefined` stays (not given), `null` and
 * `[]` mean none, else an array of 1 to 16 valid URLs. @throws InvalidArgumentError for anything
 * but an array of strings; BadConnectionUrlError naming `label` and the reader for a bad URL.
 * @internal
 */
export function readConnectionsArg(value: unknown, label: string): string[] | null | undefined {
  if (value === undefined) return undefined;
  if (value === null) return null;
  if (!Array.isArray(value) || value.length > MAX_READ_CONNECTIONS) {
    throw new InvalidArgumentError(`readConnections must be an array of at most ${MAX_READ_CONNECTIONS} postgres:// URLs, or null.`);
  }
  value.forEach((url: unknown, index) => {
    if (typeof url !== 'string') {
      throw new InvalidArgumentError(`${label} reader ${index + 1} must be a postgres:// URL string, got ${url === null ? 'null' : typeof url}.`);
    }
    const reader = `${label} reader ${index + 1}`;
    if (parseConnectionUrl(url, reader).type !== 'postgres') {
      throw new BadConnectionUrlError(reader, 'read replicas are supported for PostgreSQL cells only: a postgres:// URL');
    }
  });
  return value.length === 0 ? null : [...(value as string[])];
}

/**
 * Refuses readers for a cell whose primary is not PostgreSQL (read replicas are PostgreSQL's).
 * @throws BadConnectionUrlError naming `label`.
 */
function readersFit(primary: string, readers: readonly string[] | null, label: string): void {
  if (readers !== null && readers.length > 0 && parseConnectionUrl(primary, label).type !== 'postgres') {
    throw new BadConnectionUrlError(`${label} reader 1`, 'read replicas are supported for PostgreSQL cells only');
  }
}

/**
 * Cell, instance and host lookups and writes in the API database, reached as `cells.mappings`.
 * Lookups are cached while `listen()` keeps a LISTEN connection open (on MySQL and MariaDB: while
 * polls of the change log answer): every write made through this
 * class notifies all processes in its own transaction, and each drops the affected keys at once.
 * Returned CellMappings are copies: changing one changes nothing until passed to `updateCell`.
 */
export class CellMappings {
  private readonly sync: MappingSync;
  private readonly cache: MappingCache;
  private closed = false;

  /**
   * @param api the initialized API DataSource.
   * @param options cache bounds and change callbacks; see CellMappingsOptions.
   */
  constructor(
    private readonly api: DataSource,
    private readonly options: CellMappingsOptions = {},
  ) {
    this.sync = new MappingSync(api, options);
    this.cache = this.sync.cache;
    // Background refreshes of instance and host lookups run as one query per batch of keys.
    for (const [prefix, entity, property] of [
      ['i:', InstanceMapping, 'instanceUuid'],
      ['h:', HostMapping, 'host'],
    ] as const) {
      this.cache.batchRefreshes(prefix, (keys) => this.placedCellUuids(entity, property, keys));
    }
  }

  private get manager(): EntityManager {
    // After cells.destroy(): a typed error, not TypeORM's "Driver not Connected".
    if (this.closed) throw new CellsNotReadyError('destroyed');
    return this.api.manager;
  }

  /**
   * Opens the LISTEN connection (on MySQL and MariaDB: starts polling the change log) that keeps
   * the cache coherent, and starts caching once it listens.
   * Never throws: when the connection fails, lookups go to the database and it retries with backoff.
   */
  async listen(): Promise<void> {
    await this.sync.listen();
  }

  /** Closes the LISTEN connection (or stops polling) and stops caching. Safe to call twice. */
  async close(): Promise<void> {
    this.closed = true;
    await this.sync.stop();
  }

  /** A summary without the API connection: `util.inspect` never shows its URL or password. */
  [inspect.custom](): string {
    return `CellMappings ${inspect(this.toJSON())}`;
  }

  /** The cache counters; no connection options. */
  toJSON(): Record<string, unknown> {
    return { cache: this.cacheStats() };
  }

  /** Cache counters: hits, misses, queries run, size, invalidations and whether the listener is up. */
  cacheStats(): MappingCacheStats {
    return this.sync.stats();
  }

  /** Cache hits, misses and loads by mapping kind, for the telemetry. @internal */
  cacheCountsByKind(): Readonly<Record<MappingKind, Readonly<LookupCounts>>> {
    return this.cache.countsByKind();
  }

  /**
   * The CellMapping with this uuid (cached).
   * @throws InvalidArgumentError for a malformed uuid; UnknownCellError when none exists.
   */
  async cellByUuid(uuid: string): Promise<CellMapping> {
    return copyCell(await this.sharedCellByUuid(uuidArg(uuid, 'cell uuid')));
  }

  /**
   * The CellMapping with this name (cached).
   * @throws InvalidArgumentError for an empty name; UnknownCellError when none exists.
   */
  async cellByName(name: string): Promise<CellMapping> {
    const key = nameArg(name, 'cell name');
    const cell = await this.lookup(`n:${key}`, async () => {
      const found = await this.manager.findOneBy(CellMapping, { name: key });
      if (found === null) throw new UnknownCellError(key);
      this.loaded(found);
      return found;
    });
    return copyCell(cell);
  }

  /**
   * The cell named by a uuid or a name (a uuid-shaped string is taken as a uuid first; cached).
   * @throws UnknownCellError when neither matches.
   */
  async cell(uuidOrName: string): Promise<CellMapping> {
    if (typeof uuidOrName === 'string' && UUID_PATTERN.test(uuidOrName)) {
      try {
        return await this.cellByUuid(uuidOrName);
      } catch (error) {
        if (!(error instanceof UnknownCellError)) throw error;
      }
    }
    return this.cellByName(uuidOrName);
  }

  /**
   * Every cell, ordered by name, each with its `state`; cell0 and disabled cells included unless
   * excluded (cached). Placement of new records should take cells whose state is `'active'`.
   */
  async allCells(options: AllCellsOptions = {}): Promise<CellMapping[]> {
    const { includeCell0, includeDisabled } = objectArg(options, 'allCells options');
    booleanArg(includeCell0, 'includeCell0');
    booleanArg(includeDisabled, 'includeDisabled');
    const cells = await this.lookup(ALL_CELLS_KEY, async () => {
      const epoch = this.cache.currentEpoch;
      const found = await this.manager.find(CellMapping, { order: { name: 'ASC' } });
      for (const cell of found) {
        this.loaded(cell);
        this.cache.prime(`u:${cell.uuid}`, cell, epoch);
        this.cache.prime(`n:${cell.name}`, cell, epoch);
      }
      return found as readonly CellMapping[];
    });
    const result: CellMapping[] = [];
    for (const c of cells) {
      if (
        (includeCell0 !== false || c.uuid !== CELL0_UUID) &&
        (includeDisabled !== false || !c.disabled)
      ) {
        result.push(copyCell(c));
      }
    }
    return result;
  }

  /**
   * The cell that holds an instance (cached; an unmapped instance is looked up again every time).
   * @throws InvalidArgumentError for a malformed uuid; UnknownInstanceError when the instance is
   * unmapped or not yet in a cell.
   */
  async instanceCell(instanceUuid: string): Promise<CellMapping> {
    const key = uuidArg(instanceUuid, 'instance uuid');
    // Hit path of every routed request: two synchronous cache reads, no promise per lookup.
    const cachedUuid = this.cache.peek(`i:${key}`);
    if (typeof cachedUuid === 'string') {
      const cached = this.cache.peek(`u:${cachedUuid}`);
      if (cached instanceof CellMapping) return copyCell(cached);
    }
    const cellUuid = await this.lookup(`i:${key}`, () =>
      this.placedCellUuid(InstanceMapping, 'instanceUuid', key, (placed) =>
        placed ? new UnknownInstanceError(key, 'it is not placed in a cell yet') : new UnknownInstanceError(key),
      ),
    );
    return copyCell(await this.sharedCellByUuid(cellUuid));
  }

  /** The InstanceMapping of an instance, or null (not cached). */
  async instanceMapping(instanceUuid: string): Promise<InstanceMapping | null> {
    const key = uuidArg(instanceUuid, 'instance uuid');
    return this.manager
      .findOne(InstanceMapping, { where: { instanceUuid: key }, relations: { cell: true } })
      .catch(apiFailure);
  }

  /**
   * The cell a host belongs to (cached; an unmapped host is looked up again every time).
   * @throws InvalidArgumentError for an empty host; UnknownHostError when the host is unmapped.
   */
  async hostCell(host: string): Promise<CellMapping> {
    const key = nameArg(host, 'host');
    const cellUuid = await this.lookup(`h:${key}`, () =>
      this.placedCellUuid(HostMapping, 'host', key, () => new UnknownHostError(key)),
    );
    return copyCell(await this.sharedCellByUuid(cellUuid));
  }

  /**
   * Creates a cell mapping.
   * @throws InvalidArgumentError for a bad name or uuid; BadConnectionUrlError for a bad URL;
   * DuplicateMappingError when the uuid or name is taken.
   */
  async createCell(init: CellMappingInit): Promise<CellMapping> {
    if (init === null || typeof init !== 'object')
      throw new InvalidArgumentError('createCell needs { name, databaseConnection }.');
    const uuid = init.uuid === undefined ? randomUUID() : uuidArg(init.uuid, 'cell uuid');
    const name = nameArg(init.name, 'cell name');
    parseConnectionUrl(init.databaseConnection, `cell '${name}'`);
    const readConnections = readConnectionsArg(init.readConnections, `cell '${name}'`) ?? null;
    readersFit(init.databaseConnection, readConnections, `cell '${name}'`);
    const transportUrl = optionalNameArg(init.transportUrl, 'transport URL', MAX_TRANSPORT_URL) ?? null;
    const state = stateOf(cellStateArg(init.state), booleanArg(init.disabled, 'disabled')) ?? 'active';
    return this.unique(
      () =>
        this.write(async (tx) => {
          const cell = tx.create(CellMapping, {
            uuid,
            name,
            databaseConnection: init.databaseConnection,
            readConnections,
            transportUrl,
            state,
          });
          const saved = await tx.save(cell);
          return [saved, { kind: 'cell', uuid, names: [name], reconnect: false, deleted: false }];
        }),
      async () => {
        // Best effort: the duplicate names the existing cell; a failed read keeps the plain message.
        let existing: CellMapping | null = null;
        try {
          existing = await this.manager.findOne(CellMapping, { where: [{ uuid }, { name }] });
        } catch {
          // The plain message below.
        }
        if (existing === null) return `A cell with uuid ${uuid} or name '${name}' already exists.`;
        const same = existing.uuid === uuid ? `uuid ${uuid}` : `name '${name}'`;
        return `Cell '${existing.name}' (${existing.uuid}) already has the ${same}; choose another, or update that cell.`;
      },
    );
  }

  /**
   * Changes a cell's name, connection, transport URL or state. A new connection or state closes the
   * cell's open DataSource in every process once its running calls finish; the next call opens it
   * again from the new mapping (see `setCellState`). Giving `databaseConnection` or `readConnections`
   * does so even when they are unchanged: after rotating the secret a URL references
   * (`?password=file:...`), that reopens the cell with the new password everywhere, as
   * `cells.reloadCell` does in one process.
   * @param cell the cell: its uuid, its name, or a `CellMapping` (its uuid is used).
   * @throws UnknownCellError; BadConnectionUrlError; DuplicateMappingError for a taken name.
   */
  async updateCell(cell: string | CellMapping, patch: CellMappingPatch): Promise<CellMapping> {
    const uuidOrName = cellKeyOf(cell);
    if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) {
      throw new InvalidArgumentError('updateCell needs a patch object: { name?, databaseConnection?, readConnections?, transportUrl?, state? }.');
    }
    const transportUrl = optionalNameArg(patch.transportUrl, 'transport URL', MAX_TRANSPORT_URL);
    const given = cellStateArg(patch.state);
    const disabled = booleanArg(patch.disabled, 'disabled');
    const state = stateOf(given, disabled);
    let name: string | undefined;
    return this.unique(
      () =>
        this.write(async (tx) => {
          const cell = await loadCell(tx, uuidOrName, 'uuidOrName', 'update');
          const before = { name: cell.name, openedFrom: openedFrom(cell) };
          if (patch.name !== undefined) cell.name = nameArg(patch.name, 'cell name');
          name = cell.name;
          if (patch.databaseConnection !== undefined) {
            parseConnectionUrl(patch.databaseConnection, `cell '${cell.name}' (${cell.uuid})`);
            cell.databaseConnection = patch.databaseConnection;
          }
          const readConnections = readConnectionsArg(patch.readConnections, `cell '${cell.name}' (${cell.uuid})`);
          if (readConnections !== undefined) cell.readConnections = readConnections;
          readersFit(cell.databaseConnection, cell.readConnections, `cell '${cell.name}' (${cell.uuid})`);
          if (transportUrl !== undefined) cell.transportUrl = transportUrl;
          // `disabled: false` makes a disabled cell active and leaves another state as it is.
          const next = state ?? (disabled === false && cell.state === 'disabled' ? 'active' : undefined);
          if (next !== undefined) cell.state = next;
          const saved = await tx.save(cell);
          // Restating a connection, even unchanged, reopens the cell: its secret reference
          // (`?password=env:...`) may now resolve to a rotated password.
          const reconnect =
            openedFrom(saved) !== before.openedFrom ||
            patch.databaseConnection !== undefined ||
            patch.readConnections !== undefined;
          return [
            saved,
            {
              kind: 'cell',
              uuid: saved.uuid,
              names: [before.name, saved.name],
              reconnect,
              deleted: false,
            },
          ];
        }),
      () => `A cell named '${name ?? ''}' already exists.`,
    );
  }

  /**
   * Sets a cell's state (see CellState), as `updateCell(cell, { state })`. Every process learns it
   * through the invalidation path of mapping writes (NOTIFY on PostgreSQL, the change log on MySQL
   * and MariaDB) and closes the cell's open DataSource once its running calls and transactions have
   * finished; calls that start after that see the new state (a read-only cell's new connections run
   * read-only transactions).
   * @param cell the cell: its uuid, its name, or a `CellMapping` (its uuid is used).
   * @throws InvalidArgumentError listing the states for an unknown state; UnknownCellError.
   */
  async setCellState(cell: string | CellMapping, state: CellState): Promise<CellMapping> {
    // undefined is refused too: a state is required here.
    return this.updateCell(cell, { state: cellStateArg(state ?? null)! });
  }

  /**
   * Deletes a cell mapping; refuses while instances or hosts are mapped to it unless `force`, which
   * deletes those mappings too. The cell's database is left untouched; its open DataSource closes.
   * @param cell the cell: its uuid, its name, or a `CellMapping` (its uuid is used).
   * @throws UnknownCellError; CellInUseError.
   */
  async deleteCell(cell: string | CellMapping, options: { force?: boolean } = {}): Promise<CellMapping> {
    const uuidOrName = cellKeyOf(cell);
    const force = booleanArg(objectArg(options, 'deleteCell options').force, 'force', false);
    return this.write(async (tx) => {
      const cell = await loadCell(tx, uuidOrName, 'uuidOrName', 'update');
      const instances = await tx.countBy(InstanceMapping, { cellId: cell.id });
      const hosts = await tx.countBy(HostMapping, { cellId: cell.id });
      if ((instances > 0 || hosts > 0) && !force) {
        throw new CellInUseError(`'${cell.name}' (${cell.uuid})`, instances, hosts);
      }
      await tx.delete(InstanceMapping, { cellId: cell.id });
      await tx.delete(HostMapping, { cellId: cell.id });
      await tx.delete(CellMapping, { id: cell.id });
      return [
        cell,
        { kind: 'cell', uuid: cell.uuid, names: [cell.name], reconnect: true, deleted: true },
      ];
    });
  }

  /**
   * Maps an instance to a cell (or to none yet); re-mapping an existing instance moves it.
   * @throws InvalidArgumentError; UnknownCellError; DuplicateMappingError when mapped concurrently.
   */
  async mapInstance(init: InstanceMappingInit): Promise<InstanceMapping> {
    if (init === null || typeof init !== 'object')
      throw new InvalidArgumentError('mapInstance needs { instanceUuid, cell, projectId }.');
    const instanceUuid = uuidArg(init.instanceUuid, 'instance uuid');
    const projectId = nameArg(init.projectId, 'project id');
    const userId = optionalNameArg(init.userId, 'user id');
    const cellUuid = init.cell === null ? null : cellUuidOf(init.cell);
    return this.unique(
      () =>
        this.write(async (tx) => {
          const cell = cellUuid === null ? null : await loadCell(tx, cellUuid, 'uuid', 'share');
          const existing = await tx.findOneBy(InstanceMapping, { instanceUuid });
          const mapping = existing ?? tx.create(InstanceMapping, { instanceUuid, projectId });
          mapping.projectId = projectId;
          mapping.userId = userId ?? mapping.userId ?? null;
          mapping.cell = cell;
          mapping.cellId = cell?.id ?? null;
          return [await tx.save(mapping), { kind: 'instance', uuid: instanceUuid }];
        }),
      `Instance ${instanceUuid} was mapped concurrently.`,
    );
  }

  /** Moves an instance to another cell. @throws UnknownInstanceError; UnknownCellError. */
  async moveInstance(instanceUuid: string, cell: CellRef): Promise<InstanceMapping> {
    const existing = await this.instanceMapping(instanceUuid);
    if (existing === null) throw new UnknownInstanceError(instanceUuid);
    return this.mapInstance({
      instanceUuid,
      cell,
      projectId: existing.projectId,
      userId: existing.userId,
    });
  }

  /** Marks an instance mapping queued for delete (or not). @throws UnknownInstanceError. */
  async setQueuedForDelete(instanceUuid: string, queued: boolean): Promise<void> {
    const key = uuidArg(instanceUuid, 'instance uuid');
    if (typeof queued !== 'boolean') booleanArg(queued ?? null, 'queued');
    await this.write(async (tx) => {
      const result = await tx.update(
        InstanceMapping,
        { instanceUuid: key },
        { queuedForDelete: queued },
      );
      if (!result.affected) throw new UnknownInstanceError(key);
      return [undefined, { kind: 'instance', uuid: key }];
    });
  }

  /** Deletes an instance mapping; returns whether one existed. */
  async unmapInstance(instanceUuid: string): Promise<boolean> {
    const key = uuidArg(instanceUuid, 'instance uuid');
    return this.write(async (tx) => {
      const result = await tx.delete(InstanceMapping, { instanceUuid: key });
      const existed = (result.affected ?? 0) > 0;
      return [existed, existed ? { kind: 'instance', uuid: key } : null];
    });
  }

  /** Maps a host to a cell, moving it when already mapped. @throws UnknownCellError. */
  async mapHost(host: string, cell: CellRef): Promise<HostMapping> {
    const name = nameArg(host, 'host');
    const cellUuid = cellUuidOf(cell);
    return this.unique(
      () =>
        this.write(async (tx) => {
          const target = await loadCell(tx, cellUuid, 'uuid', 'share');
          const mapping =
            (await tx.findOneBy(HostMapping, { host: name })) ??
            tx.create(HostMapping, { host: name });
          mapping.cell = target;
          mapping.cellId = target.id;
          return [await tx.save(mapping), { kind: 'host', host: name }];
        }),
      `Host '${name}' was mapped concurrently.`,
    );
  }

  /** Deletes a host mapping; returns whether one existed. */
  async unmapHost(host: string): Promise<boolean> {
    const name = nameArg(host, 'host');
    return this.write(async (tx) => {
      const result = await tx.delete(HostMapping, { host: name });
      const existed = (result.affected ?? 0) > 0;
      return [existed, existed ? { kind: 'host', host: name } : null];
    });
  }

  /**
   * Tells every process that migrations were applied to the cell `uuid`, through the same
   * notification as mapping writes: each one with `requireSchema` checks the cell's schema again
   * (one query on its open DataSource), so its calls pass within the notification delay; this
   * process has checked it when the returned promise resolves. `db migrate` calls it after
   * migrating a cell; call it after migrating a cell by other means.
   * @throws InvalidArgumentError for a malformed uuid; CellUnreachableError when the API database
   * cannot be reached.
   */
  async reportMigrated(uuid: string): Promise<void> {
    const key = cellUuidOf(uuid);
    await this.write(async () => [undefined, { kind: 'schema', uuid: key }]);
  }

  /**
   * Drops the cached lookups of a cell (by uuid, by name, and the list of all cells), so the next
   * lookup reads the API database. For `cells.evictCell`. @internal
   */
  forgetCell(uuid: string): void {
    this.sync.forgetCell(uuid);
  }

  /**
   * The uuid of the cell an instance or host mapping (`entity`, found by `property` = `key`) is
   * placed in, priming the cache with that cell.
   * @param unknown - the error for no mapping (`placed` false) or a mapping in no cell (true).
   */
  private async placedCellUuid(
    entity: typeof InstanceMapping | typeof HostMapping,
    property: 'instanceUuid' | 'host',
    key: string,
    unknown: (placed: boolean) => Error,
  ): Promise<string> {
    const cellUuid = (await this.placedCellUuids(entity, property, [key])).get(key);
    if (cellUuid === undefined) throw unknown(false);
    if (cellUuid === null) throw unknown(true);
    return cellUuid;
  }

  /**
   * For each of `keys` that has an instance or host mapping, the uuid of its cell, or null when it
   * is in no cell yet; primes the cache with those cells. One round trip for all of them: a query
   * builder without LIMIT (findOne with a relation costs two); the background refreshes of the
   * cache batch their keys through it.
   */
  private async placedCellUuids(
    entity: typeof InstanceMapping | typeof HostMapping,
    property: 'instanceUuid' | 'host',
    keys: readonly string[],
  ): Promise<Map<string, string | null>> {
    const epoch = this.cache.currentEpoch;
    const mappings: Array<{ instanceUuid?: string; host?: string; cell: CellMapping | null }> = await this.manager
      .createQueryBuilder<InstanceMapping | HostMapping>(entity, 'mapping')
      .leftJoinAndSelect('mapping.cell', 'cell')
      .where(`mapping.${property} IN (:...keys)`, { keys })
      .getMany();
    const found = new Map<string, string | null>();
    for (const mapping of mappings) {
      const { cell } = mapping;
      if (cell !== null) this.cache.prime(`u:${cell.uuid}`, cell, epoch);
      found.set(mapping[property]!, cell?.uuid ?? null);
    }
    return found;
  }

  /** `cache.get`, with a failure of `load` passed through `apiFailure`. */
  private lookup<T extends CachedValue>(key: string, load: () => Promise<T>): Promise<T> {
    return this.cache.get(key, () => load().catch(apiFailure));
  }

  /** The cached cell object itself (never handed out: callers get copies). */
  private sharedCellByUuid(uuid: string): Promise<CellMapping> {
    return this.lookup(`u:${uuid}`, async () => {
      const found = await this.manager.findOneBy(CellMapping, { uuid });
      if (found === null) throw new UnknownCellError(uuid);
      this.loaded(found);
      return found;
    });
  }

  private loaded(cell: CellMapping): void {
    try {
      this.options.onCellLoaded?.(cell);
    } catch {
      // A hook never changes a lookup's outcome.
    }
  }

  /**
   * Runs `body` in an API-database transaction that also notifies every process of its change, so
   * they drop their cached keys exactly when it commits; then applies the change here at once.
   */
  private async write<T>(
    body: (tx: EntityManager) => Promise<[T, MappingChange | null]>,
  ): Promise<T> {
    const manager = this.manager;
    const release = this.options.onWrite?.();
    try {
      const attempt = () =>
        manager.transaction(async (tx) => {
          const out = await body(tx);
          if (out[1] !== null) await this.sync.notify(tx, out[1]);
          return out;
        });
      const [result, change] = await retryDeadlocks(attempt).catch(apiFailure);
      if (change !== null) await this.sync.apply(change);
      return result;
    } finally {
      release?.();
    }
  }

  private async unique<T>(write: () => Promise<T>, message: string | (() => string | Promise<string>)): Promise<T> {
    try {
      return await write();
    } catch (error) {
      if (UNIQUE_VIOLATIONS.has(queryErrorCode(error) ?? '')) {
        throw new DuplicateMappingError(typeof message === 'string' ? message : await message(), {
          cause: maskErrorSecrets(error),
        });
      }
      throw error;
    }
  }
}

/** A transaction the server rolled back to break a deadlock: PostgreSQL's SQLSTATE, MySQL's and MariaDB's code. */
const DEADLOCKS: ReadonlySet<string> = new Set(['40P01', 'ER_LOCK_DEADLOCK']);

/** How many times a mapping write runs when the server keeps choosing it to break a deadlock. */
const DEADLOCK_ATTEMPTS = 5;

/**
 * Runs `attempt` (one whole transaction) again when the server rolled it back to break a deadlock
 * (InnoDB picks one of two racing inserts or deletes of a mapping, PostgreSQL one of two row locks
 * taken in turn), after a short random pause; the last attempt's deadlock is
 * MappingWriteConflictError.
 */
async function retryDeadlocks<T>(attempt: () => Promise<T>): Promise<T> {
  for (let tries = 1; ; tries++) {
    try {
      return await attempt();
    } catch (error) {
      if (!DEADLOCKS.has(queryErrorCode(error) ?? '')) throw error;
      if (tries >= DEADLOCK_ATTEMPTS) throw new MappingWriteConflictError(tries, { cause: maskErrorSecrets(error) });
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 10 * tries));
    }
  }
}

/**
 * Rethrows a failed API-database query: CellUnreachableError naming the API database when it cannot
 * be reached (not the driver's ECONNREFUSED), else the error itself, passwords masked in its text
 * and query parameters.
 */
function apiFailure(error: unknown): never {
  throw translateConnectionError(error, API_LABEL); // masked, typed or not
}

/** Reads a cell inside a write, uncached: by uuid, or by uuid then name as `cell()` does. */
/** A cell given by uuid, name or mapping, as the uuid or name that loadCell looks up. */
function cellKeyOf(cell: unknown): string {
  if (cell !== null && typeof cell === 'object' && typeof (cell as { uuid?: unknown }).uuid === 'string') {
    return (cell as CellMapping).uuid;
  }
  return cell as string;
}

async function loadCell(
  tx: EntityManager,
  uuidOrName: string,
  by: 'uuid' | 'uuidOrName' = 'uuidOrName',
  lock?: 'update' | 'share',
): Promise<CellMapping> {
  // A write that reads the row, changes it and saves it locks it first (`update`: SELECT ... FOR
  // UPDATE): two processes writing one cell at once (`cell set-state` beside a rotation's URL
  // write) would otherwise each save the other's columns back as they read them (PostgreSQL's read
  // committed), and a state set read-only could end active. A write that maps something to the
  // cell holds it (`share`) until it commits: a deleteCell meanwhile waits and then finds the
  // mapping (CellInUseError), or went first and this one finds no cell (UnknownCellError), where
  // the insert failed on the foreign key (an untyped QueryFailedError).
  const mode = lock === 'update' ? ('pessimistic_write' as const) : lock === 'share' ? ('pessimistic_read' as const) : undefined;
  const find = (where: Partial<Pick<CellMapping, 'uuid' | 'name'>>) =>
    tx.findOne(CellMapping, { where, ...(mode === undefined ? {} : { lock: { mode } }) });
  if (by === 'uuid' || (typeof uuidOrName === 'string' && UUID_PATTERN.test(uuidOrName))) {
    const byUuid = await find({ uuid: uuidArg(uuidOrName, 'cell uuid') });
    if (byUuid !== null || by === 'uuid') {
      if (byUuid === null) throw new UnknownCellError(uuidOrName.toLowerCase());
      return byUuid;
    }
  }
  const key = nameArg(uuidOrName, 'cell name');
  const byName = await find({ name: key });
  if (byName === null) throw new UnknownCellError(key);
  return byName;
}

/**
 * The state given by `state` or by the old `disabled` flag (true: `'disabled'`); undefined when
 * neither is given. @throws InvalidArgumentError when they disagree.
 */
function stateOf(state: CellState | undefined, disabled: boolean | undefined): CellState | undefined {
  if (disabled === undefined) return state;
  if (state !== undefined && (state === 'disabled') !== disabled) {
    throw new InvalidArgumentError(`state '${state}' and disabled: ${disabled} disagree: pass state alone.`);
  }
  return state ?? (disabled ? 'disabled' : undefined);
}

/**
 * What a cell's open DataSource was made from: its connections and its state (a read-only cell's
 * connections run read-only transactions; a disabled one opens none). A cell whose value changed
 * must have its open DataSource closed. @internal
 */
export function openedFrom(cell: Pick<CellMapping, 'databaseConnection' | 'readConnections' | 'state'>): string {
  return `${cell.state} ${connectionsOf(cell)}`;
}

/**
 * Every connection of a cell (primary and readers) as one string: a cell whose value changed must
 * have its open DataSource closed. @internal
 */
export function connectionsOf(cell: Pick<CellMapping, 'databaseConnection' | 'readConnections'>): string {
  const readers = cell.readConnections ?? [];
  return readers.length === 0 ? cell.databaseConnection : JSON.stringify([cell.databaseConnection, ...readers]);
}

/** A copy of a cached cell, so no caller can change what every other request is routed by. */
function copyCell(cell: CellMapping): CellMapping {
  const copy = Object.assign(Object.create(CellMapping.prototype) as CellMapping, cell);
  // Its own list: changing the copy's must not change the cached mapping.
  if (Array.isArray(cell.readConnections)) copy.readConnections = [...cell.readConnections];
  return copy;
}
