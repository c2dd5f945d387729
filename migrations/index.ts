import { ApiSchema1764072000000 } from './1764072000000-ApiSchema';
import { CellReadConnections1766000000000 } from './1766000000000-CellReadConnections';
import { MappingChangeLog1767000000000 } from './1767000000000-MappingChangeLog';
import { CellStates1768000000000 } from './1768000000000-CellStates';
import { MigrationJournal1768200000000 } from './1768200000000-MigrationJournal';

/** The API database's migrations, oldest first; each runs on PostgreSQL, MySQL and MariaDB. */
export const API_MIGRATIONS = [
  ApiSchema1764072000000,
  CellReadConnections1766000000000,
  MappingChangeLog1767000000000,
  CellStates1768000000000,
  MigrationJournal1768200000000,
];
