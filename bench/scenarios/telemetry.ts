import { context } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { MeterProvider, MetricReader } from '@opentelemetry/sdk-metrics';
import { BasicTracerProvider, SimpleSpanProcessor, type SpanExporter } from '@opentelemetry/sdk-trace-base';
import { Cells, RequestContext, runWithContext, type CellsOptions } from '../../lib';
import { createCellWorld } from '../../spec/support/cells';
import { rowsIn } from '../../spec/support/databases';
import { Widget } from '../../spec/support/widget';
import { compare, markdownTable, type RunOptions } from '../harness';
import { seedWidgets } from '../support-cells';
import type { Scenario, ScenarioResult } from '../scenario';

const ROWS = 10_000;

/** Drops every span: the cost measured is the SDK's (span objects, processor), not an export. */
const noopExporter: SpanExporter = {
  export: (_spans, done) => done({ code: 0 }),
  shutdown: () => Promise.resolve(),
};

/** A reader never collected: instruments record into the SDK's aggregations, nothing is exported. */
class IdleReader extends MetricReader {
  protected async onForceFlush(): Promise<void> {}
  protected async onShutdown(): Promise<void> {}
}

/**
 * Scenario 9: what OpenTelemetry costs a routed `findOneBy`: telemetry off, `@opentelemetry/api`
 * installed with no SDK registered (the default option: global no-op providers), and an SDK with a
 * no-op exporter. Each variant is its own Cells over the same cell database (pool size 1); an A/A
 * pair of two Cells with telemetry off shows what two equal instances differ by.
 */
async function telemetryOverhead(quick: boolean): Promise<ScenarioResult> {
  const world = await createCellWorld('bench_otel', { cellCount: 1, cells: { poolSize: 1, telemetry: false } });
  const cell = world.cells[0]!;
  const manager = new AsyncLocalStorageContextManager().enable();
  context.setGlobalContextManager(manager);
  const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(noopExporter)] });
  const meterProvider = new MeterProvider({ readers: [new IdleReader()] });
  const base: CellsOptions = { api: { url: world.api.url, poolSize: 1 }, entities: [Widget], poolSize: 1 };
  const instances: Record<string, Cells> = {
    'telemetry: false': new Cells({ ...base, telemetry: false }),
    'telemetry: false, a second Cells (A/A)': new Cells({ ...base, telemetry: false }),
    'API installed, no SDK (default option)': new Cells(base),
    'SDK, no-op exporter': new Cells({ ...base, telemetry: { tracerProvider, meterProvider } }),
  };
  try {
    await seedWidgets(cell.db.url, cell.mapping.uuid, ROWS);
    const uuids = (await rowsIn<{ uuid: string }>(cell.db.url, 'SELECT uuid FROM widgets')).map((r) => r.uuid);
    let i = 0;
    const nextUuid = () => uuids[(i = (i + 7919) % uuids.length)]!;
    await Promise.all(Object.values(instances).map((c) => c.initialize()));
    const ctx = new RequestContext({ cell: cell.mapping });
    const variants = Object.fromEntries(
      Object.entries(instances).map(([name, cells]) => {
        const repo = cells.getRepository(Widget);
        return [name, () => repo.findOneBy({ uuid: nextUuid() })];
      }),
    );
    // More than --quick's usual smoke run: the ratios are the point of this scenario.
    const options: RunOptions = quick ? { rounds: 10, opsPerRound: 100, warmupOps: 200 } : { rounds: 30, opsPerRound: 300, warmupOps: 500 };
    const results = await runWithContext(ctx, () => compare(variants, 'telemetry: false', options));
    const cpu = await runWithContext(ctx, () => cpuPerCall(variants, options));
    const ratio = (name: string) => results.find((r) => r.name === name)!.ratio;
    const cpuRatio = (name: string) => cpu.get(name)! / cpu.get('telemetry: false')!;
    const noSdk = ratio('API installed, no SDK (default option)');
    const aa = ratio('telemetry: false, a second Cells (A/A)');
    return {
      id: 'telemetry',
      title: '9. OpenTelemetry overhead on a routed lookup',
      data: { results, cpuUsPerCall: Object.fromEntries(cpu), targets: { noSdkOverOffMedian: 1.01 } },
      markdown: [
        `A routed \`findOneBy({ uuid })\` on a ${ROWS.toLocaleString('en')}-row table, each variant its own Cells (pool size 1) over the same cell database, timed interleaved; the AsyncLocalStorage context manager is registered throughout.`,
        '',
        markdownTable(
          ['variant', 'median µs', 'p99 µs', 'ratio to telemetry: false', 'client CPU µs per call', 'CPU ratio'],
          results.map((r) => [r.name, r.medianUs, r.p99Us, r.ratio, cpu.get(r.name)!, cpuRatio(r.name)]),
        ),
        '',
        `API installed, no SDK / telemetry off by median: **${noSdk.toFixed(3)}** (target ≤ 1.01), by client CPU ${cpuRatio('API installed, no SDK (default option)').toFixed(3)}; the A/A pair differs by ${aa.toFixed(3)} (CPU ${cpuRatio('telemetry: false, a second Cells (A/A)').toFixed(3)}).`,
        `With an SDK and a no-op exporter: **${ratio('SDK, no-op exporter').toFixed(3)}** by median, ${cpuRatio('SDK, no-op exporter').toFixed(3)} by client CPU (reported, no target).`,
        'Client CPU (process.cpuUsage, user + system, per call; the median of per-round figures) counts what this process spends, not the wait for the server, so it is less sensitive to other load on the machine than wall time.',
      ].join('\n'),
    };
  } finally {
    await Promise.all(Object.values(instances).map((c) => c.destroy()));
    await Promise.all([tracerProvider.shutdown(), meterProvider.shutdown()]);
    context.disable();
    await world.destroy();
  }
}

/**
 * This process's CPU time per call of each variant, in µs: variants run in rotating order, a
 * round of `opsPerRound` calls each; the median over rounds.
 */
async function cpuPerCall(variants: Record<string, () => Promise<unknown>>, options: RunOptions): Promise<Map<string, number>> {
  const names = Object.keys(variants);
  const perRound = new Map<string, number[]>(names.map((n) => [n, []]));
  for (let round = 0; round < options.rounds; round++) {
    for (let k = 0; k < names.length; k++) {
      const name = names[(round + k) % names.length]!;
      const op = variants[name]!;
      const before = process.cpuUsage();
      for (let i = 0; i < options.opsPerRound; i++) await op();
      const used = process.cpuUsage(before);
      perRound.get(name)!.push((used.user + used.system) / options.opsPerRound);
    }
  }
  const median = (values: number[]) => values.sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
  return new Map(names.map((n) => [n, median(perRound.get(n)!)]));
}

export const scenario: Scenario = { id: 'telemetry', order: 9, run: telemetryOverhead };
