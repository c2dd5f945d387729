import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
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

/** A layout of cell migrations: their classes (plain CommonJS), names and what they stand for. */
interface Layout {
  id: string;
  /** For the Markdown: what the migrations do. */
  description: string;
  /** CommonJS source declaring the migration classes. */
  classes: string;
  /** Class names, in order. */
  names: string[];
}

/** Three small cell migrations (two tables, then their indexes): the CLI's own cost dominates. */
const SMALL_DDL: Layout = {
  id: 'small-ddl',
  description: 'three small migrations (two tables, then two indexes on them)',
  classes: `
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
}`,
  names: [
    'CreateFlavors1764300000000',
    'CreateVolumes1764300100000',
    'IndexVolumesAndFlavors1764300200000',
  ],
};

/** Server time each migration of SERVER_BOUND spends, in ms (issue 13, item 6: about 200 ms). */
const SERVER_WORK_MS = 200;

/**
 * One migration whose work is on the server: a table, then `pg_sleep` for SERVER_WORK_MS standing
 * for an index build on a large table (the server works, the CLI waits).
 */
const SERVER_BOUND: Layout = {
  id: 'server-bound',
  description: `one migration spending ${SERVER_WORK_MS} ms on the server (a table, then \`pg_sleep(${SERVER_WORK_MS / 1000})\` standing for an index build)`,
  classes: `
class BuildServersIndex1764300300000 {
  name = 'BuildServersIndex1764300300000';
  async up(q) {
    await q.query('CREATE TABLE "servers" ("uuid" uuid PRIMARY KEY, "host" varchar(255))');
    await q.query('SELECT pg_sleep(${SERVER_WORK_MS / 1000})');
  }
  async down(q) { await q.query('DROP TABLE "servers"'); }
}`,
  names: ['BuildServersIndex1764300300000'],
};

/** Target of issue 13, item 6: --concurrency 8 over --concurrency 1 on SERVER_BOUND. */
const SERVER_BOUND_SPEEDUP_TARGET = 5;

/** A project's config with `layout`'s cell migrations, in plain CommonJS. */
function configSource(apiUrl: string, layout: Layout): string {
  return `${layout.classes}
module.exports = {
  api: ${JSON.stringify(apiUrl)},
  entities: [],
  migrations: [${layout.names.join(', ')}],
  connectTimeoutMs: 10000,
};
`;
}

/** The variable naming the file CPU_PROBE writes the CLI's CPU time to. */
const CPU_FILE_VARIABLE = 'CELLS_BENCH_CPU_FILE';

/**
 * Preloaded into the CLI (`--require` in NODE_OPTIONS): on exit, writes the process's user and
 * system CPU time (process.cpuUsage, in µs, start-up included) to the file named by CPU_FILE_VARIABLE.
 */
const CPU_PROBE = `
const { writeFileSync } = require('node:fs');
process.once('exit', () => writeFileSync(process.env.${CPU_FILE_VARIABLE}, JSON.stringify(process.cpuUsage())));
`;

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
  env: NodeJS.ProcessEnv = {},
): Promise<{ stdout: string; wallMs: number }> {
  const started = performance.now();
  const { code, stdout, stderr } = await runCli(args, cwd, { timeoutMs: 300_000, env });
  const wallMs = performance.now() - started;
  if (code !== 0)
    throw new Error(`typeorm-cells ${args.join(' ')} failed: ${stderr.trim() || `exit ${code}`}`);
  return { stdout, wallMs };
}

/** Leaves a cell database as it was created: no tables, no migrations table. */
function resetCell(db: TestDatabase): Promise<unknown> {
  return rowsIn(db.url, 'DROP SCHEMA public CASCADE; CREATE SCHEMA public');
}

/** One `db migrate --all` run. */
interface Run {
  layout: string;
  concurrency: number;
  wallMs: number;
  /** User + system CPU time of the CLI process, start-up included, in ms. */
  cpuMs: number;
  cellMs: number[];
}

/** The CLI's user + system CPU time in ms, as CPU_PROBE wrote it. */
async function cpuMsIn(file: string): Promise<number> {
  const usage = JSON.parse(await readFile(file, 'utf8')) as { user: number; system: number };
  return (usage.user + usage.system) / 1000;
}

/**
 * Scenario 7: `typeorm-cells db migrate --all` (the built binary) over 50 cells, with
 * `--concurrency 1` against `--concurrency 8`, for two layouts of migrations: three small ones
 * (the CLI's own cost dominates) and one spending 200 ms on the server (issue 13, item 6: at least
 * 5x faster with 8). Every cell is reset before each run so all do the same work; the CLI's CPU
 * time is read in the process itself (CPU_PROBE).
 */
