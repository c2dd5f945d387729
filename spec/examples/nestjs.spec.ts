import { randomUUID } from 'node:crypto';
import { request as httpRequest, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  Controller,
  Get,
  Injectable,
  Module,
  Res,
  type INestApplication,
  type MiddlewareConsumer,
  type NestMiddleware,
  type NestModule,
} from '@nestjs/common';
import { ExpressAdapter } from '@nestjs/platform-express';
import { FastifyAdapter } from '@nestjs/platform-fastify';
import { Test } from '@nestjs/testing';
import request from 'supertest';
import { CellUnreachableError, Cells, getContext } from '../../lib';
import { CellsContextMiddleware, TargetCell } from '../../lib/nestjs';
import { AppModule } from '../../examples/nestjs/app.module';
import { Server } from '../../examples/express/entities/Server';
import { migrateCell, registerCell } from '../../examples/express/provision';
import { createTestDatabase, rowsIn, type TestDatabase } from '../support/databases';
import { createExampleApp, type ExampleApp } from '../support/example-app';
import { startForwarder, type Forwarder } from '../support/forwarder';

interface ServerBody {
  uuid: string;
  name: string;
  project_id: string;
  cell: { uuid: string; name: string };
}

interface CellEntry {
  uuid: string;
  name: string;
  url: string;
}

let world: ExampleApp;
let farDb: TestDatabase;
let forwarder: Forwarder;
/** Every cell the app can place servers in or list from: cell0, two near cells, one behind the forwarder. */
let cells: CellEntry[];
let far: CellEntry;

beforeAll(async () => {
  world = await createExampleApp('nest', {
    cellSpecs: [
      { name: 'cell0', database: 'cell0' },
      { name: 'nest-a', database: 'a' },
      { name: 'nest-b', database: 'b' },
    ],
  });
  farDb = await createTestDatabase('nest_far');
  await migrateCell(farDb.url);
  forwarder = await startForwarder(farDb.url);
  const farMapping = await registerCell(world.lib, { name: 'nest-far', url: forwarder.url(farDb.url) });
  far = { uuid: farMapping.uuid, name: farMapping.name, url: farDb.url };
  cells = [...world.cells.map((c) => ({ uuid: c.mapping.uuid, name: c.mapping.name, url: c.url })), far];
}, 120_000);

afterAll(async () => {
  // Unreferenced, it would not hold the worker, but it would run (and keep this file's modules) for
  // the rest of the worker's run.
  clearInterval(sharedClient);
  await forwarder?.close();
  await world?.destroy();
  await farDb?.drop();
}, 60_000);

/** A controller that fails after its response has begun, as a stream that loses its cell midway would. */
@Controller('broken-stream')
class BrokenStreamController {
  @Get()
  stream(@Res() response: ServerResponse | { raw: ServerResponse }): never {
    const raw = 'raw' in response ? response.raw : response;
    raw.writeHead(200, { 'content-type': 'text/plain' });
    raw.write('first row\n');
    throw new CellUnreachableError("cell 'x'", 'connection lost postgres://u:sentinel-pw@db/x');
  }
}

/**
 * A middleware that answers through a shared client, as a session store or rate limiter does: it
 * calls `next` from that client's callback, which runs in the client's async context, not the request's.
 */
const queued: Array<() => void> = [];
const sharedClient = setInterval(() => queued.splice(0).forEach((next) => next()), 5);
sharedClient.unref();
@Injectable()
class SharedClientMiddleware implements NestMiddleware {
  use(_request: unknown, _response: unknown, next: () => void): void {
    queued.push(next);
  }
}

@Controller('probe')
class ProbeController {
  @Get()
  probe(): { requestId: string } {
    return { requestId: getContext().requestId };
  }
}

@Controller('probe-cell')
class ProbeCellController {
  @Get(':cell')
  @TargetCell('cell')
  probe(): { cellUuid: string | null } {
    return { cellUuid: getContext().cellUuid };
  }
}

