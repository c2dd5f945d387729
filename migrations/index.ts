import { ApiSchema1764072000000 } from './1764072000000-ApiSchema';
import { CellReadConnections1766000000000 } from './1766000000000-CellReadConnections';

/** The API database's migrations, oldest first. */
export const API_MIGRATIONS = [ApiSchema1764072000000, CellReadConnections1766000000000];
