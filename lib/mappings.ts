import { randomUUID } from 'node:crypto';
import { QueryFailedError, type DataSource, type EntityManager } from 'typeorm';
import { CELL0_UUID, CellMapping } from '../entities/CellMapping';
import { HostMapping } from '../entities/HostMapping';
import { InstanceMapping } from '../entities/InstanceMapping';
import { parseConnectionUrl } from './connection-url';
import { cellUuidOf, type CellRef } from './context';
import {
  CellInUseError,
  DuplicateMappingError,
  InvalidArgumentError,
  UnknownCellError,
  UnknownHostError,
  UnknownInstanceError,
} from './errors';

/** Fields of a new cell; `uuid` defaults to a random one. */
export interface CellMappingInit {
  uuid?: string;
  name: string;
  databaseConnection: string;
  transportUrl?: string | null;
  disabled?: boolean;
}

/** Fields of a cell that `updateCell` may change. */
export type CellMappingPatch = Partial<Pick<CellMapping, 'name' | 'databaseConnection' | 'transportUrl' | 'disabled'>>;

/** Which cells `allCells` returns. */
export interface AllCellsOptions {
  /** Include cell0. Default: true. */
  includeCell0?: boolean;
  /** Include disabled cells. Default: true. */
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

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const MAX_NAME = 255;

/**
 * Cell, instance and host lookups and writes in the API database.
 * Reached as `cells.mappings`.
 */
export class CellMappings {
  constructor(private readonly api: DataSource) {}

  private get manager(): EntityManager {
    return this.api.manager;
  }

  /**
   * The CellMapping with this uuid.
   * @throws InvalidArgumentError for a malformed uuid; UnknownCellError when none exists.
   */
  async cellByUuid(uuid: string): Promise<CellMapping> {
    const key = uuidArg(uuid, 'cell uuid');
    const cell = await this.manager.findOneBy(CellMapping, { uuid: key });
    if (cell === null) throw new UnknownCellError(key);
    return cell;
  }

  /**
   * The CellMapping with this name.
   * @throws UnknownCellError when none exists.
   */
  async cellByName(name: string): Promise<CellMapping> {
    const key = nameArg(name, 'cell name');
    const cell = await this.manager.findOneBy(CellMapping, { name: key });
    if (cell === null) throw new UnknownCellError(key);
    return cell;
  }

  /** The cell named by a uuid or a name (a uuid-shaped string is taken as a uuid first). */
  async cell(uuidOrName: string): Promise<CellMapping> {
    if (typeof uuidOrName === 'string' && UUID.test(uuidOrName)) {
      const byUuid = await this.manager.findOneBy(CellMapping, { uuid: uuidOrName.toLowerCase() });
      if (byUuid !== null) return byUuid;
    }
    return this.cellByName(uuidOrName);
  }

  /** Every cell, ordered by name; cell0 and disabled cells included unless excluded. */
  async allCells(options: AllCellsOptions = {}): Promise<CellMapping[]> {
    const cells = await this.manager.find(CellMapping, { order: { name: 'ASC' } });
    return cells.filter(
      (c) => (options.includeCell0 !== false || c.uuid !== CELL0_UUID) && (options.includeDisabled !== false || !c.disabled),
    );
  }

  /**
   * The cell that holds an instance.
   * @throws UnknownInstanceError when the instance is unmapped or not yet in a cell.
   */
  async instanceCell(instanceUuid: string): Promise<CellMapping> {
    const key = uuidArg(instanceUuid, 'instance uuid');
    const mapping = await this.manager.findOne(InstanceMapping, { where: { instanceUuid: key }, relations: { cell: true } });
    if (mapping === null) throw new UnknownInstanceError(key);
    if (mapping.cell === null) throw new UnknownInstanceError(key, 'it is not placed in a cell yet');
    return mapping.cell;
  }

  /** The InstanceMapping of an instance, or null. */
  async instanceMapping(instanceUuid: string): Promise<InstanceMapping | null> {
    const key = uuidArg(instanceUuid, 'instance uuid');
    return this.manager.findOne(InstanceMapping, { where: { instanceUuid: key }, relations: { cell: true } });
  }

  /**
   * The cell a host belongs to.
   * @throws UnknownHostError when the host is unmapped.
   */
  async hostCell(host: string): Promise<CellMapping> {
    const key = nameArg(host, 'host');
    const mapping = await this.manager.findOne(HostMapping, { where: { host: key }, relations: { cell: true } });
    if (mapping === null) throw new UnknownHostError(key);
    return mapping.cell;
  }

  /**
   * Creates a cell mapping.
   * @throws InvalidArgumentError for a bad name or uuid; BadConnectionUrlError for a bad URL;
   * DuplicateMappingError when the uuid or name is taken.
   */
  async createCell(init: CellMappingInit): Promise<CellMapping> {
    if (init === null || typeof init !== 'object') throw new InvalidArgumentError('createCell needs { name, databaseConnection }.');
    const uuid = init.uuid === undefined ? randomUUID() : uuidArg(init.uuid, 'cell uuid');
    const name = nameArg(init.name, 'cell name');
    parseConnectionUrl(init.databaseConnection, `'${name}'`);
    const cell = this.manager.create(CellMapping, {
      uuid,
      name,
      databaseConnection: init.databaseConnection,
      transportUrl: init.transportUrl ?? null,
      disabled: init.disabled ?? false,
    });
    return this.unique(() => this.manager.save(cell), `A cell with uuid ${uuid} or name '${name}' already exists.`);
  }

