import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { REPO_ROOT } from '../../dev/repo-root';
import { assertCliBuilt, createCliWorld, createProject, createSentinelRole, runCli, type CliProject, type CliWorld, type SentinelRole } from '../support/cli';

let role: SentinelRole;
let world: CliWorld;
let project: CliProject;

/**
 * A CommonJS config whose `telemetry` option exports each ended span as a JSON line to the file
 * in SPANS_FILE, and whose one migration creates a table.
 */
function config(apiUrl: string): string {
  const sdk = JSON.stringify(join(REPO_ROOT, 'node_modules', '@opentelemetry', 'sdk-trace-base'));
  return `
const { appendFileSync } = require('node:fs');
const { BasicTracerProvider, SimpleSpanProcessor } = require(${sdk});
const exporter = {
  export(spans, done) {
    for (const s of spans) {
      appendFileSync(process.env.SPANS_FILE, JSON.stringify({
        name: s.name, attributes: s.attributes, status: s.status,
        events: s.events.map((e) => ({ name: e.name, attributes: e.attributes })),
      }) + '\\n');
    }
    done({ code: 0 });
  },
  shutdown: async () => undefined,
};
class CreateThings1765000000000 {
  name = 'CreateThings1765000000000';
  async up(q) { await q.query('CREATE TABLE things (id integer)'); }
  async down(q) { await q.query('DROP TABLE things'); }
}
module.exports = {
  api: ${JSON.stringify(apiUrl)},
  entities: [],
  migrations: [CreateThings1765000000000],
  telemetry: { tracerProvider: new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }) },
};
`;
}

/**
 * A config that starts an SDK the way NodeSDK with an OTLP exporter does: global tracer and meter
 * providers whose BatchSpanProcessor and PeriodicExportingMetricReader export only every minute,
 * so what the CLI recorded arrives only when it flushes them before exiting. Spans go as JSON lines
 * to SPANS_FILE, metric names to METRICS_FILE. `failing`: its migration throws.
 */
function batchingConfig(apiUrl: string, failing: boolean): string {
  const module = (name: string) => JSON.stringify(join(REPO_ROOT, 'node_modules', '@opentelemetry', name));
  return `
const { appendFileSync } = require('node:fs');
const { trace, metrics } = require(${module('api')});
const { BasicTracerProvider, BatchSpanProcessor } = require(${module('sdk-trace-base')});
const { MeterProvider, PeriodicExportingMetricReader } = require(${module('sdk-metrics')});
const spanExporter = {
  export(spans, done) {
    for (const s of spans) appendFileSync(process.env.SPANS_FILE, JSON.stringify({ name: s.name, status: s.status }) + '\\n');
    done({ code: 0 });
  },
  shutdown: async () => undefined,
};
const metricExporter = {
  export(batch, done) {
    for (const scope of batch.scopeMetrics) for (const m of scope.metrics) appendFileSync(process.env.METRICS_FILE, m.descriptor.name + '\\n');
    done({ code: 0 });
  },
  forceFlush: async () => undefined,
  shutdown: async () => undefined,
};
trace.setGlobalTracerProvider(new BasicTracerProvider({
  spanProcessors: [new BatchSpanProcessor(spanExporter, { scheduledDelayMillis: 60000 })],
}));
metrics.setGlobalMeterProvider(new MeterProvider({
  readers: [new PeriodicExportingMetricReader({ exporter: metricExporter, exportIntervalMillis: 60000 })],
}));
class CreateThings1765000000000 {
  name = 'CreateThings1765000000000';
  async up(q) { ${failing ? "throw new Error('this migration fails');" : "await q.query('CREATE TABLE things (id integer)');"} }
  async down(q) { await q.query('DROP TABLE things'); }
}
module.exports = { api: ${JSON.stringify(apiUrl)}, entities: [], migrations: [CreateThings1765000000000] };
`;
}

beforeAll(async () => {
  assertCliBuilt();
  role = await createSentinelRole();
  world = await createCliWorld('cli_otel', role, 2);
  project = await createProject({ 'cells.config.js': config(role.urlFor(world.api.name)) }, { linkNodeModules: true });
});
afterAll(async () => {
  await project?.remove();
  await world?.destroy();
  await role?.drop();
});

it('exports a typeorm_cells.migrate span per cell with the migrations applied, and no password', async () => {
  const spansFile = join(project.dir, 'spans.jsonl');
  const result = await runCli(['db', 'migrate', '--all'], project.dir, { env: { SPANS_FILE: spansFile } });
  expect(result.code).toBe(0);
  const text = await readFile(spansFile, 'utf8');
  expect(text).not.toContain(role.password);
  const spans = text.trim().split('\n').map((line) => JSON.parse(line) as { name: string; attributes: Record<string, unknown> });
  const migrates = spans.filter((s) => s.name === 'typeorm_cells.migrate');
  expect(migrates.map((s) => s.attributes['typeorm_cells.cell.uuid']).sort()).toEqual(world.cells.map((c) => c.uuid).sort());
  for (const span of migrates) {
    expect(span.attributes).toMatchObject({
      'typeorm_cells.migrations.applied': 1,
      'typeorm_cells.migrations': ['CreateThings1765000000000'],
    });
  }
});

describe('a config that starts a batching SDK on the global providers', () => {
  for (const failing of [false, true]) {
    it(`gets the CLI's spans and metrics: it flushes them before exiting (${failing ? 'failure' : 'success'})`, async () => {
      const fresh = await createCliWorld(failing ? 'cli_otel_fail' : 'cli_otel_batch', role, 2);
      const batching = await createProject({ 'cells.config.js': batchingConfig(role.urlFor(fresh.api.name), failing) }, { linkNodeModules: true });
      try {
        const env = { SPANS_FILE: join(batching.dir, 'spans.jsonl'), METRICS_FILE: join(batching.dir, 'metrics.txt') };
        const started = Date.now();
        const result = await runCli(['db', 'migrate', '--all'], batching.dir, { env });
        expect(result.code).toBe(failing ? 1 : 0);
        expect(Date.now() - started).toBeLessThan(30_000);
        const spans = (await readFile(env.SPANS_FILE, 'utf8')).trim().split('\n').map((line) => JSON.parse(line) as { name: string; status: { code: number } });
        const migrates = spans.filter((s) => s.name === 'typeorm_cells.migrate');
        expect(migrates).toHaveLength(2);
        // SpanStatusCode.ERROR is 2.
        expect(migrates.every((s) => s.status.code === (failing ? 2 : 0))).toBe(true);
        // The pools' wait times at least: the metrics reached the exporter too.
        expect(await readFile(env.METRICS_FILE, 'utf8')).toMatch(/^(db\.client|typeorm_cells)\./m);
      } finally {
        await batching.remove();
        await fresh.destroy();
      }
    });
  }
});
