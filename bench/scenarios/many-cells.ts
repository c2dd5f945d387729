import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { CellMapping, maskSecrets, targetCell, type Cells } from '../../lib';
import { createCellWorld } from '../../spec/support/cells';
import { adminQuery, rowsIn } from '../../spec/support/databases';
import { markdownTable, summarise, type VariantResult } from '../harness';
import type { Scenario, ScenarioResult } from '../scenario';
import { seededRandom } from '../../dev/seeded-random';
import {
  entityModel,
  modelTablesSql,
  seedModelRows,
  type EntityModel,
} from '../support-entity-model';
import { PeakSampler, liveHeapBytes } from '../support-sampling';
import { serverCpuReader } from '../support-server-cpu';
import { mapLimit } from '../support-stats';

/** Sizes of the full run and of the `--quick` smoke run. */
const SIZES = {
  full: { cells: 1000, databases: 50, maxOpenCells: 64, workers: 32, phaseMs: 25_000 },
  quick: { cells: 60, databases: 6, maxOpenCells: 8, workers: 8, phaseMs: 3_000 },
};
type Size = (typeof SIZES)['full'];
const ROWS_PER_DATABASE = 20;
/** Connections of the API DataSource; the mapping listener holds one more. */
const API_POOL_SIZE = 3;
const DEFAULT_POOL_SIZE = 5;
/** Connections left to the server's superuser slots, the sampler and anything else on the server. */
const CONNECTION_HEADROOM = 30;
const SAMPLE_MS = 50;
/** Skew: this share of requests goes to HOT_FRACTION of the cells. */
const HOT_SHARE = 0.8;
const HOT_FRACTION = 0.1;
/** RSS counts as flat when the end figure is within this factor of the registry-full one. */
const RSS_FLAT_FACTOR = 1.2;

const MB = 2 ** 20;

interface PhaseFigures {
  name: string;
  requests: number;
  failures: number;
  firstFailure: string | null;
  throughputPerS: number;
  latency: VariantResult;
  hitRate: number;
  evictionsPerS: number;
  opened: number;
  opensPerS: number;
  /** CPU time of this (the client) process per second of the phase: 1000 = one core busy. */
  clientCpuMsPerS: number;
  /** CPU time of the PostgreSQL server (all its processes) per second of the phase; null when it is not local. */
  serverCpuMsPerS: number | null;
  peakCellConnections: number;
  peakTotalConnections: number;
  peakSlots: number;
  peakRssMb: number;
  /** Memory once the phase's requests had finished. */
  end: MemoryFigures;
}

/** Memory at one moment: RSS as it was, then the live heap after a full collection. */
interface MemoryFigures {
  /** DataSources opened since start. */
  opened: number;
  rssMb: number;
  liveHeapMb: number;
}

function memoryNow(lib: Cells): MemoryFigures {
  const rssMb = process.memoryUsage.rss() / MB;
  return { opened: lib.stats().opened, rssMb, liveHeapMb: liveHeapBytes() / MB };
}

/** Entity counts run when `--many-cells-entities` is not given (issue 13: the 100-entity model). */
const DEFAULT_ENTITY_COUNTS = [100];
/** Issue 13's target: even-load throughput at least this multiple of today's (commit 60b4a43). */
const TARGET_FACTOR = 3;
const ENTITIES_FLAG = '--many-cells-entities=';
const BASELINE_FLAG = '--many-cells-baseline=';

/** One entity count's run: the phases and the figures the targets read. */
interface ModelRun {
  entities: number;
  poolSize: number;
  connectionBound: number;
  registryFull: MemoryFigures;
  phases: PhaseFigures[];
  /** Requests per second of the even phase: what the throughput target compares. */
  evenThroughputPerS: number;
  /** 1-minute load average at the start and end of the run (other sessions share the machine). */
  loadAverage: { start: number; end: number };
  peakConnections: number;
  connectionsMet: boolean;
  rssMet: boolean;
  failures: number;
}

/** The even-load throughput of an earlier run, read from its results JSON, per entity count. */
interface Baseline {
  file: string;
  header: string;
  evenThroughputPerS: Map<number, number>;
}

