import { targetCell, type CellMapping } from '../../lib';
import { seededRandom } from '../../dev/seeded-random';
import { createCellWorld, createServerFleet } from '../../spec/support/cells';
import { startSecondServer } from '../../spec/support/second-server';
import { Widget } from '../../spec/support/widget';
import { ConnectionSampler } from '../../spec/reliability/support-load';
import { SERVER_BUDGET_LAYOUT, failedCallText, openBudgetCells } from '../../spec/reliability/support-server-budget';
import { markdownTable, summarise } from '../harness';
import type { Scenario, ScenarioResult } from '../scenario';
import { seedWidgets } from '../support-cells';

/**
 * Scenario 8: a connection budget per server (`maxConnectionsPerServer`, issue 13 item 2). The
 * layout of spec/reliability/server-budget.spec.ts (SERVER_BUDGET_LAYOUT, shared with it): 200
 * cells on one server started with max_connections = 60, poolSize 5, maxOpenCells 64 (up to 320
 * connections wanted), 256 concurrent workers over all cells; without a budget, then with a
 * budget of 40, alternated.
 */
const SIZES = {
  full: { rounds: 2, phaseMs: 10_000 },
  quick: { rounds: 1, phaseMs: 2_000 },
};
const {
  cells: CELLS,
  databases: DATABASES,
  tasks: WORKERS,
  poolSize: POOL_SIZE,
  maxOpenCells: MAX_OPEN_CELLS,
  budget: BUDGET,
  serverMaxConnections: SERVER_MAX_CONNECTIONS,
} = SERVER_BUDGET_LAYOUT;
const ROWS_PER_DATABASE = 20;

interface VariantFigures {
  variant: string;
  round: number;
  ok: number;
  errors: number;
  tooManyClients: number;
  firstError: string | null;
  okPerS: number;
  medianMs: number;
  p99Ms: number;
  peakBackends: number;
  opened: number;
  givenBack: number;
}

async function serverBudget(quick: boolean): Promise<ScenarioResult> {
  const size = quick ? SIZES.quick : SIZES.full;
  const second = await startSecondServer('cells-bench-budget');
  const world = await createCellWorld('bench_budget', { cellCount: 0 });
  try {
    const { databases, urls, cells } = await createServerFleet(second, world.lib, {
      label: 'bench_budget',
      databases: DATABASES,
      cells: CELLS,
    });
    for (const [i, url] of urls.entries()) await seedWidgets(url, cells[i]!.uuid, ROWS_PER_DATABASE);

    const figures: VariantFigures[] = [];
    for (let round = 1; round <= size.rounds; round++) {
      for (const budget of [undefined, BUDGET]) {
        figures.push(await runVariant(world.api.url, cells, databases, second.url('postgres'), budget, size.phaseMs, round));
      }
    }
    const withBudget = figures.filter((f) => f.variant !== 'no budget');
    const without = figures.filter((f) => f.variant === 'no budget');
    const budgetErrors = withBudget.reduce((sum, f) => sum + f.errors, 0);
    const budgetPeak = Math.max(...withBudget.map((f) => f.peakBackends));
    const met = budgetErrors === 0 && budgetPeak <= BUDGET && without.every((f) => f.tooManyClients > 0);
    const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? 0;
    return {
      id: 'server-budget',
      title: `8. Connection budget per server (${CELLS} cells, max_connections ${SERVER_MAX_CONNECTIONS}, budget ${BUDGET})`,
      data: { ...size, cells: CELLS, databases: DATABASES, workers: WORKERS, poolSize: POOL_SIZE, maxOpenCells: MAX_OPEN_CELLS, budget: BUDGET, figures, met },
      markdown: [
        `${CELLS} CellMappings over ${DATABASES} databases of a second PostgreSQL server started with max_connections = ${SERVER_MAX_CONNECTIONS}; poolSize ${POOL_SIZE}, maxOpenCells ${MAX_OPEN_CELLS} (up to ${POOL_SIZE * MAX_OPEN_CELLS} connections wanted); ${WORKERS} workers each loop \`targetCell(cell, () => repo.find({ take: 10 }))\` over cells drawn from a seeded PRNG for ${size.phaseMs / 1000} s per variant, variants alternated over ${size.rounds} round(s). Peak backends of the cell databases sampled from pg_stat_activity every 10 ms. ok/s counts successful calls only.`,
        '',
        markdownTable(
          ['round', 'variant', 'ok/s', 'median ms', 'p99 ms', 'failed calls', '"too many clients"', 'peak backends', 'DataSources opened', 'idle given back'],
          figures.map((f) => [String(f.round), f.variant, f.okPerS, f.medianMs, f.p99Ms, String(f.errors), String(f.tooManyClients), String(f.peakBackends), String(f.opened), String(f.givenBack)]),
        ),
        '',
        `Median ok/s: no budget ${median(without.map((f) => f.okPerS)).toFixed(0)}, budget ${BUDGET} ${median(withBudget.map((f) => f.okPerS)).toFixed(0)}. ` +
          `Targets: without a budget the server refuses connections; with ${BUDGET}: 0 failed calls (**${budgetErrors}**), peak backends <= ${BUDGET} (**${budgetPeak}**): **${met ? 'met' : 'MISSED'}**.` +
          (without[0]?.firstError ? ` First error without budget: \`${without[0].firstError.slice(0, 160)}\`.` : ''),
      ].join('\n'),
    };
  } finally {
    await world.destroy();
    await second.remove();
  }
}

async function runVariant(
  apiUrl: string,
  cells: CellMapping[],
  databases: string[],
  serverUrl: string,
  budget: number | undefined,
  phaseMs: number,
  round: number,
): Promise<VariantFigures> {
  const lib = await openBudgetCells(apiUrl, budget === undefined ? {} : { maxConnectionsPerServer: budget });
  const widgets = lib.getRepository(Widget);
  const random = seededRandom(round * 13);
  const sampler = await new ConnectionSampler(databases, serverUrl).start(10);
  const latencies: number[] = [];
  let errors = 0;
  let tooManyClients = 0;
  let firstError: string | null = null;
  const started = performance.now();
  const deadline = started + phaseMs;
  try {
    await Promise.all(
      Array.from({ length: WORKERS }, async () => {
        while (performance.now() < deadline) {
          const cell = cells[Math.floor(random() * cells.length)]!;
          const t = process.hrtime.bigint();
          try {
            await targetCell(cell, () => widgets.find({ take: 10, order: { createdAt: 'DESC' } }));
            latencies.push(Number(process.hrtime.bigint() - t));
          } catch (error) {
            errors++;
            const text = failedCallText(error);
            if (/too many clients/i.test(text)) tooManyClients++;
            firstError ??= text;
            // A refused connection fails at once: do not spin.
            await new Promise((resolve) => setTimeout(resolve, 20));
          }
        }
      }),
    );
  } finally {
    await sampler.stop();
  }
  const seconds = (performance.now() - started) / 1000;
  const stats = lib.stats();
  await lib.destroy();
  const latency = summarise('calls', latencies.length > 0 ? latencies : [0]);
  return {
    variant: budget === undefined ? 'no budget' : `budget ${budget}`,
    round,
    ok: latencies.length,
    errors,
    tooManyClients,
    firstError,
    okPerS: latencies.length / seconds,
    medianMs: latency.medianUs / 1000,
    p99Ms: latency.p99Us / 1000,
    peakBackends: sampler.peak,
    opened: stats.opened,
    givenBack: stats.servers[0]?.givenBack ?? 0,
  };
}

export const scenario: Scenario = { id: 'server-budget', order: 8, run: serverBudget };