  /**
   * Changes a cell's name, connection, transport URL or disabled flag.
   * @throws UnknownCellError; BadConnectionUrlError; DuplicateMappingError for a taken name.
   */
  async updateCell(uuidOrName: string, patch: CellMappingPatch): Promise<CellMapping> {
    const cell = await this.cell(uuidOrName);
    if (patch.name !== undefined) cell.name = nameArg(patch.name, 'cell name');
    if (patch.databaseConnection !== undefined) {
      parseConnectionUrl(patch.databaseConnection, `'${cell.name}' (${cell.uuid})`);
      cell.databaseConnection = patch.databaseConnection;
    }
    if (patch.transportUrl !== undefined) cell.transportUrl = patch.transportUrl;
    if (patch.disabled !== undefined) cell.disabled = Boolean(patch.disabled);
    return this.unique(() => this.manager.save(cell), `A cell named '${cell.name}' already exists.`);
  }

  /**
   * Deletes a cell mapping; refuses while instances or hosts are mapped to it unless `force`, which
   * deletes those mappings too. The cell's database is left untouched.
   * @throws UnknownCellError; CellInUseError.
   */
  async deleteCell(uuidOrName: string, options: { force?: boolean } = {}): Promise<CellMapping> {
    const cell = await this.cell(uuidOrName);
    return this.manager.transaction(async (tx) => {
      const instances = await tx.countBy(InstanceMapping, { cellId: cell.id });
      const hosts = await tx.countBy(HostMapping, { cellId: cell.id });
      if ((instances > 0 || hosts > 0) && !options.force) {
        throw new CellInUseError(`'${cell.name}' (${cell.uuid})`, instances, hosts);
      }
      await tx.delete(InstanceMapping, { cellId: cell.id });
      await tx.delete(HostMapping, { cellId: cell.id });
      await tx.delete(CellMapping, { id: cell.id });
      return cell;
    });
  }

  /**
   * Maps an instance to a cell (or to none yet); re-mapping an existing instance moves it.
   * @throws InvalidArgumentError; UnknownCellError.
   */
  async mapInstance(init: InstanceMappingInit): Promise<InstanceMapping> {
    const instanceUuid = uuidArg(init.instanceUuid, 'instance uuid');
    const projectId = nameArg(init.projectId, 'project id');
    const cell = init.cell === null ? null : await this.cellByUuid(cellUuidOf(init.cell));
    const existing = await this.manager.findOneBy(InstanceMapping, { instanceUuid });
    const mapping = existing ?? this.manager.create(InstanceMapping, { instanceUuid, projectId });
    mapping.projectId = projectId;
    mapping.userId = init.userId ?? mapping.userId ?? null;
    mapping.cell = cell;
    mapping.cellId = cell?.id ?? null;
    return this.unique(() => this.manager.save(mapping), `Instance ${instanceUuid} was mapped concurrently.`);
  }

  /** Moves an instance to another cell. @throws UnknownInstanceError; UnknownCellError. */
  async moveInstance(instanceUuid: string, cell: CellRef): Promise<InstanceMapping> {
    const existing = await this.instanceMapping(instanceUuid);
    if (existing === null) throw new UnknownInstanceError(instanceUuid);
    return this.mapInstance({ instanceUuid, cell, projectId: existing.projectId, userId: existing.userId });
  }

  /** Marks an instance mapping queued for delete (or not). @throws UnknownInstanceError. */
  async setQueuedForDelete(instanceUuid: string, queued: boolean): Promise<void> {
    const key = uuidArg(instanceUuid, 'instance uuid');
    const result = await this.manager.update(InstanceMapping, { instanceUuid: key }, { queuedForDelete: queued });
    if (!result.affected) throw new UnknownInstanceError(key);
  }

  /** Deletes an instance mapping; returns whether one existed. */
  async unmapInstance(instanceUuid: string): Promise<boolean> {
    const key = uuidArg(instanceUuid, 'instance uuid');
    const result = await this.manager.delete(InstanceMapping, { instanceUuid: key });
    return (result.affected ?? 0) > 0;
  }

  /** Maps a host to a cell, moving it when already mapped. @throws UnknownCellError. */
  async mapHost(host: string, cell: CellRef): Promise<HostMapping> {
    const name = nameArg(host, 'host');
    const target = await this.cellByUuid(cellUuidOf(cell));
    const mapping = (await this.manager.findOneBy(HostMapping, { host: name })) ?? this.manager.create(HostMapping, { host: name });
    mapping.cell = target;
    mapping.cellId = target.id;
    return this.unique(() => this.manager.save(mapping), `Host '${name}' was mapped concurrently.`);
  }

  /** Deletes a host mapping; returns whether one existed. */
  async unmapHost(host: string): Promise<boolean> {
    const result = await this.manager.delete(HostMapping, { host: nameArg(host, 'host') });
    return (result.affected ?? 0) > 0;
  }

  private async unique<T>(write: () => Promise<T>, message: string): Promise<T> {
    try {
      return await write();
    } catch (error) {
      if (error instanceof QueryFailedError && (error.driverError as { code?: string } | undefined)?.code === '23505') {
        throw new DuplicateMappingError(message, { cause: error });
      }
      throw error;
    }
  }
}

function uuidArg(value: unknown, what: string): string {
  if (typeof value !== 'string' || !UUID.test(value)) {
    const shown = typeof value === 'string' ? `'${value.slice(0, 60)}'` : typeof value;
    throw new InvalidArgumentError(`The ${what} must be a uuid, got ${shown}.`);
  }
  return value.toLowerCase();
}

function nameArg(value: unknown, what: string): string {
  if (typeof value !== 'string' || value.trim() === '' || value.length > MAX_NAME) {
    const shown = typeof value === 'string' ? `a string of length ${value.length}` : typeof value;
    throw new InvalidArgumentError(`The ${what} must be a non-empty string of at most ${MAX_NAME} characters, got ${shown}.`);
  }
  return value;
}
// CRUD-READY