/**
 * Scenario 4: 1,000 mapped cells behind maxOpenCells 64 with an application's entity model (default
 * 100 generated entities with relations and soft delete, `--many-cells-entities=1,100` for several),
 * requests spread evenly and then skewed (80% on 10% of the cells): throughput, p50/p99, opens per
 * second, registry hit rate, evictions, RSS and server connections.
 *
 * Issue 13's target: even-load throughput at least 3x today's for the same entity count. "Today" is
 * commit 60b4a43 (before the issue's work): run this same scenario file (and
 * bench/support-entity-model.ts) in a worktree at that commit, then pass its results file here with
 * `--many-cells-baseline=<that worktree>/bench/results/latest-node24.json`; the section then states
 * both figures, the ratio and met or missed. Run the two back to back: the machine's load moves
 * both.
 */
/** Databases given the model's tables at once while setting up (not measured). */
const DDL_CONCURRENCY = 4;

async function manyCells(quick: boolean): Promise<ScenarioResult> {
  const size = quick ? SIZES.quick : SIZES.full;
  const counts = entityCounts();
  const baseline = readBaseline();
  const runs: ModelRun[] = [];
  const sections: string[] = [];
  for (const entities of counts) {
    const run = await runModel(size, entityModel(entities));
    runs.push(run);
    sections.push(modelMarkdown(size, run));
  }
  const targets = runs.map((run) => {
    const today = baseline?.evenThroughputPerS.get(run.entities);
    const ratio = today === undefined ? undefined : run.evenThroughputPerS / today;
    return {
      entities: run.entities,
      evenThroughputPerS: run.evenThroughputPerS,
      todayEvenThroughputPerS: today ?? null,
      ratio: ratio ?? null,
      met: ratio === undefined ? null : ratio >= TARGET_FACTOR,
    };
  });
  const targetLines = targets.map((t) =>
    t.todayEvenThroughputPerS === null || t.ratio === null
      ? `Target (issue 13): even-load throughput with ${t.entities} entities at least ${TARGET_FACTOR}× today's (commit 60b4a43): this run ${t.evenThroughputPerS.toFixed(1)} requests/s; today's figure not given (run this scenario at 60b4a43 and pass ${BASELINE_FLAG}<its results JSON>), so **not judged**.`
      : `Target (issue 13): even-load throughput with ${t.entities} entities at least ${TARGET_FACTOR}× today's (commit 60b4a43): this run **${t.evenThroughputPerS.toFixed(1)}** requests/s, today **${t.todayEvenThroughputPerS.toFixed(1)}** requests/s: **${t.ratio.toFixed(2)}×, ${t.met === true ? 'met' : 'MISSED'}**.`,
  );
  return {
    id: 'many-cells',
    title: `4. Many cells (${size.cells.toLocaleString('en')} mapped, maxOpenCells ${size.maxOpenCells}, ${counts.join(' and ')} entities)`,
    data: {
      ...size,
      entityCounts: counts,
      runs,
      baseline:
        baseline === undefined
          ? null
          : {
              file: baseline.file,
              header: baseline.header,
              evenThroughputPerS: Object.fromEntries(baseline.evenThroughputPerS),
            },
      targets,
    },
    markdown: [
      ...sections,
      ...targetLines,
      ...(baseline === undefined ? [] : [`Today's figures from ${baseline.header}`]),
    ].join('\n'),
  };
}

/** The entity counts of `--many-cells-entities=1,100` (default: 100). */
function entityCounts(): number[] {
  const arg = process.argv.find((a) => a.startsWith(ENTITIES_FLAG))?.slice(ENTITIES_FLAG.length);
  if (arg === undefined) return DEFAULT_ENTITY_COUNTS;
  const counts = arg.split(',').map(Number);
  if (counts.length === 0 || counts.some((n) => !Number.isInteger(n) || n < 1)) {
    throw new Error(`${ENTITIES_FLAG} takes positive integers separated by commas, not "${arg}"`);
  }
  return counts;
}

/** The even-load throughputs of the results file named by `--many-cells-baseline=`, if given. */
function readBaseline(): Baseline | undefined {
  const file = process.argv.find((a) => a.startsWith(BASELINE_FLAG))?.slice(BASELINE_FLAG.length);
  if (file === undefined) return undefined;
  const json = JSON.parse(readFileSync(file, 'utf8')) as {
    header?: string;
    results?: Array<{
      id: string;
      data: { runs?: Array<Pick<ModelRun, 'entities' | 'evenThroughputPerS'>> };
    }>;
  };
  const runs = json.results?.find((r) => r.id === 'many-cells')?.data.runs;
  if (runs === undefined) throw new Error(`${file} holds no many-cells run with entity counts`);
  return {
    file,
    header: json.header ?? file,
    evenThroughputPerS: new Map(runs.map((r) => [r.entities, r.evenThroughputPerS])),
  };
}

