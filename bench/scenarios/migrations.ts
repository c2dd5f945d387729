import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Cells } from '../../lib';
import { compileDist } from '../../spec/support/build';
import { runCli } from '../../spec/support/cli';
import { createTestDatabase, rowsIn, type TestDatabase } from '../../spec/support/databases';
import { markdownTable } from '../harness';
import type { Scenario, ScenarioResult } from '../scenario';
import { mapLimit, median } from '../support-stats';

/** Databases created, reset and dropped at once while setting up (not what is measured). */
const SETUP_CONCURRENCY = 8;
const MIGRATION_COUNT = 3;

/** A project's config: three small cell migrations (two tables, then their indexes), in plain CommonJS. */
function configSource(apiUrl: string): string {
  return `
class CreateFlavors1764300000000 {
  name = 'CreateFlavors1764300000000';
  async up(q) {
    await q.query('CREATE TABLE "flavors" ("id" serial PRIMARY KEY, "name" varchar(255) NOT NULL UNIQUE, "vcpus" integer NOT NULL, "memory_mb" integer NOT NULL)');
  }
  async down(q) { await q.query('DROP TABLE "flavors"'); }
}
class CreateVolumes1764300100000 {
  name = 'CreateVolumes1764300100000';
  async up(q) {
    await q.query('CREATE TABLE "volumes" ("uuid" uuid PRIMARY KEY, "server_uuid" uuid, "size_gb" integer NOT NULL, "created_at" timestamptz NOT NULL DEFAULT now())');
  }
  async down(q) { await q.query('DROP TABLE "volumes"'); }
}
class IndexVolumesAndFlavors1764300200000 {
  name = 'IndexVolumesAndFlavors1764300200000';
  async up(q) {
    await q.query('CREATE INDEX "ix_volumes_server_uuid" ON "volumes" ("server_uuid")');
    await q.query('CREATE INDEX "ix_flavors_vcpus_memory" ON "flavors" ("vcpus", "memory_mb")');
  }
  async down(q) {
    await q.query('DROP INDEX "ix_flavors_vcpus_memory"');
    await q.query('DROP INDEX "ix_volumes_server_uuid"');
  }
}
module.exports = {
  api: ${JSON.stringify(apiUrl)},
  entities: [],
  migrations: [CreateFlavors1764300000000, CreateVolumes1764300100000, IndexVolumesAndFlavors1764300200000],
  connectTimeoutMs: 10000,
};
`;
}

/** What `db migrate --json` prints per cell. */
interface CellReport {
  name: string;
  result: string;
  applied: string[];
  ms: number;
}

/**
 * Runs the built CLI and resolves with its stdout and the wall time from spawn to exit.
 * @throws Error with its stderr when it exits non-zero.
 */
async function timeCli(
  args: readonly string[],
  cwd: string,
): Promise<{ stdout: string; wallMs: number }> {
  const started = performance.now();
  const { code, stdout, stderr } = await runCli(args, cwd, { timeoutMs: 300_000 });
  const wallMs = performance.now() - started;
  if (code !== 0)
    throw new Error(`typeorm-cells ${args.join(' ')} failed: ${stderr.trim() || `exit ${code}`}`);
  return { stdout, wallMs };
}

/** Leaves a cell database as it was created: no tables, no migrations table. */
function resetCell(db: TestDatabase): Promise<unknown> {
  return rowsIn(db.url, 'DROP SCHEMA public CASCADE; CREATE SCHEMA public');
}

/**
 * Scenario 7: `typeorm-cells db migrate --all` (the built binary) applying three migrations to every
 * one of 50 cells, with `--concurrency 1` against `--concurrency 8`; every cell is reset before each
 * run so both do the same work.
 */
