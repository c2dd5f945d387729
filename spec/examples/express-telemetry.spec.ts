import { randomBytes, randomUUID } from 'node:crypto';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { InMemorySpanExporter, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import request from 'supertest';
import { DEFAULT_PROJECT } from '../../examples/express/context';
import { startTelemetry, type Telemetry } from '../../examples/express/telemetry';
import { createRole } from '../support/databases';
import { createExampleApp, type ExampleApp } from '../support/example-app';
import { freePort } from '../../dev/free-port';
import { withTimeout } from '../../dev/wait';
import { assertCliBuilt } from '../support/cli';
import { startOtlpCollector } from '../support/otlp-collector';
import { closedPort, eventually } from '../support/peers';

const START = join(__dirname, '..', '..', 'dist', 'examples', 'express', 'start.js');
const SENTINEL = `S3ntinel-${randomBytes(6).toString('hex')}`;

let spans: InMemorySpanExporter;
let telemetry: Telemetry;
let world: ExampleApp;
/** A server in the first cell, and one mapped to a cell whose port is closed. */
let uuid: string;
let unreachableUuid: string;

beforeAll(async () => {
  spans = new InMemorySpanExporter();
  // Before `new Cells()`, as in start.ts: the library takes its meter from the registered provider.
  telemetry = startTelemetry({ env: {}, spanExporters: [spans] });
  const roleUrl = new URL(await createRole(`cells_otel_example_${process.pid}`, SENTINEL));
  world = await createExampleApp('otelex', {
    cellCount: 2,
    connectionUrl: (url) => {
      const u = new URL(url);
      u.username = roleUrl.username;
      u.password = SENTINEL;
      return u.toString();
    },
    app: { telemetry },
  });
  uuid = (await world.seed(2))[0]!;
  const down = await world.lib.mappings.createCell({
    name: 'otelex-down',
    databaseConnection: `postgres://nobody:${SENTINEL}@127.0.0.1:${await closedPort()}/nowhere`,
  });
  unreachableUuid = randomUUID();
  await world.lib.mappings.mapInstance({
    instanceUuid: unreachableUuid,
    cell: down,
    projectId: DEFAULT_PROJECT,
  });
}, 120_000);
afterAll(async () => {
  await world?.destroy();
  await telemetry?.shutdown();
}, 60_000);

/** A W3C traceparent with a fresh trace id, so that each test finds its own spans. */
function traceparent(): { header: string; traceId: string; parentId: string } {
  const traceId = randomBytes(16).toString('hex');
  const parentId = randomBytes(8).toString('hex');
  return { header: `00-${traceId}-${parentId}-01`, traceId, parentId };
}

/** The SERVER span of the trace, once it has ended. */
async function serverSpanOf(traceId: string): Promise<ReadableSpan> {
  const find = () =>
    spans
      .getFinishedSpans()
      .find((s) => s.spanContext().traceId === traceId && s.kind === SpanKind.SERVER);
  await eventually(() => find() !== undefined);
  return find()!;
}

/** Everything a span exports that could carry text: name, attributes, status, events, links. */
function exported(span: ReadableSpan): string {
  return JSON.stringify([
    span.name,
    span.attributes,
    span.status,
    span.events,
    span.links,
    span.resource.attributes,
  ]);
}

describe('the SERVER span of a request', () => {
  it('is named after the route and carries the HTTP semantic-convention attributes', async () => {
    const parent = traceparent();
    await request(world.app)
      .get(`/servers/${uuid}?limit=1`)
      .set('traceparent', parent.header)
      .expect(200);
    const span = await serverSpanOf(parent.traceId);
    expect(span.name).toBe('GET /servers/:uuid');
    expect(span.instrumentationScope.name).toBe('typeorm-cells-example');
    expect(span.attributes).toEqual({
      'http.request.method': 'GET',
      'url.scheme': 'http',
      'url.path': `/servers/${uuid}`,
      'http.route': '/servers/:uuid',
      'http.response.status_code': 200,
    });
    expect(span.status.code).toBe(SpanStatusCode.UNSET);
    expect(span.resource.attributes['service.name']).toBe('typeorm-cells-example');
  });

  it('continues the trace of the traceparent the client sent', async () => {
    const parent = traceparent();
    await request(world.app).get('/cells').set('traceparent', parent.header).expect(200);
    const span = await serverSpanOf(parent.traceId);
    expect(span.parentSpanContext?.spanId).toBe(parent.parentId);
    expect(span.attributes['http.route']).toBe('/cells');
  });

  it('starts a trace of its own without a traceparent', async () => {
    const before = new Set(spans.getFinishedSpans());
    await request(world.app).get('/cells').expect(200);
    const mine = () =>
      spans.getFinishedSpans().find((s) => !before.has(s) && s.kind === SpanKind.SERVER);
    await eventually(() => mine() !== undefined);
    expect(mine()!.parentSpanContext).toBeUndefined();
    expect(mine()!.name).toBe('GET /cells');
  });

  it('names the route of a router root as its mount path', async () => {
    const parent = traceparent();
    await request(world.app).get('/servers?limit=1').set('traceparent', parent.header).expect(200);
    const span = await serverSpanOf(parent.traceId);
    expect(span.name).toBe('GET /servers');
    expect(span.attributes['url.path']).toBe('/servers');
  });

  it('keeps the route of a 404 for an unknown server, and is no error', async () => {
    const parent = traceparent();
    await request(world.app)
      .get(`/servers/${randomUUID()}`)
      .set('traceparent', parent.header)
      .expect(404);
    const span = await serverSpanOf(parent.traceId);
    expect(span.name).toBe('GET /servers/:uuid');
    expect(span.attributes['http.route']).toBe('/servers/:uuid');
    expect(span.attributes['http.response.status_code']).toBe(404);
    expect(span.attributes['error.type']).toBeUndefined();
    expect(span.status.code).toBe(SpanStatusCode.UNSET);
  });

  it('keeps the route of a 503 for a server in an unreachable cell, and is an error of that code', async () => {
    const parent = traceparent();
    const res = await request(world.app)
      .get(`/servers/${unreachableUuid}`)
      .set('traceparent', parent.header)
      .expect(503);
    expect(res.body).toMatchObject({ error: { code: 'CELLS_CELL_UNREACHABLE' } });
    const span = await serverSpanOf(parent.traceId);
    expect(span.name).toBe('GET /servers/:uuid');
    expect(span.attributes['http.route']).toBe('/servers/:uuid');
    expect(span.attributes['http.response.status_code']).toBe(503);
    expect(span.attributes['error.type']).toBe('CELLS_CELL_UNREACHABLE');
    expect(span.status.code).toBe(SpanStatusCode.ERROR);
  });

  it('has no route for a path no route matches', async () => {
    const parent = traceparent();
    await request(world.app).get('/nowhere/at/all').set('traceparent', parent.header).expect(404);
    const span = await serverSpanOf(parent.traceId);
    expect(span.name).toBe('GET');
    expect(span.attributes['http.route']).toBeUndefined();
    expect(span.attributes['url.path']).toBe('/nowhere/at/all');
  });
});

describe('GET /metrics', () => {
  let text: string;
  beforeAll(async () => {
    await request(world.app).get(`/servers/${uuid}`).expect(200);
    await request(world.app).get(`/servers/${unreachableUuid}`).expect(503);
    const res = await request(world.app).get('/metrics').expect(200);
    expect(res.headers['content-type']).toMatch(/^text\/plain/);
    text = res.text;
  });

  it('serves the request duration histogram in Prometheus text format, by route and status', () => {
    // @opentelemetry/exporter-prometheus appends no unit suffix: the unit is in the `# UNIT` line.
    expect(text).toContain('# TYPE http_server_request_duration histogram');
    expect(text).toContain('# UNIT http_server_request_duration s');
    const counts = prometheusSeries(text, 'http_server_request_duration_count');
    const ok = counts.find(
      (c) =>
        c.labels['http_route'] === '/servers/:uuid' &&
        c.labels['http_response_status_code'] === '200',
    );
    expect(ok?.value).toBeGreaterThanOrEqual(1);
    expect(ok?.labels).toMatchObject({
      http_request_method: 'GET',
      url_scheme: 'http',
      otel_scope_name: 'typeorm-cells-example',
    });
    const unreachable = counts.find((c) => c.labels['error_type'] === 'CELLS_CELL_UNREACHABLE');
    expect(unreachable?.labels).toMatchObject({
      http_route: '/servers/:uuid',
      http_response_status_code: '503',
    });
    // The /metrics request itself is in flight while it is served.
    expect(prometheusSeries(text, 'http_server_active_requests')).toEqual([
      {
        labels: {
          http_request_method: 'GET',
          url_scheme: 'http',
          otel_scope_name: 'typeorm-cells-example',
        },
        value: 1,
      },
    ]);
  });
});

describe('the sentinel password', () => {
  it('is in no exported span and not in /metrics', async () => {
    await request(world.app).get(`/servers/${unreachableUuid}`).expect(503);
    const metricsText = (await request(world.app).get('/metrics').expect(200)).text;
    const all = spans.getFinishedSpans();
    expect(all.length).toBeGreaterThan(0);
    expect(all.map(exported).filter((text) => text.includes(SENTINEL))).toEqual([]);
    expect(metricsText).not.toContain(SENTINEL);
  });
});

// The OTLP/HTTP exporter loads node:http with a dynamic import(), which Jest's module loader refuses
// (without --experimental-vm-modules), so the export is checked on the built app in plain Node.
describe('npm start with OTEL_EXPORTER_OTLP_ENDPOINT', () => {
  beforeAll(() => assertCliBuilt());

  it('posts the spans of its requests to the collector as OTLP JSON when it stops', async () => {
    const collector = await startOtlpCollector();
    const port = await freePort();
    const child = spawn(process.execPath, [START], {
      env: {
        ...process.env,
        PORT: String(port),
        DATABASE_URL: '', // its own embedded PostgreSQL, so no fixed database names on the test server
        CELLS_EXAMPLE_MYSQL_URL: '',
        OTEL_EXPORTER_OTLP_ENDPOINT: collector.endpoint,
        OTEL_SERVICE_NAME: 'otlp-check',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const exited = new Promise<number | null>((resolve) =>
      child.once('exit', (code) => resolve(code)),
    );
    try {
      await eventually(
        () => output.includes('Press Ctrl-C to stop.') || child.exitCode !== null,
        60_000,
      );
      expect(output).toContain(`traces:   OTLP/HTTP to ${collector.endpoint}/v1/traces`);
      const sample = /\/servers\/([0-9a-f-]{36})/.exec(output)![1]!;
      const base = `http://127.0.0.1:${port}`;
      await request(base).get(`/servers/${sample}`).expect(200);
      await request(base).get(`/servers/${randomUUID()}`).expect(404);
      const metrics = (await request(base).get('/metrics').expect(200)).text;
      const byStatus = prometheusSeries(metrics, 'http_server_request_duration_count')
        .filter((c) => c.labels['http_route'] === '/servers/:uuid')
        .map((c) => [c.labels['http_response_status_code'], c.value]);
      expect(byStatus.sort()).toEqual([
        ['200', 1],
        ['404', 1],
      ]);
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(collector.received.length).toBeGreaterThan(0);
      for (const post of collector.received) {
        expect(post).toMatchObject({
          method: 'POST',
          url: '/v1/traces',
          headers: { 'content-type': 'application/json' },
        });
      }
      const spansSent = collector.received.flatMap((post) => otlpSpans(post.body));
      const server = spansSent.filter(
        (span) => span.kind === OTLP_SPAN_KIND_SERVER && span.name === 'GET /servers/:uuid',
      );
      expect(server).toHaveLength(2);
      expect(collector.received.map((post) => post.body).join('\n')).toContain('"otlp-check"');
    } finally {
      // SIGTERM first: the app then removes its embedded PostgreSQL's data directory.
      if (child.exitCode === null) child.kill('SIGTERM');
      await withTimeout(exited, 30_000, 'the example app after SIGTERM').catch(() =>
        child.kill('SIGKILL'),
      );
      await collector.close();
    }
  }, 90_000);
});

/** OTLP's enum value of SpanKind SERVER (the API's SpanKind.SERVER is 1, OTLP's is 2). */
const OTLP_SPAN_KIND_SERVER = 2;

interface OtlpSpan {
  name: string;
  kind: number;
}

/** The spans of an OTLP/JSON ExportTraceServiceRequest. */
function otlpSpans(body: string): OtlpSpan[] {
  const parsed = JSON.parse(body) as { resourceSpans: { scopeSpans: { spans: OtlpSpan[] }[] }[] };
  return parsed.resourceSpans.flatMap((r) => r.scopeSpans.flatMap((s) => s.spans));
}

/** The samples of metric `name` in a Prometheus text exposition. */
function prometheusSeries(
  text: string,
  name: string,
): { labels: Record<string, string>; value: number }[] {
  const samples: { labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const labels: Record<string, string> = {};
    for (const [, key, value] of (match[2] ?? '').matchAll(
      /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g,
    ))
      labels[key!] = value!;
    samples.push({ labels, value: Number(match[3]) });
  }
  return samples;
}