@Module({ controllers: [BrokenStreamController, ProbeController, ProbeCellController] })
class TestRoutesModule implements NestModule {
  configure(consumer: MiddlewareConsumer): void {
    consumer.apply(CellsContextMiddleware, SharedClientMiddleware).forRoutes(ProbeController);
  }
}

function project(): string {
  return `p-${randomUUID().slice(0, 8)}`;
}

async function rowsOfProject(url: string, projectId: string): Promise<string[]> {
  const rows = await rowsIn<{ uuid: string }>(url, 'SELECT uuid FROM servers WHERE project_id = $1', [projectId]);
  return rows.map((r) => r.uuid).sort();
}

/** Runs `tasks` with at most `limit` running at once. */
async function bounded<T>(count: number, limit: number, task: (i: number) => Promise<T>): Promise<T[]> {
  const results: T[] = new Array<T>(count);
  let next = 0;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < count) {
        const i = next++;
        results[i] = await task(i);
      }
    }),
  );
  return results;
}

describe.each(['express', 'fastify'] as const)('the NestJS example app under the %s adapter', (adapter) => {
  let app: INestApplication;
  let lib: Cells;
  const logged: string[] = [];
  const logger = {
    log: () => undefined,
    warn: () => undefined,
    error: (message: unknown) => void logged.push(String(message)),
  };

  beforeAll(async () => {
    const moduleRef = await Test.createTestingModule({
      imports: [
        AppModule.register({
          cells: { api: { url: world.apiUrl, poolSize: 4 }, entities: [Server], poolSize: 3, connectTimeoutMs: 2000 },
          listTimeoutMs: 2000,
        }),
        TestRoutesModule,
      ],
    }).compile();
    app = moduleRef.createNestApplication(adapter === 'express' ? new ExpressAdapter() : new FastifyAdapter(), { logger });
    await app.init();
    await app.listen(0, '127.0.0.1');
    if (adapter === 'fastify') await (app.getHttpAdapter().getInstance() as { ready(): Promise<void> }).ready();
    lib = app.get(Cells);
  }, 60_000);

  afterAll(async () => {
    await app?.close();
  });

  function api() {
    return request(app.getHttpServer());
  }

  async function post(name: string, projectId: string, query = ''): Promise<ServerBody> {
    const res = await api().post(`/servers${query}`).set('x-project-id', projectId).send({ name });
    expect(res.status).toBe(201);
    return (res.body as { server: ServerBody }).server;
  }

  it('places a server in one cell, maps it there, and answers 201 with its location', async () => {
    const p = project();
    const res = await api().post('/servers').set('x-project-id', p).send({ name: 'web-1' }).expect(201);
    const server = (res.body as { server: ServerBody }).server;
    expect(res.headers['location']).toBe(`/servers/${server.uuid}`);
    expect(server.cell.uuid).not.toBe(cells[0]!.uuid);
    for (const cell of cells) expect(await rowsOfProject(cell.url, p)).toEqual(cell.uuid === server.cell.uuid ? [server.uuid] : []);
    const mapped = await rowsIn<{ cell: string }>(
      world.api.url,
      'SELECT c.uuid AS cell FROM instance_mappings m JOIN cell_mappings c ON c.id = m.cell_id WHERE m.instance_uuid = $1',
      [server.uuid],
    );
    expect(mapped).toEqual([{ cell: server.cell.uuid }]);
  });

  it('keeps the request context for a body that arrives in two packets', async () => {
    const p = project();
    const server = await new Promise<ServerBody>((resolve, reject) => {
      const { port } = app.getHttpServer().address() as AddressInfo;
      const req = httpRequest(
        { port, host: '127.0.0.1', method: 'POST', path: '/servers', headers: { 'content-type': 'application/json', 'content-length': '17', 'x-project-id': p } },
        (res) => {
          let text = '';
          res.on('data', (chunk: Buffer) => (text += chunk.toString()));
          res.on('end', () => (res.statusCode === 201 ? resolve((JSON.parse(text) as { server: ServerBody }).server) : reject(new Error(`${res.statusCode} ${text}`))));
        },
      );
      req.on('error', reject);
      req.flushHeaders();
      req.write('{"name":');
      setTimeout(() => req.end('"slow-1"}'), 100);
    });
    expect(server).toMatchObject({ name: 'slow-1', project_id: p });
  });

  it('runs the handler in the request context when a later middleware calls next from elsewhere', async () => {
    const res = await api().get('/probe').set('x-request-id', 'probe-1').expect(200);
    expect(res.body).toEqual({ requestId: 'probe-1' });
  });

  it('targets the cell named by a route parameter with @TargetCell', async () => {
    const res = await api().get('/probe-cell/nest-b').expect(200);
    expect(res.body).toEqual({ cellUuid: cells[2]!.uuid });
  });

  it('answers 404 CELLS_UNKNOWN_CELL for a cell no mapping names', async () => {
    const res = await api().get('/probe-cell/no-such-cell').expect(404);
    expect(res.body).toMatchObject({ code: 'CELLS_UNKNOWN_CELL' });
  });

  it('answers 400 BAD_PROJECT_ID for a new server without x-project-id', async () => {
    const res = await api().post('/servers').send({ name: 'nobody' }).expect(400);
    expect(res.body).toMatchObject({ statusCode: 400, code: 'BAD_PROJECT_ID' });
  });

  it('places a server in the cell named by ?cell=', async () => {
    const server = await post('named', project(), '?cell=nest-b');
    expect(server.cell.name).toBe('nest-b');
  });

  it('reads a server by uuid from its cell through the injected routed repository', async () => {
    const p = project();
    const created = await post('db-1', p, '?cell=nest-a');
    const res = await api().get(`/servers/${created.uuid}`).set('x-project-id', p).expect(200);
    expect((res.body as { server: ServerBody }).server).toMatchObject({ uuid: created.uuid, name: 'db-1', cell: { name: 'nest-a' } });
  });

  it('echoes the request id and opens the context from the headers', async () => {
    const res = await api().get('/servers').set('x-request-id', 'req-nest-1').set('x-project-id', project()).expect(200);
    expect(res.headers['x-request-id']).toBe('req-nest-1');
  });

  it('lists servers across cells with scatter-gather and no unreachable cell', async () => {
    const p = project();
    const created = [await post('l-1', p), await post('l-2', p), await post('l-3', p)];
    const res = await api().get('/servers?limit=10').set('x-project-id', p).expect(200);
    const page = res.body as { servers: ServerBody[]; unreachable_cells: unknown[] };
    expect(page.unreachable_cells).toEqual([]);
    expect(page.servers.map((s) => s.uuid).sort()).toEqual(created.map((s) => s.uuid).sort());
  });

  it('answers 404 CELLS_UNKNOWN_INSTANCE for an instance no mapping names', async () => {
    const res = await api().get(`/servers/${randomUUID()}`).expect(404);
    expect(res.body).toMatchObject({ statusCode: 404, code: 'CELLS_UNKNOWN_INSTANCE', requestId: expect.any(String) });
  });

  it('answers 400 for a malformed instance uuid', async () => {
    const res = await api().get('/servers/not-a-uuid').expect(400);
    expect(res.body).toMatchObject({ code: 'CELLS_INVALID_ARGUMENT' });
  });

  it('soft-deletes a server in its cell', async () => {
    const p = project();
    const created = await post('gone', p, '?cell=nest-b');
    await api().delete(`/servers/${created.uuid}`).set('x-project-id', p).expect(204);
    const rows = await rowsIn<{ deleted: boolean }>(cells[2]!.url, 'SELECT deleted_at IS NOT NULL AS deleted FROM servers WHERE uuid = $1', [
      created.uuid,
    ]);
    expect(rows).toEqual([{ deleted: true }]);
    await api().get(`/servers/${created.uuid}`).set('x-project-id', p).expect(404);
  });

  it.each([
    // Node sends an array value as one header line per element.
    ['a request id sent twice', (r: request.Test) => r.set('x-request-id', ['a', 'b'] as unknown as string), /x-request-id header was sent 2 times/],
    ['a project id sent twice', (r: request.Test) => r.set('x-project-id', ['p1', 'p2'] as unknown as string), /x-project-id header was sent 2 times/],
    ['a project id with a comma', (r: request.Test) => r.set('x-project-id', 'p1,p2'), /x-project-id header holds a comma/],
    ['a request id with a tab', (r: request.Test) => r.set('x-request-id', 'a\tb'), /x-request-id header holds a comma or a control/],
  ])('answers 400 CELLS_INVALID_HEADER for %s', async (_what, send, message) => {
    const res = await send(api().get('/servers'));
    expect(res.status).toBe(400);
    expect(res.body).toMatchObject({ statusCode: 400, code: 'CELLS_INVALID_HEADER' });
    expect((res.body as { message: string }).message).toMatch(message);
  });

  it('destroys the connection when a library error comes after the response has begun', async () => {
    const before = logged.length;
    await expect(api().get('/broken-stream')).rejects.toThrow(/aborted|socket hang up|ECONNRESET/);
    const lines = logged.slice(before).join('\n');
    expect(lines).toMatch(/response cut after its headers were sent: CellUnreachableError/);
    expect(lines).not.toContain('sentinel-pw');
  });

  describe('with one cell unreachable', () => {
    let p: string;
    let onFar: ServerBody;
    let onNear: ServerBody;

    beforeAll(async () => {
      p = project();
      onFar = await post('far-1', p, '?cell=nest-far');
      onNear = await post('near-1', p, '?cell=nest-a');
      await forwarder.cut();
    });
    afterAll(async () => {
      await forwarder.restore();
      lib.evictCell(far.uuid);
    });

    it('lists the other cells and names it in unreachable_cells', async () => {
      const res = await api().get('/servers?limit=1000').set('x-project-id', p).expect(200);
      const page = res.body as { servers: ServerBody[]; unreachable_cells: unknown[] };
      expect(page.unreachable_cells).toEqual([{ uuid: far.uuid, name: far.name }]);
      expect(page.servers.map((s) => s.uuid)).toEqual([onNear.uuid]);
    });

    it('answers 503 CELLS_CELL_UNREACHABLE for a server in it, without its connection string', async () => {
      lib.evictCell(far.uuid);
      const res = await api().get(`/servers/${onFar.uuid}`).set('x-project-id', p).expect(503);
      expect(res.body).toMatchObject({ statusCode: 503, code: 'CELLS_CELL_UNREACHABLE' });
      expect(res.text).not.toMatch(/postgres:\/\//);
    });
  });

  it('routes 1,000 concurrent requests (50 at a time) with no row in the wrong cell', async () => {
    const p = project();
    const created = await bounded(1000, 50, async (i) => {
      const server = await post(`c-${i}`, p);
      const res = await api().get(`/servers/${server.uuid}`).set('x-project-id', p).expect(200);
      expect((res.body as { server: ServerBody }).server.cell.uuid).toBe(server.cell.uuid);
      return server;
    });
    let misrouted = 0;
    let total = 0;
    for (const cell of cells) {
      const expected = created.filter((s) => s.cell.uuid === cell.uuid).map((s) => s.uuid).sort();
      const actual = await rowsOfProject(cell.url, p);
      total += actual.length;
      misrouted += actual.filter((uuid) => !expected.includes(uuid)).length;
      expect(actual).toEqual(expected);
    }
    expect(misrouted).toBe(0);
    expect(total).toBe(1000);
  }, 120_000);

  it('destroys Cells on app.close()', async () => {
    await app.close();
    expect(lib.toJSON()).toMatchObject({ state: 'destroyed' });
  });
});
