import { Raw, type FindManyOptions } from 'typeorm';
import {
  isCellFailure,
  targetCell,
  type Cells,
  type CellMapping,
  type ScatterGatherResult,
} from '../../lib';
import { createCellWorld } from '../../spec/support/cells';
import { Widget } from '../../spec/support/widget';
import {
  compare,
  markdownTable,
  type Operation,
  type RunOptions,
  type VariantResult,
} from '../harness';
import type { Scenario, ScenarioResult } from '../scenario';
import { openedCellHandles, seedWidgets, slope, type OpenedCellHandles } from '../support-cells';

const CELL_COUNTS = [1, 4, 16, 64];
const QUICK_CELL_COUNTS = [1, 4, 16];
const ROWS_PER_CELL = 20;
/** Targets of the delayed case: gather time over the time of one cell. */
const TARGETS = { 16: 1.3, 64: 2 } as const;

/** The list each cell answers: the 10 newest widgets. */
const LIST: FindManyOptions<Widget> = { take: 10, order: { createdAt: 'DESC' } };
/**
 * The same list from a cell that answers in about 20 ms, as a remote cell would: an uncorrelated
 * sub-select runs pg_sleep once per query (an InitPlan), not once per row.
 */
const DELAYED_LIST: FindManyOptions<Widget> = {
  ...LIST,
  where: {
    createdAt: Raw((column) => `${column} IS NOT NULL AND (SELECT 1 FROM pg_sleep(0.02)) = 1`),
  },
};
const RAW_LIST = 'SELECT * FROM widgets WHERE deleted_at IS NULL ORDER BY created_at DESC LIMIT 10';
const RAW_DELAYED_LIST =
  'SELECT * FROM widgets WHERE created_at IS NOT NULL AND (SELECT 1 FROM pg_sleep(0.02)) = 1 AND deleted_at IS NULL ORDER BY created_at DESC LIMIT 10';

type Kind = 'routed' | 'typeorm' | 'pg';
const KIND_LABEL: Record<Kind, string> = {
  routed: 'routed cells.scatterGather',
  typeorm: 'TypeORM Promise.all',
  pg: 'raw pg Promise.all',
};
const name = (kind: Kind, n: number) => `${KIND_LABEL[kind]}, ${n} cell${n === 1 ? '' : 's'}`;

/** One row of a case: a cell count and, per kind, its figures and ratio to the same kind on 1 cell. */
interface CountRow {
  cells: number;
  byKind: Record<Kind, VariantResult & { ratioToOneCell: number }>;
}

/**
 * Scenario 3: a list across 1, 4, 16 and 64 cells with cells.scatterGather, against the same
 * queries fanned out by hand with Promise.all over the very same DataSources (TypeORM) and pg
 * pools (raw pg): (a) cells that answer in about 20 ms, (b) plain fast queries.
 */