/** Runs the even and the skewed phase over a fresh world whose cells hold `model`'s tables. */
async function runModel(size: Size, model: EntityModel): Promise<ModelRun> {
  const loadAtStart = loadavg()[0] ?? 0;
  const [setting] = await adminQuery<{ max_connections: string }>('SHOW max_connections');
  const maxConnections = Number(setting?.max_connections ?? 100);
  // 64 pools of 5 need 320 connections: on a smaller server, scale the pools down (to 1 at least).
  const poolSize = Math.max(
    1,
    Math.min(
      DEFAULT_POOL_SIZE,
      Math.floor((maxConnections - CONNECTION_HEADROOM - API_POOL_SIZE - 1) / size.maxOpenCells),
    ),
  );
  const bound = size.maxOpenCells * poolSize + API_POOL_SIZE + 1;
  const entities = model.entities.length;
  const world = await createCellWorld(`bench_many_${entities}`, {
    cellCount: size.databases,
    apiOptions: { poolSize: API_POOL_SIZE },
    cells: { maxOpenCells: size.maxOpenCells, poolSize, entities: model.entities, migrations: [] },
  });
  const samples = new PeakSampler(
    world.lib,
    [world.api.name, ...world.cells.map((c) => c.db.name)],
    world.api.name,
    SAMPLE_MS,
  );
  try {
    // One synchronize computes the DDL; every database runs it in one round trip.
    const first = world.cells[0]!;
    const ddl = await modelTablesSql(first.db.url, model);
    // A few databases at a time: each DDL transaction locks every table, index and key of the model,
    // and 50 at once overflow the server's lock table ("out of shared memory") at its defaults.
    await mapLimit(world.cells, DDL_CONCURRENCY, (c) => rowsIn(c.db.url, ddl));
    await mapLimit(world.cells, DDL_CONCURRENCY, (c) => seedModelRows(c.db.url, model, ROWS_PER_DATABASE));
    const cells = [
      ...world.cells.map((c) => c.mapping),
      ...(await mapMoreCells(
        world.lib,
        world.cells.map((c) => c.db.url),
        size.cells,
      )),
    ];
    const serverCpu = await serverCpuReader();
    await samples.start();
    // Full: every slot of the bound taken, so that opening one more evicted one. (The LRU itself
    // may never hold maxOpenCells open entries at once: DataSources being opened hold slots too.)
    let registryFull: MemoryFigures | undefined;
    const onRequest = () => {
      if (registryFull === undefined && world.lib.stats().evictions > 0) {
        registryFull = memoryNow(world.lib);
      }
    };
    const random = seededRandom(4);
    const hotCount = Math.max(1, Math.round(cells.length * HOT_FRACTION));
    const hot = cells.slice(0, hotCount);
    const cold = cells.slice(hotCount);
    const phases: PhaseFigures[] = [];
    phases.push(
      await runPhase(
        'even (uniform over all cells)',
        world.lib,
        model,
        () => cells[Math.floor(random() * cells.length)]!,
        size,
        samples,
        serverCpu,
        onRequest,
      ),
    );
    phases.push(
      await runPhase(
        `skewed (${HOT_SHARE * 100}% on ${hotCount} cells)`,
        world.lib,
        model,
        () =>
          random() < HOT_SHARE
            ? hot[Math.floor(random() * hot.length)]!
            : cold[Math.floor(random() * cold.length)]!,
        size,
        samples,
        serverCpu,
        onRequest,
      ),
    );
    await samples.close();
    if (samples.failure !== undefined)
      throw new Error('sampling pg_stat_activity failed', { cause: samples.failure });
    if (registryFull === undefined) throw new Error('the registry never reached its bound');
    const end = phases.at(-1)!.end;
    const peakConnections = Math.max(...phases.map((p) => p.peakTotalConnections));
    return {
      entities,
      poolSize,
      connectionBound: bound,
      registryFull,
      phases,
      evenThroughputPerS: phases[0]!.throughputPerS,
      loadAverage: { start: loadAtStart, end: loadavg()[0] ?? 0 },
      peakConnections,
      connectionsMet: peakConnections <= bound,
      rssMet: end.rssMb <= registryFull.rssMb * RSS_FLAT_FACTOR,
      failures: phases.reduce((sum, p) => sum + p.failures, 0),
    };
  } finally {
    await samples.close();
    await world.destroy();
  }
}

