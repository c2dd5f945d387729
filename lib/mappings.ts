import type { DataSource } from 'typeorm';
import { CellMapping } from '../entities/CellMapping';
import { UnknownCellError } from './errors';

/**
 * Cell, instance and host lookups in the API database.
 */
export class CellMappings {
  constructor(private readonly api: DataSource) {}

  /**
   * The CellMapping with this uuid.
   * @throws UnknownCellError when none exists.
   */
  async cellByUuid(uuid: string): Promise<CellMapping> {
    const cell = await this.api.getRepository(CellMapping).findOneBy({ uuid });
    if (cell === null) throw new UnknownCellError(uuid);
    return cell;
  }
}