async function scatterScenario(quick: boolean): Promise<ScenarioResult> {
  const counts = quick ? QUICK_CELL_COUNTS : CELL_COUNTS;
  const cellCount = Math.max(...counts);
  // Pool size 1: one query per cell per gather needs one connection, and 64 cells then stay
  // within max_connections 100 of a shared server.
  const world = await createCellWorld('bench_scatter', {
    cellCount,
    cells: { poolSize: 1, maxOpenCells: cellCount },
  });
  try {
    await Promise.all(world.cells.map((c) => seedWidgets(c.db.url, c.mapping.uuid, ROWS_PER_CELL)));
    const mappings = world.cells.map((c) => c.mapping);
    const handles: OpenedCellHandles[] = [];
    for (const mapping of mappings) handles.push(await openedCellHandles(world.lib, mapping));
    const delayedRun: RunOptions = quick
      ? { rounds: 2, opsPerRound: 3, warmupOps: 2 }
      : { rounds: 12, opsPerRound: 6, warmupOps: 5 };
    const fastRun: RunOptions = quick
      ? { rounds: 2, opsPerRound: 5, warmupOps: 5 }
      : { rounds: 30, opsPerRound: 15, warmupOps: 30 };
    const delayed = await runCase(
      world.lib,
      mappings,
      handles,
      counts,
      DELAYED_LIST,
      RAW_DELAYED_LIST,
      delayedRun,
    );
    const fast = await runCase(world.lib, mappings, handles, counts, LIST, RAW_LIST, fastRun);
    const machinery = await machineryCost(world.lib, mappings, quick);

    const verdicts = Object.entries(TARGETS).map(([n, limit]) => {
      const row = delayed.find((r) => r.cells === Number(n));
      const ratio = row?.byKind.routed.ratioToOneCell;
      return {
        cells: Number(n),
        limit,
        ratio: ratio ?? null,
        typeormRatio: row?.byKind.typeorm.ratioToOneCell ?? null,
        pgRatio: row?.byKind.pg.ratioToOneCell ?? null,
        met: ratio === undefined ? null : ratio <= limit,
      };
    });
    const slopes = (Object.keys(KIND_LABEL) as Kind[]).map((kind) => ({
      kind,
      usPerCell: slope(fast.map((r) => [r.cells, r.byKind[kind].medianUs] as const)),
    }));
    const slopeOf = (kind: Kind) => slopes.find((s) => s.kind === kind)!.usPerCell;
    const ms = (us: number) => us / 1000;
    const caseTable = (rows: CountRow[], toUnit: (us: number) => number, unit: string) =>
      markdownTable(
        [
          'cells',
          `routed median ${unit}`,
          `routed p99 ${unit}`,
          'routed ratio to 1 cell',
          `TypeORM Promise.all median ${unit}`,
          'TypeORM ratio to 1 cell',
          `raw pg Promise.all median ${unit}`,
          'raw pg ratio to 1 cell',
        ],
        rows.map((r) => [
          String(r.cells),
          toUnit(r.byKind.routed.medianUs),
          toUnit(r.byKind.routed.p99Us),
          r.byKind.routed.ratioToOneCell,
          toUnit(r.byKind.typeorm.medianUs),
          r.byKind.typeorm.ratioToOneCell,
          toUnit(r.byKind.pg.medianUs),
          r.byKind.pg.ratioToOneCell,
        ]),
      );
    const verdictLine = verdicts
      .map((v) =>
        v.ratio === null
          ? `${v.cells} cells ≤ ${v.limit}× one cell: not measured in this run`
          : `${v.cells} cells ≤ ${v.limit}× one cell: **${v.ratio.toFixed(2)}×, ${v.met ? 'met' : 'MISSED'}** (TypeORM Promise.all ${v.typeormRatio?.toFixed(2)}×, raw pg ${v.pgRatio?.toFixed(2)}×)`,
      )
      .join('; ');
    return {
      id: 'scatter',
      title: '3. Scatter-gather (1 to 64 cells)',
      data: {
        cellCounts: counts,
        rowsPerCell: ROWS_PER_CELL,
        poolSize: 1,
        delayed,
        fast,
        slopesUsPerCell: slopes,
        machineryUsPerCell: machinery,
        targets: verdicts,
      },
      markdown: [
        `${cellCount} cell databases, each its own database with a ${ROWS_PER_CELL}-row widgets table, all open in the registry (maxOpenCells ${cellCount}, poolSize 1). Each gather runs \`repo.find({ take: 10, order: { createdAt: 'DESC' } })\` through one routed repository in every cell. References fan the same query out by hand with \`Promise.all\` over the very DataSources (TypeORM) and pg pools (raw pg) the registry opened, so the routed column minus the TypeORM column is what typeorm-cells adds.`,
        '',
        '(a) Cells answering in about 20 ms (`pg_sleep(0.02)` in the routed query, run once per query):',
        '',
        caseTable(delayed, ms, 'ms'),
        '',
        `Targets: ${verdictLine}. The 20 ms waits overlap; what grows with the cell count is CPU work per cell on a machine whose 2 cores also run the server, so the references show what any fan-out costs here: where they miss too, the machine is the limit.`,
        '',
        '(b) Plain fast queries:',
        '',
        caseTable(fast, (us) => us, 'µs'),
        '',
        `Client cost of each extra cell (least-squares slope of the median over the cell counts): routed **${slopeOf('routed').toFixed(0)} µs**, TypeORM Promise.all ${slopeOf('typeorm').toFixed(0)} µs, raw pg Promise.all ${slopeOf('pg').toFixed(0)} µs; typeorm-cells adds about ${(slopeOf('routed') - slopeOf('typeorm')).toFixed(0)} µs per cell. Client and server share the 2 cores here, so every slope includes the server's work per query.`,
        `Scatter-gather machinery alone (a gather over ${mappings.length} cells whose \`fn\` returns at once, no query; best of 5 batches): **${machinery.scatterGather.toFixed(1)} µs per cell**, against ${machinery.targetCellAll.toFixed(1)} µs for \`Promise.all\` of \`targetCell\` and ${machinery.promiseAll.toFixed(2)} µs for a bare \`Promise.all\`; the rest of the gather's cost is the query itself.`,
      ].join('\n'),
    };
  } finally {
    await world.destroy();
  }
}