/** The Markdown section of one entity count's run. */
function modelMarkdown(size: Size, run: ModelRun): string {
  const { phases, poolSize, connectionBound: bound, registryFull: full } = run;
  const end = phases.at(-1)!.end;
  const reusedPerDatabase = size.cells / size.databases;
  return [
    `### ${run.entities} ${run.entities === 1 ? 'entity' : 'entities'}`,
    '',
    `${size.cells.toLocaleString('en')} CellMappings, each its own uuid and so its own DataSource and pool in the registry, but only ${size.databases} real cell databases: to save creating ${size.cells.toLocaleString('en')} databases, mapping *i* points at database *i* mod ${size.databases} (${reusedPerDatabase} mappings per database, same URL; the registry keys DataSources by cell uuid, never by URL, so sharing a database changes nothing on the client). Entity model: ${run.entities} generated ${run.entities === 1 ? 'entity' : 'entities'} (bench/support-entity-model.ts: relations, a soft-delete column), tables in each of the ${size.databases} databases, ${ROWS_PER_DATABASE} rows in \`model_0\` (every fifth soft-deleted). Registry: maxOpenCells ${size.maxOpenCells}, poolSize ${poolSize}, API pool ${API_POOL_SIZE} + 1 listener connection. ${size.workers} concurrent workers each loop \`targetCell(cell, () => repo.find({ take: 10, order: { createdAt: 'DESC' } }))\` on \`model_0\` for ${size.phaseMs / 1000} s per phase, cells drawn from a seeded PRNG. Server connections are sampled from pg_stat_activity every ${SAMPLE_MS} ms (this world's databases only), RSS every ${SAMPLE_MS} ms. 1-minute load average ${run.loadAverage.start.toFixed(1)} at the start of this run, ${run.loadAverage.end.toFixed(1)} at its end.`,
    '',
    markdownTable(
      [
        'phase',
        'requests/s',
        'p50 ms',
        'p99 ms',
        'opens/s',
        'client CPU ms/s',
        'server CPU ms/s',
        'hit rate',
        'evictions/s',
        'opened',
        'failed',
        'peak cell conns',
        'peak server conns',
        'peak DataSources (open+opening+draining)',
        'RSS at end MB',
        'peak RSS MB',
        'live heap at end MB',
      ],
      phases.map((p) => [
        p.name,
        p.throughputPerS,
        p.latency.medianUs / 1000,
        p.latency.p99Us / 1000,
        p.opensPerS,
        p.clientCpuMsPerS,
        p.serverCpuMsPerS ?? 'n/a',
        `${(p.hitRate * 100).toFixed(1)}%`,
        p.evictionsPerS,
        String(p.opened),
        String(p.failures),
        String(p.peakCellConnections),
        String(p.peakTotalConnections),
        String(p.peakSlots),
        p.end.rssMb,
        p.peakRssMb,
        p.end.liveHeapMb,
      ]),
    ),
    '',
    `Hit rate: routed calls that found their cell's DataSource open. An even spread over ${size.cells.toLocaleString('en')} cells could hit at most ${((100 * size.maxOpenCells) / size.cells).toFixed(1)}%; it hits less because DataSources being opened hold slots of the bound (they hold connections): with ${size.workers} workers mostly missing, up to ${size.workers} of the ${size.maxOpenCells} slots hold DataSources still connecting, and each opener evicts the least recently used open one. Each miss costs a TypeORM initialize() and a new server connection (SCRAM authentication, a backend started), which is what bounds the even phase's throughput.`,
    '',
    `CPU per request (client = this process, server = every PostgreSQL process; both share the machine's cores with each other and with anything else running): ${phases
      .map(
        (p) =>
          `${p.name.split(' ')[0]} ${(p.clientCpuMsPerS / p.throughputPerS).toFixed(1)} ms client, ${p.serverCpuMsPerS === null ? 'server not measured' : `${(p.serverCpuMsPerS / p.throughputPerS).toFixed(1)} ms server`}`,
      )
      .join('; ')}.`,
    '',
    `Memory (RSS; live heap = heap in use right after a forced full collection, the leak indicator): when the registry was first full (its first eviction, after ${full.opened} opens) RSS **${full.rssMb.toFixed(0)} MB**, live heap ${full.liveHeapMb.toFixed(1)} MB; after the even phase (${phases[0]!.end.opened} opens) RSS ${phases[0]!.end.rssMb.toFixed(0)} MB, live heap ${phases[0]!.end.liveHeapMb.toFixed(1)} MB; at the end (${end.opened} opens) RSS **${end.rssMb.toFixed(0)} MB**, live heap ${end.liveHeapMb.toFixed(1)} MB.`,
    `Targets: server connections never above ${size.maxOpenCells} × ${poolSize} + ${API_POOL_SIZE} + 1 = ${bound}: peak **${run.peakConnections}, ${run.connectionsMet ? 'met' : 'MISSED'}**; RSS flat once the registry is full (end ≤ ${RSS_FLAT_FACTOR}× registry-full): **${(end.rssMb / full.rssMb).toFixed(2)}×, ${run.rssMet ? 'met' : 'MISSED'}**; failed requests: **${run.failures}**.`,
    '',
  ].join('\n');
}

