import { randomBytes, randomUUID } from 'node:crypto';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { SpanKind, SpanStatusCode, metrics, trace } from '@opentelemetry/api';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { CellUnreachableError, Cells, DidNotRespond, RaisedError, RequestContext, runWithContext, targetCell, type CellMapping } from '../lib';
import { createCellWorld, widgetFor, type CellWorld } from './support/cells';
import { adminQuery, asRole, createRole, testServerUrl } from './support/databases';
import { closedPort, eventually } from './support/peers';
import { createTestSdk, enableContext, exportedText, pointsOf, renderTrace, type TestSdk } from './support/telemetry';
import { Widget } from './support/widget';
import { REPO_ROOT } from '../dev/repo-root';
import { sleep } from '../dev/wait';
import { dbStatusCode, errorType } from '../lib/telemetry-attributes';

const SENTINEL = `S3ntinel-${randomBytes(6).toString('hex')}`;

let sdk: TestSdk;
let disableContext: () => void;
let world: CellWorld;

beforeAll(async () => {
  disableContext = enableContext();
  sdk = createTestSdk();
  // A role whose password is the sentinel, so the cells log in with it on a server that asks for
  // passwords (the embedded one) as on one that trusts 127.0.0.1.
  const roleUrl = await createRole(`cells_otel_${process.pid}`, SENTINEL);
  world = await createCellWorld('otel', {
    cellCount: 3,
    connectionUrl: asRole(roleUrl, SENTINEL),
    cells: {
      // Long enough for 120 concurrent calls on pools of 3 on a loaded machine; the busy test waits it out.
      acquireTimeoutMs: 1500,
      telemetry: { tracerProvider: sdk.tracerProvider, meterProvider: sdk.meterProvider },
    },
  });
});
afterAll(async () => {
  await world?.destroy();
  await sdk?.shutdown();
  disableContext?.();
});

function cell(i: number): CellMapping {
  return world.cells[i]!.mapping;
}

function byName(spans: readonly ReadableSpan[], name: string): ReadableSpan[] {
  return spans.filter((s) => s.name === name);
}

function parentOf(span: ReadableSpan): string | undefined {
  return span.parentSpanContext?.spanId;
}

/** Ends the sleeps a test left running in the cells. */
async function endSleeps(): Promise<void> {
  await adminQuery(
    `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = ANY($1) AND query LIKE 'SELECT pg_sleep%'`,
    [world.cells.map((c) => c.db.name)],
  );
}