async function migrations(quick: boolean): Promise<ScenarioResult> {
  const cellCount = quick ? 6 : 50;
  const order = quick ? [1, 8] : [1, 8, 8, 1];
  const layouts = [SMALL_DDL, SERVER_BOUND];
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
    const probe = join(dir, 'cpu-probe.js');
    const cpuFile = join(dir, 'cpu.json');
    await writeFile(probe, CPU_PROBE);
    const probeEnv = {
      NODE_OPTIONS:
        `${process.env['NODE_OPTIONS'] ?? ''} --require ${JSON.stringify(probe)}`.trim(),
      [CPU_FILE_VARIABLE]: cpuFile,
    };
    // Start-up alone, median of 3: what every run pays before its first cell.
    const startups: Array<{ wallMs: number; cpuMs: number }> = [];
    for (let i = 0; i < 3; i++) {
      const { wallMs } = await timeCli(['--version'], dir, probeEnv);
      startups.push({ wallMs, cpuMs: await cpuMsIn(cpuFile) });
    }
    const startup = {
      wallMs: median(startups.map((s) => s.wallMs)),
      cpuMs: median(startups.map((s) => s.cpuMs)),
    };

    const runs: Run[] = [];
    for (const layout of layouts) {
      const config = join(dir, `${layout.id}.config.js`);
      await writeFile(config, configSource(api.url, layout));
      for (const concurrency of order) {
        await mapLimit(dbs, SETUP_CONCURRENCY, resetCell);
        await rm(cpuFile, { force: true });
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
          probeEnv,
        );
        const report = (JSON.parse(stdout) as { cells: CellReport[] }).cells;
        const count = layout.names.length;
        const wrong = report.filter((c) => c.result !== 'migrated' || c.applied.length !== count);
        if (report.length !== cellCount || wrong.length > 0) {
          throw new Error(
            `db migrate --concurrency ${concurrency} (${layout.id}) did not apply ${count} migrations to each of ${cellCount} cells: ${JSON.stringify(wrong.slice(0, 3))}`,
          );
        }
        runs.push({
          layout: layout.id,
          concurrency,
          wallMs,
          cpuMs: await cpuMsIn(cpuFile),
          cellMs: report.map((c) => c.ms),
        });
      }
    }

    const summary = (layout: Layout, concurrency: number) => {
      const mine = runs.filter((r) => r.layout === layout.id && r.concurrency === concurrency);
      const cellMs = mine.flatMap((r) => r.cellMs);
      const cpuMs = median(mine.map((r) => r.cpuMs));
      return {
        layout: layout.id,
        concurrency,
        runs: mine.length,
        wallMs: median(mine.map((r) => r.wallMs)),
        cellMedianMs: median(cellMs),
        cellMaxMs: Math.max(...cellMs),
        cpuMs,
        cpuPerCellMs: cpuMs / cellCount,
        cpuPerCellAfterStartupMs: (cpuMs - startup.cpuMs) / cellCount,
      };
    };
    const rows = layouts.flatMap((layout) => [summary(layout, 1), summary(layout, 8)]);
    const speedupOf = (layout: Layout): number => {
      const [one, eight] = rows.filter((r) => r.layout === layout.id);
      return one!.wallMs / eight!.wallMs;
    };
    const speedups = {
      [SMALL_DDL.id]: speedupOf(SMALL_DDL),
      [SERVER_BOUND.id]: speedupOf(SERVER_BOUND),
    };
    const smallMet = speedups[SMALL_DDL.id]! > 1;
    const serverMet = speedups[SERVER_BOUND.id]! >= SERVER_BOUND_SPEEDUP_TARGET;
    // With no cost but the server's: one cell after another against ceil(cells / 8) waves.
    const idealSpeedup = cellCount / Math.ceil(cellCount / 8);
    return {
      id: 'migrations',
      title: `7. Migrations: db migrate --all over ${cellCount} cells`,
      data: {
        cells: cellCount,
        layouts: layouts.map((l) => ({ id: l.id, migrations: l.names.length })),
        serverWorkMs: SERVER_WORK_MS,
        startup,
        runs,
        rows,
        speedups,
        idealServerBoundSpeedup: idealSpeedup,
        targets: {
          [SMALL_DDL.id]: { faster: true, met: smallMet },
          [SERVER_BOUND.id]: { speedup: SERVER_BOUND_SPEEDUP_TARGET, met: serverMet },
        },
      },
      markdown: [
        `The built CLI (\`typeorm-cells --json db migrate --all\`) over ${cellCount} cell databases, for two layouts of migrations: **${SMALL_DDL.id}**, ${SMALL_DDL.description}, and **${SERVER_BOUND.id}**, ${SERVER_BOUND.description}. With \`--json\` there is no live progress (on a terminal, listr2's renderer adds CPU time not measured here). Every cell is reset (schema dropped) before each run; each layout runs in the order ${order.map((c) => `--concurrency ${c}`).join(', ')}. Wall time is from spawn to exit and includes the CLI's start-up (\`--version\` alone: ${startup.wallMs.toFixed(0)} ms wall, ${startup.cpuMs.toFixed(0)} ms CPU); per-cell time is what the CLI reports for each cell (connect, lock, migrate, close). CPU is the CLI process's user + system time (process.cpuUsage at exit, start-up included), median of the runs; "after start-up" subtracts the \`--version\` CPU.`,
        '',
        markdownTable(
          [
            'layout',
            '--concurrency',
            'runs',
            'wall ms (median)',
            'per-cell median ms',
            'per-cell max ms',
            'CLI CPU ms',
            'CLI CPU ms per cell',
            'per cell after start-up',
          ],
          rows.map((r) => [
            r.layout,
            String(r.concurrency),
            String(r.runs),
            r.wallMs,
            r.cellMedianMs,
            r.cellMaxMs,
            r.cpuMs,
            r.cpuPerCellMs,
            r.cpuPerCellAfterStartupMs,
          ]),
        ),
        '',
        `Speed-up of --concurrency 8 over 1: ${SMALL_DDL.id} **${speedups[SMALL_DDL.id]!.toFixed(2)}×** (target: less wall time with 8: **${smallMet ? 'met' : 'missed'}**); ${SERVER_BOUND.id} **${speedups[SERVER_BOUND.id]!.toFixed(2)}×** (target ≥ ${SERVER_BOUND_SPEEDUP_TARGET}× (issue 13, item 6): **${serverMet ? 'met' : 'missed'}**; ${cellCount} cells in waves of 8 bound it at ${idealSpeedup.toFixed(2)}× were the server's ${SERVER_WORK_MS} ms the only cost).`,
      ].join('\n'),
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
    await mapLimit([api, ...dbs], SETUP_CONCURRENCY, (db) => db.drop());
  }
}

export const scenario: Scenario = { id: 'migrations', order: 7, run: migrations };