/** Maps cells up to `total`, mapping *i* at `urls[i % urls.length]`; returns the new mappings. */
async function mapMoreCells(lib: Cells, urls: string[], total: number): Promise<CellMapping[]> {
  const repo = lib.getRepository(CellMapping, 'api');
  const created: CellMapping[] = [];
  for (let i = urls.length; i < total; i++) {
    created.push(
      repo.create({
        uuid: randomUUID(),
        name: `bench-many-cell${i}`,
        databaseConnection: urls[i % urls.length]!,
      }),
    );
  }
  for (let i = 0; i < created.length; i += 250) await repo.insert(created.slice(i, i + 250));
  return created;
}

/** Runs `workers` loops of routed requests to cells drawn by `pick` for the phase's duration. */
async function runPhase(
  name: string,
  lib: Cells,
  model: EntityModel,
  pick: () => CellMapping,
  size: { workers: number; phaseMs: number },
  samples: PeakSampler,
  serverCpu: (() => number) | undefined,
  onRequest: () => void,
): Promise<PhaseFigures> {
  const repo = lib.getRepository<{ createdAt: Date }>(model.first);
  const before = lib.stats();
  samples.resetPeaks();
  const latencies: number[] = [];
  let failures = 0;
  let firstFailure: string | null = null;
  const cpuBefore = process.cpuUsage();
  const serverCpuBefore = serverCpu?.();
  const started = performance.now();
  const deadline = started + size.phaseMs;
  const worker = async () => {
    while (performance.now() < deadline) {
      const cell = pick();
      const t = process.hrtime.bigint();
      try {
        await targetCell(cell, () => repo.find({ take: 10, order: { createdAt: 'DESC' } }));
        latencies.push(Number(process.hrtime.bigint() - t));
      } catch (error) {
        failures++;
        firstFailure ??= maskSecrets(error instanceof Error ? error.message : String(error));
      }
      onRequest();
    }
  };
  await Promise.all(Array.from({ length: size.workers }, worker));
  const seconds = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  const serverCpuAfter = serverCpu?.();
  const after = lib.stats();
  const hits = after.hits - before.hits;
  const misses = after.misses - before.misses;
  return {
    name,
    requests: latencies.length + failures,
    failures,
    firstFailure,
    throughputPerS: latencies.length / seconds,
    latency: summarise(name, latencies),
    hitRate: hits / (hits + misses),
    evictionsPerS: (after.evictions - before.evictions) / seconds,
    opened: after.opened - before.opened,
    opensPerS: (after.opened - before.opened) / seconds,
    clientCpuMsPerS: (cpu.user + cpu.system) / 1000 / seconds,
    serverCpuMsPerS:
      serverCpuBefore === undefined || serverCpuAfter === undefined
        ? null
        : (serverCpuAfter - serverCpuBefore) / seconds,
    peakCellConnections: samples.peakCellConnections,
    peakTotalConnections: samples.peakTotalConnections,
    peakSlots: samples.peakSlots,
    peakRssMb: samples.peakRssBytes / MB,
    end: memoryNow(lib),
  };
}

export const scenario: Scenario = { id: 'many-cells', order: 4, run: manyCells };