describe('traces', () => {
  it('makes the spans of a request that targets two cells one trace, with the open of each cell as a child of its first call', async () => {
    sdk.exporter.reset();
    const widgets = world.lib.getRepository(Widget);
    const tracer = sdk.tracerProvider.getTracer('spec');
    const [a, b] = [cell(0), cell(1)];
    const saved = widgetFor(a.uuid);
    await runWithContext(new RequestContext({ requestId: 'r-1' }), () =>
      tracer.startActiveSpan('GET /servers', async (request) => {
        await targetCell(a, () => widgets.save(widgets.create(saved)));
        await targetCell(a, () => widgets.findOneBy({ uuid: saved.uuid! }));
        await targetCell(b, () => widgets.createQueryBuilder('w').where('w.uuid = :u', { u: saved.uuid }).getMany());
        request.end();
      }),
    );
    const spans = sdk.spans();
    if (process.env.CELLS_PRINT_TRACE === '1') process.stdout.write(`\n${renderTrace(spans)}\n`);
    const root = byName(spans, 'GET /servers')[0]!;
    expect(new Set(spans.map((s) => s.spanContext().traceId))).toEqual(new Set([root.spanContext().traceId]));

    const save = byName(spans, 'save widgets')[0]!;
    const find = byName(spans, 'findOneBy widgets')[0]!;
    const built = byName(spans, 'getMany widgets')[0]!;
    for (const [span, target] of [[save, a], [find, a], [built, b]] as const) {
      expect(parentOf(span)).toBe(root.spanContext().spanId);
      expect(span.kind).toBe(SpanKind.CLIENT);
      expect(span.attributes).toMatchObject({
        'db.system.name': 'postgresql',
        'db.namespace': world.cells.find((c) => c.mapping.uuid === target.uuid)!.db.name,
        'db.collection.name': 'widgets',
        'server.address': '127.0.0.1',
        'typeorm_cells.cell.uuid': target.uuid,
        'typeorm_cells.cell.name': target.name,
      });
      expect(typeof span.attributes['server.port']).toBe('number');
    }
    expect(find.attributes['db.operation.name']).toBe('findOneBy');

    // Opened on first use only: one open per cell, under the call that opened it.
    const opens = byName(spans, 'typeorm_cells.open');
    expect(opens.map((o) => o.attributes['typeorm_cells.cell.uuid']).sort()).toEqual([a.uuid, b.uuid].sort());
    expect(parentOf(opens.find((o) => o.attributes['typeorm_cells.cell.uuid'] === a.uuid)!)).toBe(save.spanContext().spanId);
    expect(parentOf(opens.find((o) => o.attributes['typeorm_cells.cell.uuid'] === b.uuid)!)).toBe(built.spanContext().spanId);
  });

  it('traces a scatter-gather with one child per cell and its outcome, the cells\' calls under their child', async () => {
    sdk.exporter.reset();
    const widgets = world.lib.getRepository(Widget);
    const [ok, raising, hung] = [cell(0), cell(1), cell(2)];
    try {
      const results = await world.lib.scatterGather(
        [ok, raising, hung],
        async (target) => {
          if (target.uuid === raising.uuid) throw new Error('no such thing');
          if (target.uuid === hung.uuid) await widgets.query('SELECT pg_sleep(10)');
          return widgets.count();
        },
        { timeoutMs: 700 },
      );
      expect(results.get(raising.uuid)).toBeInstanceOf(RaisedError);
      expect(results.get(hung.uuid)).toBeInstanceOf(DidNotRespond);
    } finally {
      await endSleeps();
    }
    // The hung call's span ends once its backend is gone: before the next test resets the exporter.
    await eventually(() => sdk.spans().some((s) => s.name === 'query widgets' && s.attributes['typeorm_cells.cell.uuid'] === hung.uuid), 5000);
    const spans = sdk.spans();
    const gather = byName(spans, 'typeorm_cells.scatter_gather')[0]!;
    const children = byName(spans, 'typeorm_cells.scatter_gather.cell');
    expect(children.map(parentOf)).toEqual([gather.spanContext().spanId, gather.spanContext().spanId, gather.spanContext().spanId]);
    const outcome = (uuid: string) => children.find((c) => c.attributes['typeorm_cells.cell.uuid'] === uuid)!;
    expect(outcome(ok.uuid).attributes['typeorm_cells.outcome']).toBe('ok');
    expect(outcome(raising.uuid).attributes).toMatchObject({ 'typeorm_cells.outcome': 'raised', 'error.type': 'Error' });
    expect(outcome(raising.uuid).status).toEqual({ code: SpanStatusCode.ERROR, message: 'no such thing' });
    expect(outcome(hung.uuid).attributes['typeorm_cells.outcome']).toBe('did-not-respond');
    const count = byName(spans, 'count widgets')[0]!;
    expect(parentOf(count)).toBe(outcome(ok.uuid).spanContext().spanId);
  });

  it('records a failed statement with its SQLSTATE, error.type and a status message', async () => {
    sdk.exporter.reset();
    const widgets = world.lib.getRepository(Widget);
    await expect(targetCell(cell(0), () => widgets.query('SELECT * FROM no_such_table'))).rejects.toThrow();
    const span = byName(sdk.spans(), 'query widgets').find((s) => s.attributes['typeorm_cells.cell.uuid'] === cell(0).uuid);
    expect(span!.attributes['db.response.status_code']).toBe('42P01');
    expect(span!.attributes['error.type']).toBe('QueryFailedError');
    expect(span!.status.code).toBe(SpanStatusCode.ERROR);
  });
});