async function migrations(quick: boolean): Promise<ScenarioResult> {
  const cellCount = quick ? 6 : 50;
  const order = quick ? [1, 8] : [1, 8, 8, 1];
  // dist/ must hold the CLI of the sources benchmarked.
  await compileDist();

  const api = await createTestDatabase('bench_migrate_api');
  const dbs: TestDatabase[] = [];
  const dir = await mkdtemp(join(tmpdir(), 'cells-bench-migrate-'));
  try {
    const admin = await new Cells({ api: api.url, entities: [], migrateApi: true }).initialize();
    try {
      dbs.push(
        ...(await mapLimit(Array.from({ length: cellCount }), SETUP_CONCURRENCY, (_, i) =>
          createTestDatabase(`bench_migrate_c${i}`),
        )),
      );
      for (const [i, db] of dbs.entries()) {
        await admin.mappings.createCell({
          name: `bench-migrate-${String(i).padStart(2, '0')}`,
          databaseConnection: db.url,
        });
      }
    } finally {
      await admin.destroy();
    }
    const config = join(dir, 'cells.config.js');
    await writeFile(config, configSource(api.url));
    const startup = (await timeCli(['--version'], dir)).wallMs;

    const runs: Array<{ concurrency: number; wallMs: number; cellMs: number[] }> = [];
    for (const concurrency of order) {
      await mapLimit(dbs, SETUP_CONCURRENCY, resetCell);
      const { stdout, wallMs } = await timeCli(
        [
          '--config',
          config,
          '--json',
          'db',
          'migrate',
          '--all',
          '--concurrency',
          String(concurrency),
        ],
        dir,
      );
      const report = (JSON.parse(stdout) as { cells: CellReport[] }).cells;
      const wrong = report.filter(
        (c) => c.result !== 'migrated' || c.applied.length !== MIGRATION_COUNT,
      );
      if (report.length !== cellCount || wrong.length > 0) {
        throw new Error(
          `db migrate --concurrency ${concurrency} did not apply ${MIGRATION_COUNT} migrations to each of ${cellCount} cells: ${JSON.stringify(wrong.slice(0, 3))}`,
        );
      }
      runs.push({ concurrency, wallMs, cellMs: report.map((c) => c.ms) });
    }

    const summary = (concurrency: number) => {
      const mine = runs.filter((r) => r.concurrency === concurrency);
      const cellMs = mine.flatMap((r) => r.cellMs);
      return {
        concurrency,
        runs: mine.length,
        wallMs: median(mine.map((r) => r.wallMs)),
        cellMedianMs: median(cellMs),
        cellMaxMs: Math.max(...cellMs),
      };
    };
    const rows = [summary(1), summary(8)];
    const speedup = rows[0]!.wallMs / rows[1]!.wallMs;
    const met = speedup > 1;
    return {
      id: 'migrations',
      title: `7. Migrations: db migrate --all over ${cellCount} cells`,
      data: {
        cells: cellCount,
        migrations: MIGRATION_COUNT,
        cliStartupMs: startup,
        runs,
        rows,
        speedup,
        target: { faster: true, met },
      },
      markdown: [
        `The built CLI (\`typeorm-cells db migrate --all\`) applying ${MIGRATION_COUNT} migrations (two tables, then two indexes) to each of ${cellCount} cell databases; every cell is reset (schema dropped) before each run; runs in the order ${order.map((c) => `--concurrency ${c}`).join(', ')}. Wall time is from spawn to exit and includes the CLI's start-up (\`--version\` alone: ${startup.toFixed(0)} ms); per-cell time is what the CLI reports for each cell (connect, lock, migrate, close).`,
        '',
        markdownTable(
          ['--concurrency', 'runs', 'wall ms (median)', 'per-cell median ms', 'per-cell max ms'],
          rows.map((r) => [
            String(r.concurrency),
            String(r.runs),
            r.wallMs,
            r.cellMedianMs,
            r.cellMaxMs,
          ]),
        ),
        '',
        `Speed-up of --concurrency 8 over 1: **${speedup.toFixed(2)}×**. The plan sets no figure; target: concurrency 8 does the same work in less wall time: **${met ? 'met' : 'missed'}**.`,
      ].join('\n'),
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
    await mapLimit([api, ...dbs], SETUP_CONCURRENCY, (db) => db.drop());
  }
}

export const scenario: Scenario = { id: 'migrations', order: 7, run: migrations };
