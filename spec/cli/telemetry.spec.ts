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