describe('a cell that fails to open', () => {
  it('puts the cell on the call span and its operation-duration point, and no URL anywhere', async () => {
    sdk.exporter.reset();
    const widgets = world.lib.getRepository(Widget);
    const port = await closedPort();
    const down = await world.lib.mappings.createCell({
      name: `otel-unopened-${randomUUID().slice(0, 6)}`,
      databaseConnection: `postgres://postgres:${SENTINEL}@127.0.0.1:${port}/nowhere`,
    });
    await expect(targetCell(down, () => widgets.findOneBy({ uuid: randomUUID() }))).rejects.toMatchObject({ code: 'CELLS_CELL_UNREACHABLE' });

    const span = byName(sdk.spans(), 'findOneBy widgets').find((s) => s.status.code === SpanStatusCode.ERROR);
    expect(span?.attributes).toMatchObject({
      'typeorm_cells.cell.uuid': down.uuid,
      'typeorm_cells.cell.name': down.name,
      'db.system.name': 'postgresql',
      'error.type': 'CELLS_CELL_UNREACHABLE',
    });
    expect(exportedText(span!)).not.toContain(SENTINEL);
    expect(exportedText(span!)).not.toContain('postgres://');
    const point = pointsOf((await sdk.metrics()).get('db.client.operation.duration')).find(
      (p) => p.attributes['typeorm_cells.cell.uuid'] === down.uuid,
    );
    expect(point?.attributes).toEqual({
      'db.system.name': 'postgresql',
      'db.operation.name': 'findOneBy',
      'typeorm_cells.cell.uuid': down.uuid,
      'error.type': 'CELLS_CELL_UNREACHABLE',
    });
  });
});

describe('error attributes', () => {
  it('takes db.response.status_code from a server error only, never from a Node errno or a CellsError code', () => {
    const pg = Object.assign(new Error('relation does not exist'), { code: '42P01', severity: 'ERROR' });
    const mysql = Object.assign(new Error('no such table'), { code: 'ER_NO_SUCH_TABLE', sqlState: '42S02' });
    expect(dbStatusCode(pg)).toBe('42P01');
    expect(dbStatusCode(Object.assign(new Error('failed'), { driverError: mysql }))).toBe('ER_NO_SUCH_TABLE');
    expect(dbStatusCode(Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }))).toBeUndefined();
    expect(dbStatusCode(Object.assign(new Error('odd'), { code: 'ER_LIKE', severity: 'ERROR' }))).toBeUndefined();
    const unreachable = new CellUnreachableError("cell 'x' (uuid)", 'gone', { cause: pg });
    expect(dbStatusCode(unreachable)).toBe('42P01');
    expect(errorType(unreachable)).toBe('CELLS_CELL_UNREACHABLE');
    expect(errorType(new TypeError('x'))).toBe('TypeError');
    expect(errorType('a string')).toBe('_OTHER');
  });
});

