import { CellMapping } from './CellMapping';
import { HostMapping } from './HostMapping';
import { InstanceMapping } from './InstanceMapping';

export { CELL0_UUID, CellMapping } from './CellMapping';
export { HostMapping } from './HostMapping';
export { InstanceMapping } from './InstanceMapping';

/** The entities of the API database, in the order their tables are created. */
export const API_ENTITIES = [CellMapping, InstanceMapping, HostMapping];
