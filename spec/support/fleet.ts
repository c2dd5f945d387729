import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { rowsIn } from './databases';

/** The two migrations of a fleet config (writeFleetConfig), in order. */
export const FLEET_MIGRATIONS = ['FleetProbeTable1769000000000', 'FleetSlowStep1769000100000'];

/**
 * Writes `fleet.config.js` in `dir`: a config for the API database at `apiUrl` whose two cell
 * migrations record themselves in the side table `fleet_probe` (migration, started_at, ended_at,
 * by the server's clock), the second one after `pg_sleep(sleepMs)`. The second one throws in the
 * databases named by `failIn`. Returns the file's path.
 */
export async function writeFleetConfig(
  dir: string,
  apiUrl: string,
  { sleepMs, failIn = [] }: { sleepMs: number; failIn?: string[] },
): Promise<string> {
  const file = join(dir, 'fleet.config.js');
  const [probe, slow] = FLEET_MIGRATIONS as [string, string];
  await writeFile(
    file,
    `
class ${probe} {
  name = '${probe}';
  async up(q) {
    await q.query('CREATE TABLE "fleet_probe" ("migration" text NOT NULL, "started_at" timestamptz NOT NULL, "ended_at" timestamptz NOT NULL)');
    await q.query("INSERT INTO fleet_probe VALUES ('${probe}', clock_timestamp(), clock_timestamp())");
  }
  async down(q) { await q.query('DROP TABLE "fleet_probe"'); }
}
class ${slow} {
  name = '${slow}';
  async up(q) {
    const [{ t }] = await q.query('SELECT clock_timestamp() AS t');
    await q.query('SELECT pg_sleep(${(sleepMs / 1000).toFixed(3)})');
    if (${JSON.stringify(failIn)}.includes(await q.getCurrentDatabase())) throw new Error('this cell breaks the migration');
    await q.query("INSERT INTO fleet_probe VALUES ('${slow}', $1, clock_timestamp())", [t]);
  }
  async down(q) { await q.query("DELETE FROM fleet_probe WHERE migration = '${slow}'"); }
}
module.exports = { api: ${JSON.stringify(apiUrl)}, entities: [], migrations: [${probe}, ${slow}], connectTimeoutMs: 3000 };
`,
  );
  return file;
}

/** What a cell database holds after fleet migrations: its migrations table and side-table rows. */
export interface CellRecord {
  /** Names in its migrations table, in the order applied; [] when it has none. */
  migrations: string[];
  /** Rows of `fleet_probe`, in the order written; [] when the table is missing. */
  probes: { migration: string; started_at: Date; ended_at: Date }[];
}

/** Reads `url`'s migrations table and `fleet_probe` (both may be missing). */
export async function cellRecord(url: string): Promise<CellRecord> {
  const [tables] = await rowsIn<{ m: string | null; p: string | null }>(
    url,
    `SELECT to_regclass('public.migrations')::text AS m, to_regclass('public.fleet_probe')::text AS p`,
  );
  const migrations = tables?.m ? (await rowsIn<{ name: string }>(url, 'SELECT name FROM migrations ORDER BY id')).map((r) => r.name) : [];
  const probes = tables?.p
    ? await rowsIn<CellRecord['probes'][number]>(url, 'SELECT migration, started_at, ended_at FROM fleet_probe ORDER BY started_at')
    : [];
  return { migrations, probes };
}

/** A journal row of a cell, as `cell_migration_run_cells` stores it. */
export interface JournalCell {
  run_id: number;
  cell_uuid: string;
  cell_name: string;
  wave: number;
  state: string;
  attempts: number;
  applied: string;
  error: string | null;
}

/** The runs (oldest first) and their cells (in run order) in the API database at `apiUrl`. */
export async function readJournal(apiUrl: string): Promise<{ runs: { id: number; state: string; ended_at: Date | null }[]; cells: JournalCell[] }> {
  const runs = await rowsIn<{ id: number; state: string; ended_at: Date | null }>(apiUrl, 'SELECT id, state, ended_at FROM cell_migration_runs ORDER BY id');
  const cells = await rowsIn<JournalCell>(
    apiUrl,
    'SELECT run_id, cell_uuid::text, cell_name, wave, state, attempts, applied, error FROM cell_migration_run_cells ORDER BY run_id, position',
  );
  return { runs, cells };
}

/**
 * The most intervals of `intervals` open at one instant: the most migrations that ran at once.
 */
export function maxOverlap(intervals: readonly { start: Date; end: Date }[]): number {
  const events = intervals.flatMap(({ start, end }) => [
    { at: start.getTime(), delta: 1 },
    { at: end.getTime(), delta: -1 },
  ]);
  // An end and a start at the same instant do not overlap: ends first.
  events.sort((a, b) => a.at - b.at || a.delta - b.delta);
  let open = 0;
  let most = 0;
  for (const event of events) most = Math.max(most, (open += event.delta));
  return most;
}

/** The interval a cell's migrations ran in, from its `fleet_probe` rows. */
export function migrationSpan(record: CellRecord): { start: Date; end: Date } {
  const starts = record.probes.map((p) => p.started_at.getTime());
  const ends = record.probes.map((p) => p.ended_at.getTime());
  return { start: new Date(Math.min(...starts)), end: new Date(Math.max(...ends)) };
}
