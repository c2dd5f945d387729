import { CellMapping } from './CellMapping';
import { HostMapping } from './HostMapping';
import { InstanceMapping } from './InstanceMapping';
import { MigrationRun } from './MigrationRun';
import { MigrationRunCell } from './MigrationRunCell';

export { CELL0_UUID, CELL_STATES, CellMapping, type CellState } from './CellMapping';
export { HostMapping } from './HostMapping';
export { InstanceMapping } from './InstanceMapping';
export { MigrationRun, type MigrationRunOptions, type MigrationRunState } from './MigrationRun';
export { MigrationRunCell, type MigrationRunCellState } from './MigrationRunCell';

/**
 * The entities of the API database, in the order their tables are created. Their column types are
 * ones TypeORM accepts on PostgreSQL, MySQL and MariaDB alike: uuids are `varchar(36)` in the
 * metadata (the migrations store them as `uuid` on PostgreSQL, `CHAR(36)` on MySQL), dates are
 * untyped (`timestamptz` on PostgreSQL, `DATETIME(6)` on MySQL, as the migrations create them).
 */
export const API_ENTITIES = [CellMapping, InstanceMapping, HostMapping, MigrationRun, MigrationRunCell];
