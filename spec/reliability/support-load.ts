import { Client } from 'pg';
import type { CellsOptions, CellsStats } from '../../lib';
import {
  createCellWorld,
  migrateCellDatabase,
  type CellWorld,
  type TestCell,
} from '../support/cells';
import { createTestDatabase, testDatabaseUrl, type TestDatabase } from '../support/databases';

export { sleep } from '../../dev/wait';
export { seededRandom } from '../../dev/seeded-random';

import { mapLimit } from '../../lib/cli/map-limit';

export { mapLimit };

/** Options of `createLoadWorld`. */
export interface LoadWorldOptions {
  /** Cell databases to create, migrate and map. */
  cellCount: number;
  /** Databases created and migrated at once; CREATE DATABASE serialises on the server anyway. Default: 4. */
  concurrency?: number;
  /** Extra options for `new Cells()`. */
  cells?: Partial<CellsOptions>;
}

/**
 * A `createCellWorld` whose cell databases are created, migrated and dropped in parallel with
 * limited concurrency, for scenarios with tens of cells: each drop opens admin connections, and
 * the suite shares a server of 100 connections. Cells are named `<label>-cell<i>`.
 */
export async function createLoadWorld(
  label: string,
  options: LoadWorldOptions,
): Promise<CellWorld> {
  const concurrency = options.concurrency ?? 4;
  // The base world holds the API database only; its destroy() drops that one.
  const base = await createCellWorld(label, {
    cellCount: 0,
    ...(options.cells ? { cells: options.cells } : {}),
  });
  const created: TestDatabase[] = [];
  const dropAll = async (): Promise<void> => {
    await base.lib.destroy();
    await mapLimit(created, concurrency, (db) => db.drop());
    await base.destroy();
  };
  try {
    const cells = await mapLimit(
      Array.from({ length: options.cellCount }, (_, i) => i),
      concurrency,
      async (i): Promise<TestCell> => {
        const db = await createTestDatabase(`${label}_c${i}`);
        created.push(db);
        await migrateCellDatabase(db.url);
        const mapping = await base.lib.mappings.createCell({
          name: `${label}-cell${i}`,
          databaseConnection: db.url,
        });
        return { db, mapping };
      },
    );
    return { ...base, cells, destroy: dropAll };
  } catch (error) {
    await dropAll();
    throw error;
  }
}

/**
 * Samples the number of server connections to a set of databases from pg_stat_activity every
 * `intervalMs`, over one admin connection (to `postgres`, so it never counts itself), and keeps
 * the peak.
 */
export class ConnectionSampler {
  peak = 0;
  samples = 0;
  /** Samples that failed (the query errored); a sampler that failed often measured nothing. */
  failures = 0;
  private readonly client: Client;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> = Promise.resolve();

  /**
   * @param databases - names of the databases whose connections are counted.
   * @param serverUrl - URL of the server's `postgres` database; default: the test server.
   */
  constructor(
    private readonly databases: readonly string[],
    serverUrl = testDatabaseUrl('postgres'),
  ) {
    this.client = new Client({ connectionString: serverUrl, connectionTimeoutMillis: 10_000 });
    this.client.on('error', () => undefined);
  }

  /** Connects and starts sampling. */
  async start(intervalMs = 10): Promise<this> {
    await this.client.connect();
    await this.sample();
    this.timer = setInterval(() => {
      this.running = this.running.then(() =>
        this.sample().then(
          () => undefined,
          () => void this.failures++,
        ),
      );
    }, intervalMs);
    return this;
  }

  /** Counts the connections now, and updates the peak. */
  async sample(): Promise<number> {
    const { rows } = await this.client.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = ANY($1)',
      [this.databases],
    );
    const n = rows[0]?.n ?? 0;
    this.samples++;
    this.peak = Math.max(this.peak, n);
    return n;
  }

  /** Stops sampling and closes the admin connection; resolves with the peak. */
  async stop(): Promise<number> {
    clearInterval(this.timer);
    await this.running;
    await this.client.end();
    return this.peak;
  }
}

/** Keeps the peak of `open + draining + opening` of `cells.stats()`: DataSources holding a slot. */
export class SlotPeak {
  peak = 0;

  /** Records one reading of the stats. */
  record(stats: CellsStats): void {
    this.peak = Math.max(this.peak, stats.open + stats.draining + stats.opening);
  }
}

/** Returns a picker of one of `weights`' keys, with probability proportional to its weight. */
export function weightedPicker<K extends string>(
  weights: Record<K, number>,
  random: () => number,
): () => K {
  const entries = Object.entries(weights) as [K, number][];
  const total = entries.reduce((sum, [, w]) => sum + w, 0);
  return () => {
    let r = random() * total;
    for (const [key, weight] of entries) {
      r -= weight;
      if (r < 0) return key;
    }
    return entries[entries.length - 1]![0];
  };
}

/** Runs `count` async loops at once, each `loop(index)`, and resolves when all have finished. */
export async function runConcurrently(
  count: number,
  loop: (index: number) => Promise<void>,
): Promise<void> {
  await Promise.all(Array.from({ length: count }, (_, i) => loop(i)));
}
