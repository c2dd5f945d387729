import { ApiSchema1764072000000 } from './1764072000000-ApiSchema';

/** The API database's migrations, oldest first. */
export const API_MIGRATIONS = [ApiSchema1764072000000];
