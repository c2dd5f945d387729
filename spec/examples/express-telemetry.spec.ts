import { randomBytes, randomUUID } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { InMemorySpanExporter, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import request from 'supertest';
import { DEFAULT_PROJECT } from '../../examples/express/context';
import { startTelemetry, type AppTelemetry } from '../../examples/express/telemetry';
import { asRole, createRole } from '../support/databases';
import { createExampleApp, type ExampleApp } from '../support/example-app';
import { sleep } from '../../dev/wait';
import { prometheusSeries } from '../support/prometheus-text';
import { closedPort, eventually } from '../support/peers';

const SENTINEL = `S3ntinel-${randomBytes(6).toString('hex')}`;

let spans: InMemorySpanExporter;
let telemetry: AppTelemetry;
let world: ExampleApp;
/** A server in the first cell, and one mapped to a cell whose port is closed. */
let uuid: string;
let unreachableUuid: string;

beforeAll(async () => {
  spans = new InMemorySpanExporter();
  // Before `new Cells()`, as in start.ts: the library takes its meter from the registered provider.
  telemetry = startTelemetry({ env: {}, spanExporters: [spans] });
  const roleUrl = await createRole(`cells_otel_example_${process.pid}`, SENTINEL);
  world = await createExampleApp('otelex', {
    cellCount: 2,
    connectionUrl: asRole(roleUrl, SENTINEL),
    app: { telemetry },
    listen: true,
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

/** POSTs `body` (JSON) to the app, sending it `delayMs` after the headers; resolves to the status. */
async function postWithLateBody(
  path: string,
  body: string,
  headers: Record<string, string>,
  delayMs = 50,
): Promise<number> {
  const req = httpRequest({
    host: '127.0.0.1',
    port: world.http!.port,
    method: 'POST',
    path,
    headers: {
      ...headers,
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
    },
  });
  const response = new Promise<number>((resolve, reject) => {
    req.once('response', (res) => {
      res.resume();
      res.once('end', () => resolve(res.statusCode ?? 0));
    });
    req.once('error', reject);
  });
  req.flushHeaders();
  await sleep(delayMs);
  req.end(body);
  return response;
}

/** The ended spans whose parent is `span`. */
function childrenOf(span: ReadableSpan): ReadableSpan[] {
  const { traceId, spanId } = span.spanContext();
  return spans
    .getFinishedSpans()
    .filter((s) => s.spanContext().traceId === traceId && s.parentSpanContext?.spanId === spanId);
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

  // Needs the library's instrumentation (branch otel).
  it("serves the library's metric families beside the app's", () => {
    for (const family of [
      'typeorm_cells_data_source_opens_total counter',
      'typeorm_cells_data_source_open_duration histogram',
      'typeorm_cells_data_source_count gauge',
      'typeorm_cells_mapping_cache_hits_total counter',
      'db_client_operation_duration histogram',
    ]) {
      expect(text).toContain(`# TYPE ${family}`);
    }
    expect(text).toContain('# UNIT db_client_operation_duration s');
    const reads = prometheusSeries(text, 'db_client_operation_duration_count').filter(
      (c) => c.labels['db_operation_name'] === 'findOneBy',
    );
    expect(reads.map((c) => c.labels['typeorm_cells_cell_uuid'])).toContain(
      world.cells[0]!.mapping.uuid,
    );
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

// These need the library's instrumentation (branch otel): its spans and metrics come from the SDK
// that startTelemetry() registered globally.
describe("the library's spans under the SERVER span", () => {
  it("has the library's CLIENT span of the read as its child, in the server's cell", async () => {
    const parent = traceparent();
    await request(world.app).get(`/servers/${uuid}`).set('traceparent', parent.header).expect(200);
    const server = await serverSpanOf(parent.traceId);
    const read = childrenOf(server).find((s) => s.name === 'findOneBy servers');
    expect(read?.kind).toBe(SpanKind.CLIENT);
    expect(read?.instrumentationScope.name).toBe('typeorm-cells');
    expect(read?.attributes).toMatchObject({
      'db.system.name': 'postgresql',
      'db.operation.name': 'findOneBy',
      'db.collection.name': 'servers',
      'typeorm_cells.cell.uuid': world.cells[0]!.mapping.uuid,
    });
  });

  // The body arrives 50 ms after the headers, so the body parser's callback comes from a socket
  // event; raw-body (under express.json) runs it in the request's async scope, which holds the span.
  it("keeps the request's span through the body parser: a POST's save is its child", async () => {
    const parent = traceparent();
    const status = await postWithLateBody('/servers', JSON.stringify({ name: 'traced-1' }), {
      traceparent: parent.header,
    });
    expect(status).toBe(201);
    const server = await serverSpanOf(parent.traceId);
    expect(server.name).toBe('POST /servers');
    expect(childrenOf(server).map((s) => s.name)).toContain('save servers');
  });

  it('has the scatter-gather of a listing as its child, with one child per cell', async () => {
    const parent = traceparent();
    await request(world.app).get('/servers?limit=5').set('traceparent', parent.header).expect(200);
    const server = await serverSpanOf(parent.traceId);
    const scatter = childrenOf(server).find((s) => s.name === 'typeorm_cells.scatter_gather');
    expect(scatter).toBeDefined();
    const perCell = childrenOf(scatter!).filter(
      (s) => s.name === 'typeorm_cells.scatter_gather.cell',
    );
    expect(perCell.map((s) => s.attributes['typeorm_cells.cell.uuid']).sort()).toEqual(
      expect.arrayContaining(world.cells.map((c) => c.mapping.uuid)),
    );
  });

  it('has the failed library span of a 503 as its child, with the error code', async () => {
    const parent = traceparent();
    await request(world.app)
      .get(`/servers/${unreachableUuid}`)
      .set('traceparent', parent.header)
      .expect(503);
    const server = await serverSpanOf(parent.traceId);
    const failed = childrenOf(server).find((s) => s.status.code === SpanStatusCode.ERROR);
    expect(failed?.instrumentationScope.name).toBe('typeorm-cells');
    expect(failed?.attributes['error.type']).toBe('CELLS_CELL_UNREACHABLE');
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