/** Times the routed gather and both references at every cell count, interleaved. */
async function runCase(
  lib: Cells,
  mappings: CellMapping[],
  handles: OpenedCellHandles[],
  counts: number[],
  list: FindManyOptions<Widget>,
  rawList: string,
  options: RunOptions,
): Promise<CountRow[]> {
  const widgets = lib.getRepository(Widget);
  const variants: Record<string, Operation> = {};
  for (const n of counts) {
    const cells = mappings.slice(0, n);
    const repos = handles.slice(0, n).map((h) => h.dataSource.getRepository(Widget));
    const pools = handles.slice(0, n).map((h) => h.pool);
    variants[name('routed', n)] = async () =>
      expectAnswers(await lib.scatterGather(cells, () => widgets.find(list)), n);
    variants[name('typeorm', n)] = () => Promise.all(repos.map((repo) => repo.find(list)));
    variants[name('pg', n)] = () => Promise.all(pools.map((pool) => pool.query(rawList)));
  }
  const results = await compare(variants, name('routed', 1), options);
  const byName = new Map(results.map((r) => [r.name, r]));
  return counts.map((cells) => {
    const byKind = {} as CountRow['byKind'];
    for (const kind of Object.keys(KIND_LABEL) as Kind[]) {
      const result = byName.get(name(kind, cells))!;
      const one = byName.get(name(kind, 1))!;
      byKind[kind] = { ...result, ratioToOneCell: result.medianUs / one.medianUs };
    }
    return { cells, byKind };
  });
}

/**
 * Microseconds per cell of a gather whose work returns at once: what scatterGather itself costs
 * (context per cell, abort signal, deadline, result map), against targetCell alone and bare Promise.all.
 */
async function machineryCost(lib: Cells, cells: CellMapping[], quick: boolean) {
  const answer = () => Promise.resolve(0);
  const usPerCell = async (op: () => Promise<unknown>) => {
    const iterations = quick ? 20 : 300;
    let best = Infinity;
    for (let batch = 0; batch < 5; batch++) {
      const start = process.hrtime.bigint();
      for (let i = 0; i < iterations; i++) await op();
      best = Math.min(
        best,
        Number(process.hrtime.bigint() - start) / iterations / cells.length / 1000,
      );
    }
    return best;
  };
  return {
    scatterGather: await usPerCell(() => lib.scatterGather(cells, answer)),
    targetCellAll: await usPerCell(() =>
      Promise.all(cells.map((cell) => targetCell(cell, answer))),
    ),
    promiseAll: await usPerCell(() => Promise.all(cells.map(answer))),
  };
}

/** Checks that every cell answered with a list: a failed or missing cell would flatter the figures. */
function expectAnswers(result: ScatterGatherResult<Widget[]>, cells: number): void {
  if (result.size !== cells)
    throw new Error(`scatterGather answered for ${result.size} of ${cells} cells`);
  for (const value of result.values()) {
    if (isCellFailure(value))
      throw new Error(`a cell failed during the benchmark: ${JSON.stringify(value)}`);
  }
}

export const scenario: Scenario = { id: 'scatter', order: 3, run: scatterScenario };