describe('metrics', () => {
  it('reports the contract metrics, with their attributes, after many interleaved calls', async () => {
    const widgets = world.lib.getRepository(Widget);
    const calls = Array.from({ length: 120 }, (_, i) => {
      const target = cell(i % 3);
      return runWithContext(new RequestContext(), () =>
        world.lib.targetInstanceCell(randomUUID(), (): unknown => undefined).catch(
          (): Promise<unknown> => targetCell(target, () => (i % 2 === 0 ? widgets.count() : widgets.findOneBy({ uuid: randomUUID() }))),
        ),
      );
    });
    await Promise.all(calls);
    await expect(world.lib.mappings.hostCell(`h-${randomUUID()}.example`)).rejects.toMatchObject({ code: 'CELLS_UNKNOWN_HOST' });
    // One cell of each outcome; the late one only waits in JavaScript, holding no connection.
    await world.lib.scatterGather(
      [cell(0), cell(1), cell(2)],
      async (target) => {
        if (target.uuid === cell(1).uuid) throw new Error('raised on purpose');
        if (target.uuid === cell(2).uuid) await sleep(600);
        return widgets.count();
      },
      { timeoutMs: 300 },
    );
    // A pool of 3 held by 3 sleeps: a fourth call waits past acquireTimeoutMs (1.5 s).
    const sleeps = Array.from({ length: 3 }, () => targetCell(cell(1), () => widgets.query('SELECT pg_sleep(3)')));
    await eventually(async () => {
      const [row] = await adminQuery<{ n: string }>(
        `SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'SELECT pg_sleep%' AND state = 'active'`,
        [world.cells[1]!.db.name],
      );
      return Number(row!.n) === 3;
    }, 5000);
    await expect(targetCell(cell(1), () => widgets.count())).rejects.toMatchObject({ code: 'CELLS_CELL_BUSY' });
    await Promise.all(sleeps);
    world.lib.evictCell(cell(2).uuid);

    const collected = await sdk.metrics();
    const names = [...collected.keys()];
    for (const name of [
      'typeorm_cells.data_source.count',
      'typeorm_cells.data_source.opens',
      'typeorm_cells.data_source.open.duration',
      'typeorm_cells.data_source.evictions',
      'db.client.connection.wait_time',
      'typeorm_cells.pool.busy_errors',
      'typeorm_cells.mapping_cache.hits',
      'typeorm_cells.mapping_cache.misses',
      'typeorm_cells.mapping_cache.loads',
      'typeorm_cells.mapping_listener.up',
      'typeorm_cells.scatter_gather.duration',
      'typeorm_cells.scatter_gather.cell.outcomes',
      'db.client.operation.duration',
    ]) {
      expect(names).toContain(name);
    }
    expect(collected.get('typeorm_cells.data_source.open.duration')!.descriptor.unit).toBe('s');
    const states = pointsOf(collected.get('typeorm_cells.data_source.count')).map((p) => p.attributes['typeorm_cells.data_source.state']);
    expect(states.sort()).toEqual(['draining', 'open', 'opening']);
    const opened = pointsOf(collected.get('typeorm_cells.data_source.opens')).find((p) => p.attributes['typeorm_cells.outcome'] === 'ok');
    expect(opened?.value).toBeGreaterThanOrEqual(3);
    expect(pointsOf(collected.get('typeorm_cells.data_source.evictions'))[0]!.attributes).toEqual({ 'typeorm_cells.eviction.reason': 'delete' });
    expect(pointsOf(collected.get('typeorm_cells.pool.busy_errors'))).toContainEqual({
      attributes: { 'db.client.connection.pool.name': cell(1).uuid },
      value: 1,
    });
    const kinds = pointsOf(collected.get('typeorm_cells.mapping_cache.misses')).map((p) => p.attributes['typeorm_cells.mapping.kind']);
    expect(kinds.sort()).toEqual(['cell', 'host', 'instance']);
    expect(pointsOf(collected.get('typeorm_cells.mapping_listener.up'))).toEqual([{ attributes: {}, value: 1 }]);
    const operations = pointsOf(collected.get('db.client.operation.duration'));
    const findOnCell0 = operations.find(
      (p) => p.attributes['db.operation.name'] === 'findOneBy' && p.attributes['typeorm_cells.cell.uuid'] === cell(0).uuid,
    );
    expect(findOnCell0?.attributes).toEqual({ 'db.system.name': 'postgresql', 'db.operation.name': 'findOneBy', 'typeorm_cells.cell.uuid': cell(0).uuid });
    expect((findOnCell0?.value as { count: number }).count).toBeGreaterThanOrEqual(20);
    const outcomes = pointsOf(collected.get('typeorm_cells.scatter_gather.cell.outcomes')).map((p) => p.attributes['typeorm_cells.outcome']);
    expect(outcomes.sort()).toEqual(['did-not-respond', 'ok', 'raised']);
  });
});

