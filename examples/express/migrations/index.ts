import { CreateServers1764200000000 } from './1764200000000-CreateServers';

/** The example's cell-database migrations, oldest first; every cell (cell0 included) runs them. */
export const CELL_MIGRATIONS = [CreateServers1764200000000];