describe('secrets', () => {
  it('exports the sentinel password in no span or metric, also after bad-auth and unreachable cells failed', async () => {
    const widgets = world.lib.getRepository(Widget);
    const port = await closedPort();
    const badRole = await world.lib.mappings.createCell({
      name: `otel-badrole-${randomUUID().slice(0, 6)}`,
      databaseConnection: `postgres://no_such_role_${process.pid}:${SENTINEL}@${new URL(testServerUrl()).host}/postgres`,
    });
    const unreachable = await world.lib.mappings.createCell({
      name: `otel-down-${randomUUID().slice(0, 6)}`,
      databaseConnection: `postgres://postgres:${SENTINEL}@127.0.0.1:${port}/nowhere`,
    });
    for (const bad of [badRole, unreachable]) {
      await expect(targetCell(bad, () => widgets.count())).rejects.toMatchObject({ code: 'CELLS_CELL_UNREACHABLE' });
    }
    const gathered = await world.lib.scatterGather([badRole, unreachable, cell(0)], () => widgets.count());
    expect(gathered.get(badRole.uuid)).toBeInstanceOf(RaisedError);

    const spans = sdk.spans();
    expect(spans.length).toBeGreaterThan(10);
    const failed = spans.filter((s) => s.status.code === SpanStatusCode.ERROR);
    expect(failed.length).toBeGreaterThan(2);
    expect(spans.map(exportedText).filter((text) => text.includes(SENTINEL))).toEqual([]);
    const metricText = JSON.stringify([...(await sdk.metrics()).values()].map((m) => ({ name: m.descriptor.name, points: pointsOf(m) })));
    expect(metricText).toContain('typeorm_cells.cell.uuid');
    expect(metricText).not.toContain(SENTINEL);
  });
});

describe('off', () => {
  it('records nothing with telemetry: false, even with a global SDK, and spans through the globals by default', async () => {
    const global = createTestSdk();
    trace.setGlobalTracerProvider(global.tracerProvider);
    metrics.setGlobalMeterProvider(global.meterProvider);
    const off = new Cells({ api: world.api.url, entities: [Widget], telemetry: false });
    const byDefault = new Cells({ api: world.api.url, entities: [Widget] });
    try {
      await off.initialize();
      await targetCell(cell(0), () => off.getRepository(Widget).count());
      await off.scatterGather([cell(0), cell(1)], () => off.getRepository(Widget).count());
      expect(global.spans()).toEqual([]);
      expect([...(await global.metrics()).keys()]).toEqual([]);

      await byDefault.initialize();
      await targetCell(cell(0), () => byDefault.getRepository(Widget).count());
      expect(global.spans().map((s) => s.name)).toEqual(['typeorm_cells.open', 'count widgets']);
    } finally {
      await Promise.all([off.destroy(), byDefault.destroy()]);
      trace.disable();
      metrics.disable();
      await global.shutdown();
    }
  });

  it('works when @opentelemetry/api cannot be loaded', async () => {
    // A child process whose require of @opentelemetry/api fails, running the built library.
    const hook = `const M=require('module');const r=M._resolveFilename;M._resolveFilename=function(id,...a){if(id==='@opentelemetry/api'||id.startsWith('@opentelemetry/api/')){const e=new Error("Cannot find module '"+id+"'");e.code='MODULE_NOT_FOUND';throw e;}return r.call(this,id,...a);};`;
    const script = `${hook}
      const lib = require(${JSON.stringify(join(REPO_ROOT, 'dist/lib'))});
      const { otelApi } = require(${JSON.stringify(join(REPO_ROOT, 'dist/lib/telemetry'))});
      (async () => {
        const cells = new lib.Cells({ api: process.env.API_URL, entities: [lib.CellMapping] });
        await cells.initialize();
        const repo = cells.getRepository(lib.CellMapping, 'main');
        const uuids = process.env.CELL_UUIDS.split(',');
        const rows = await lib.targetCell(uuids[0], () => repo.query('SELECT 1 AS one'));
        const gathered = await cells.scatterGather(uuids, () => repo.query('SELECT 2 AS two'));
        await cells.destroy();
        console.log(JSON.stringify({ api: otelApi() === undefined ? 'absent' : 'present', one: rows[0].one, cells: gathered.size }));
      })().catch((e) => { console.error(e); process.exit(1); });`;
    const { stdout } = await promisify(execFile)(process.execPath, ['-e', script], {
      cwd: REPO_ROOT,
      env: { ...process.env, API_URL: world.api.url, CELL_UUIDS: world.cells.map((c) => c.mapping.uuid).join(',') },
    });
    expect(JSON.parse(stdout.trim())).toEqual({ api: 'absent', one: 1, cells: 3 });
  });
});
