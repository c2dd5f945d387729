import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import request from 'supertest';
import { APP_ERRORS, LIBRARY_ERROR_STATUS } from '../../examples/express/errors';
import { rowsIn } from '../support/databases';
import { createExampleApp, type ExampleApp, type ExampleCell } from '../support/example-app';

interface ServerBody {
  uuid: string;
  name: string;
  project_id: string;
  status: string;
  created_at: string;
  deleted_at: string | null;
  cell: { uuid: string; name: string };
}

let world: ExampleApp;
// cell0, two cells, a disabled and a draining cell on the test server, and one cell on a second server.
let cell0: ExampleCell;
let near: [ExampleCell, ExampleCell];
let disabled: ExampleCell;
let draining: ExampleCell;
let far: ExampleCell;

beforeAll(async () => {
  world = await createExampleApp('ex', {
    cellSpecs: [
      { name: 'cell0', database: 'cell0' },
      { name: 'ex-a', database: 'a' },
      { name: 'ex-b', database: 'b' },
      { name: 'ex-off', database: 'off', disabled: true },
      { name: 'ex-drain', database: 'drain', state: 'draining' },
      { name: 'ex-far', database: 'far', onSecondServer: true },
    ],
    apiPoolSize: 10, // pg-pool's default, as the app runs with the API database as a URL
    cells: { poolSize: 3, connectTimeoutMs: 2000 },
    listen: true,
  });
  const [c0, a, b, off, drain, f] = world.cells;
  [cell0, near, disabled, draining, far] = [c0!, [a!, b!], off!, drain!, f!];
}, 120_000);
afterAll(async () => {
  await world?.destroy();
}, 60_000);

function api() {
  return request(world.http!.server);
}

function project(): string {
  return `p-${randomUUID().slice(0, 8)}`;
}

function allCells(): ExampleCell[] {
  return [cell0, ...near, disabled, draining, far];
}

async function post(name: string, projectId: string, query = ''): Promise<ServerBody> {
  const res = await api().post(`/servers${query}`).set('x-project-id', projectId).send({ name }).expect(201);
  return (res.body as { server: ServerBody }).server;
}

/** The cell uuid that the API database maps `uuid` to, read with a plain pg client. */
async function mappedCell(uuid: string): Promise<string | null> {
  const rows = await rowsIn<{ cell: string | null }>(
    world.api.url,
    'SELECT c.uuid AS cell FROM instance_mappings m LEFT JOIN cell_mappings c ON c.id = m.cell_id WHERE m.instance_uuid = $1',
    [uuid],
  );
  return rows[0]?.cell ?? null;
}

async function rowsOfProject(cell: ExampleCell, projectId: string): Promise<string[]> {
  const rows = await rowsIn<{ uuid: string }>(cell.url, 'SELECT uuid FROM servers WHERE project_id = $1', [projectId]);
  return rows.map((r) => r.uuid);
}

describe('GET /cells', () => {
  it('lists every cell with its uuid, name and flags but no connection string', async () => {
    const res = await api().get('/cells').expect(200);
    const cells = (res.body as { cells: Array<Record<string, unknown>> }).cells;
    expect(cells.map((c) => c['uuid']).sort()).toEqual(allCells().map((c) => c.mapping.uuid).sort());
    expect(cells.find((c) => c['uuid'] === disabled.mapping.uuid)).toMatchObject({ state: 'disabled', disabled: true, cell0: false });
    expect(cells.find((c) => c['uuid'] === draining.mapping.uuid)).toMatchObject({ state: 'draining', disabled: false });
    expect(cells.find((c) => c['name'] === 'cell0')).toMatchObject({ cell0: true });
    expect(res.text).not.toMatch(/postgres:|databaseConnection|database_connection/i);
    const password = new URL(far.url).password;
    expect(res.text).not.toContain(password);
  });
});

describe('GET /healthz', () => {
  it('reports every cell ok when all answer', async () => {
    const res = await api().get('/healthz').expect(200);
    expect(res.body).toMatchObject({ status: 'ok', api: 'ok' });
    expect((res.body as { cells: Array<{ state: string }> }).cells.every((c) => c.state === 'ok')).toBe(true);
  });
});

describe('POST /servers', () => {
  it('writes the server in one cell and maps it there in the API database', async () => {
    const p = project();
    const server = await post('web-1', p);
    expect(server).toMatchObject({ name: 'web-1', project_id: p, status: 'ACTIVE', deleted_at: null });
    expect(await mappedCell(server.uuid)).toBe(server.cell.uuid);
    for (const cell of allCells()) {
      const here = await rowsOfProject(cell, p);
      expect(here).toEqual(cell.mapping.uuid === server.cell.uuid ? [server.uuid] : []);
    }
  });

  it('answers 201 with a Location header', async () => {
    const res = await api().post('/servers').send({ name: 'loc' }).expect(201);
    expect(res.headers['location']).toBe(`/servers/${(res.body as { server: ServerBody }).server.uuid}`);
  });

  it('spreads servers round-robin over the active cells other than cell0 (not draining, not disabled)', async () => {
    const p = project();
    const placed = [];
    for (let i = 0; i < 6; i++) placed.push((await post(`rr-${i}`, p)).cell.uuid);
    const enabled = [near[0], near[1], far].map((c) => c.mapping.uuid).sort();
    expect([...new Set(placed)].sort()).toEqual(enabled);
    expect(placed).not.toContain(cell0.mapping.uuid);
    expect(placed).not.toContain(disabled.mapping.uuid);
    expect(placed).not.toContain(draining.mapping.uuid);
  });

  it('places the server in the cell named by ?cell=<name> or ?cell=<uuid>', async () => {
    const p = project();
    const byName = await post('named', p, `?cell=${near[1].mapping.name}`);
    const byUuid = await post('by-uuid', p, `?cell=${near[0].mapping.uuid}`);
    expect(byName.cell.uuid).toBe(near[1].mapping.uuid);
    expect(byUuid.cell.uuid).toBe(near[0].mapping.uuid);
    expect(await rowsOfProject(near[1], p)).toEqual([byName.uuid]);
  });

  it.each([
    ['an unknown cell', '?cell=no-such-cell', 'CELLS_UNKNOWN_CELL'],
    ['cell0', '?cell=cell0', 'BAD_CELL'],
    ['a disabled cell', `?cell=ex-off`, 'BAD_CELL'],
    ['a draining cell', `?cell=ex-drain`, 'BAD_CELL'],
    ['a repeated cell', '?cell=a&cell=b', 'BAD_CELL'],
  ])('refuses %s with 400', async (_what, query, code) => {
    const res = await api().post(`/servers${query}`).send({ name: 'x' }).expect(400);
    expect(res.body).toMatchObject({ error: { status: 400, code } });
  });

  it.each([
    ['malformed JSON', '{"name":', 'BAD_REQUEST_BODY'],
    ['a missing name', '{}', 'BAD_NAME'],
    ['an empty name', '{"name":"  "}', 'BAD_NAME'],
    ['a name that is not a string', '{"name":42}', 'BAD_NAME'],
    ['a name of 256 characters', JSON.stringify({ name: 'n'.repeat(256) }), 'BAD_NAME'],
    ['a name with a lone surrogate', '{"name":"a\\ud800"}', 'BAD_NAME'],
    ['a JSON array', '[{"name":"x"}]', 'BAD_BODY'],
  ])('answers 400 for %s', async (_what, body, code) => {
    const res = await api().post('/servers').set('content-type', 'application/json').send(body).expect(400);
    expect(res.body).toMatchObject({ error: { status: 400, code } });
  });

  it('answers 400 for a body that is not JSON', async () => {
    const res = await api().post('/servers').set('content-type', 'text/plain').send('name=x').expect(400);
    expect(res.body).toMatchObject({ error: { code: 'BAD_BODY' } });
  });

  it('accepts a name of 255 characters', async () => {
    const server = await post('n'.repeat(255), project());
    expect(server.name).toHaveLength(255);
  });

  it('leaves no mapping behind when the cell write fails, and answers 500 without details', async () => {
    const broken = await world.lib.mappings.createCell({ name: 'ex-broken', databaseConnection: world.api.url });
    try {
      const before = world.logged.length;
      const res = await api().post('/servers?cell=ex-broken').send({ name: 'doomed' }).expect(500);
      expect(res.body).toEqual({
        error: { status: 500, code: 'INTERNAL', message: 'Internal server error.', request_id: expect.any(String) },
      });
      expect(res.text).not.toMatch(/relation|servers|at .*\.js|postgres:/);
      expect(world.logged.length).toBeGreaterThan(before);
      const mapped = await rowsIn(world.api.url, 'SELECT 1 FROM instance_mappings WHERE cell_id = $1', [broken.id]);
      expect(mapped).toHaveLength(0);
    } finally {
      await world.lib.mappings.deleteCell(broken.uuid, { force: true });
      world.lib.evictCell(broken.uuid);
    }
  });

  it('rolls the cell write back when the mapping write fails', async () => {
    const p = project();
    await rowsIn(
      world.api.url,
      `CREATE FUNCTION refuse_${p.replace('-', '_')}() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN IF NEW.project_id = '${p}' THEN RAISE EXCEPTION 'mapping refused'; END IF; RETURN NEW; END $$`,
    );
    await rowsIn(
      world.api.url,
      `CREATE TRIGGER refuse_${p.replace('-', '_')} BEFORE INSERT ON instance_mappings
       FOR EACH ROW EXECUTE FUNCTION refuse_${p.replace('-', '_')}()`,
    );
    try {
      await api().post('/servers').set('x-project-id', p).send({ name: 'unmapped' }).expect(500);
      for (const cell of allCells()) expect(await rowsOfProject(cell, p)).toEqual([]);
    } finally {
      await rowsIn(world.api.url, `DROP TRIGGER refuse_${p.replace('-', '_')} ON instance_mappings`);
    }
  });
});

describe('GET /servers/:uuid', () => {
  it('reads the server from the cell its mapping names', async () => {
    const p = project();
    const created = await post('get-me', p, `?cell=${near[1].mapping.name}`);
    const res = await api().get(`/servers/${created.uuid}`).set('x-project-id', p).expect(200);
    expect((res.body as { server: ServerBody }).server).toEqual(created);
  });

  it('answers 404 for an unknown server', async () => {
    const res = await api().get(`/servers/${randomUUID()}`).expect(404);
    expect(res.body).toMatchObject({ error: { status: 404, code: 'CELLS_UNKNOWN_INSTANCE' } });
  });

  it('answers 400 for a malformed uuid', async () => {
    const res = await api().get('/servers/not-a-uuid').expect(400);
    expect(res.body).toMatchObject({ error: { code: 'BAD_UUID' } });
  });

  it.each([
    ['GET', '/servers/%zz'],
    ['DELETE', '/servers/%E0%A4%A'],
  ])('answers 400 BAD_PATH for a malformed percent-escape in %s %s', async (method, path) => {
    const res = await (method === 'GET' ? api().get(path) : api().delete(path)).expect(400);
    expect(res.body).toMatchObject({ error: { status: 400, code: 'BAD_PATH' } });
  });

  it("hides another project's server from non-admins but not from admins", async () => {
    const created = await post('private', project());
    await api().get(`/servers/${created.uuid}`).set('x-project-id', project()).expect(404);
    await api().get(`/servers/${created.uuid}`).set('x-project-id', project()).set('x-roles', 'reader, admin').expect(200);
  });

  it('keeps the request context through async handlers (request id and project)', async () => {
    const res = await api().get(`/servers/${randomUUID()}`).set('x-request-id', 'trace-42').expect(404);
    expect(res.headers['x-request-id']).toBe('trace-42');
    expect(res.body).toMatchObject({ error: { request_id: 'trace-42' } });
    const p = project();
    const created = await post('ctx', p);
    const rows = await rowsIn<{ project_id: string }>(
      allCells().find((c) => c.mapping.uuid === created.cell.uuid)!.url,
      'SELECT project_id FROM servers WHERE uuid = $1',
      [created.uuid],
    );
    expect(rows).toEqual([{ project_id: p }]);
  });

  it('replaces an unusable x-request-id with a random one', async () => {
    const res = await api().get('/cells').set('x-request-id', 'bad id <script>').expect(200);
    expect(res.headers['x-request-id']).toMatch(/^req-[0-9a-f-]{36}$/);
  });
});

describe('DELETE /servers/:uuid and read_deleted', () => {
  it('soft-deletes: the server reads as 404, the row stays with deleted_at set', async () => {
    const p = project();
    const created = await post('to-delete', p);
    await api().delete(`/servers/${created.uuid}`).set('x-project-id', p).expect(204);
    await api().get(`/servers/${created.uuid}`).set('x-project-id', p).expect(404);
    const cell = allCells().find((c) => c.mapping.uuid === created.cell.uuid)!;
    const rows = await rowsIn<{ deleted_at: Date | null }>(cell.url, 'SELECT deleted_at FROM servers WHERE uuid = $1', [created.uuid]);
    expect(rows[0]?.deleted_at).toBeInstanceOf(Date);
    const mapping = await rowsIn(world.api.url, 'SELECT queued_for_delete FROM instance_mappings WHERE instance_uuid = $1', [created.uuid]);
    expect(mapping).toEqual([{ queued_for_delete: true }]);
  });

  it('answers 503 CELLS_CELL_READ_ONLY to a delete in a read-only cell, and still reads the server; 503 CELLS_CELL_DISABLED once disabled', async () => {
    const p = project();
    const created = await post('kept', p, `?cell=${near[0].mapping.name}`);
    await world.lib.mappings.setCellState(near[0].mapping.uuid, 'read-only');
    try {
      const refused = await api().delete(`/servers/${created.uuid}`).set('x-project-id', p).expect(503);
      expect(refused.body).toMatchObject({ error: { status: 503, code: 'CELLS_CELL_READ_ONLY' } });
      await api().get(`/servers/${created.uuid}`).set('x-project-id', p).expect(200);
      const mapping = await rowsIn(world.api.url, 'SELECT queued_for_delete FROM instance_mappings WHERE instance_uuid = $1', [created.uuid]);
      expect(mapping).toEqual([{ queued_for_delete: false }]);
      await world.lib.mappings.setCellState(near[0].mapping.uuid, 'disabled');
      const disabledRead = await api().get(`/servers/${created.uuid}`).set('x-project-id', p).expect(503);
      expect(disabledRead.body).toMatchObject({ error: { status: 503, code: 'CELLS_CELL_DISABLED' } });
    } finally {
      await world.lib.mappings.setCellState(near[0].mapping.uuid, 'active');
    }
  });

  it('shows a deleted server to admins with read_deleted=yes or only', async () => {
    const p = project();
    const created = await post('gone', p);
    await api().delete(`/servers/${created.uuid}`).set('x-project-id', p).expect(204);
    for (const mode of ['yes', 'only']) {
      const res = await api().get(`/servers/${created.uuid}?read_deleted=${mode}`).set('x-roles', 'admin').expect(200);
      expect((res.body as { server: ServerBody }).server).toMatchObject({ status: 'DELETED', deleted_at: expect.any(String) });
    }
  });

  it('answers 403 to non-admins asking for deleted servers', async () => {
    for (const mode of ['yes', 'only']) {
      const res = await api().get(`/servers?read_deleted=${mode}`).expect(403);
      expect(res.body).toMatchObject({ error: { status: 403, code: 'FORBIDDEN' } });
    }
    await api().get('/servers?read_deleted=no&limit=1').expect(200);
  });

  it('answers 400 for an unknown read_deleted mode', async () => {
    const res = await api().get('/servers?read_deleted=maybe').set('x-roles', 'admin').expect(400);
    expect(res.body).toMatchObject({ error: { code: 'BAD_READ_DELETED' } });
  });

  it('lists only deleted servers with read_deleted=only, live and deleted with yes', async () => {
    const p = project();
    const live = await post('live', p);
    const dead = await post('dead', p);
    await api().delete(`/servers/${dead.uuid}`).set('x-project-id', p).expect(204);
    const uuids = async (mode: string) => {
      const res = await api().get(`/servers?read_deleted=${mode}&limit=1000`).set('x-roles', 'admin').expect(200);
      return (res.body as { servers: ServerBody[] }).servers.filter((s) => s.project_id === p).map((s) => s.uuid);
    };
    expect(await uuids('only')).toEqual([dead.uuid]);
    expect((await uuids('yes')).sort()).toEqual([live.uuid, dead.uuid].sort());
    expect(await uuids('no')).toEqual([live.uuid]);
  });

  it('answers 404 when deleting twice, an unknown server, or another project', async () => {
    const p = project();
    const created = await post('once', p);
    await api().delete(`/servers/${created.uuid}`).set('x-project-id', project()).expect(404);
    await api().delete(`/servers/${created.uuid}`).set('x-project-id', p).expect(204);
    await api().delete(`/servers/${created.uuid}`).set('x-project-id', p).expect(404);
    await api().delete(`/servers/${randomUUID()}`).expect(404);
    await api().delete('/servers/nope').expect(400);
  });
});

describe('GET /servers', () => {
  it('lists newest first across cells and pages with limit and marker', async () => {
    const p = project();
    const created: ServerBody[] = [];
    for (let i = 0; i < 12; i++) created.push(await post(`page-${i}`, p));
    expect(new Set(created.map((s) => s.cell.uuid)).size).toBeGreaterThan(1);
    const seen: ServerBody[] = [];
    let marker: string | null = null;
    const sizes: number[] = [];
    do {
      const query: string = `/servers?limit=5${marker ? `&marker=${marker}` : ''}`;
      const res = await api().get(query).set('x-project-id', p).expect(200);
      const page = res.body as { servers: ServerBody[]; next_marker: string | null; unreachable_cells: unknown[] };
      expect(page.unreachable_cells).toEqual([]);
      sizes.push(page.servers.length);
      seen.push(...page.servers);
      marker = page.next_marker;
    } while (marker !== null);
    expect(sizes).toEqual([5, 5, 2]);
    expect(seen.map((s) => s.uuid)).toEqual([...created].reverse().map((s) => s.uuid));
  });

  it('orders servers created in the same millisecond by uuid, without repeats across pages', async () => {
    const p = project();
    await Promise.all(Array.from({ length: 20 }, (_, i) => post(`same-${i}`, p)));
    const all: string[] = [];
    let marker: string | null = null;
    do {
      const res = await api().get(`/servers?limit=3${marker ? `&marker=${marker}` : ''}`).set('x-project-id', p).expect(200);
      const page = res.body as { servers: ServerBody[]; next_marker: string | null };
      all.push(...page.servers.map((s) => s.uuid));
      marker = page.next_marker;
    } while (marker !== null);
    expect(all).toHaveLength(20);
    expect(new Set(all).size).toBe(20);
  });

  it('gives a full last page no next_marker', async () => {
    const p = project();
    for (let i = 0; i < 4; i++) await post(`full-${i}`, p);
    const first = await api().get('/servers?limit=2').set('x-project-id', p).expect(200);
    const firstPage = first.body as { servers: ServerBody[]; next_marker: string | null };
    expect(firstPage.next_marker).toBe(firstPage.servers[1]?.uuid);
    const last = await api().get(`/servers?limit=2&marker=${firstPage.next_marker}`).set('x-project-id', p).expect(200);
    expect(last.body).toMatchObject({ next_marker: null });
    expect((last.body as { servers: unknown[] }).servers).toHaveLength(2);
  });

  it('returns 25 servers by default and at most 1000', async () => {
    const p = project();
    await Promise.all(Array.from({ length: 27 }, (_, i) => post(`many-${i}`, p)));
    const res = await api().get('/servers').set('x-project-id', p).expect(200);
    expect((res.body as { servers: unknown[] }).servers).toHaveLength(25);
    const big = await api().get('/servers?limit=1000').set('x-project-id', p).expect(200);
    expect(big.body).toMatchObject({ next_marker: null });
    expect((big.body as { servers: unknown[] }).servers).toHaveLength(27);
  });

  it("lists only the caller's project unless the caller is an admin", async () => {
    const [p, q] = [project(), project()];
    const mine = await post('mine', p);
    const theirs = await post('theirs', q);
    const res = await api().get('/servers?limit=1000').set('x-project-id', p).expect(200);
    const uuids = (res.body as { servers: ServerBody[] }).servers.map((s) => s.uuid);
    expect(uuids).toContain(mine.uuid);
    expect(uuids).not.toContain(theirs.uuid);
    const admin = await api().get('/servers?limit=1000').set('x-roles', 'admin').expect(200);
    const all = (admin.body as { servers: ServerBody[] }).servers.map((s) => s.uuid);
    expect(all).toEqual(expect.arrayContaining([mine.uuid, theirs.uuid]));
  });

  it.each(['0', '1001', '-1', 'abc', '2.5', ''])('answers 400 for limit=%s', async (limit) => {
    const res = await api().get(`/servers?limit=${limit}`).expect(400);
    expect(res.body).toMatchObject({ error: { code: 'BAD_LIMIT' } });
  });

  it('answers 400 for a repeated limit', async () => {
    await api().get('/servers?limit=1&limit=2').expect(400);
  });

  it('answers 400 for a malformed marker, an unknown one, or one of another project', async () => {
    for (const marker of ['nope', randomUUID(), (await post('other', project())).uuid]) {
      const res = await api().get(`/servers?marker=${marker}`).set('x-project-id', project()).expect(400);
      expect(res.body).toMatchObject({ error: { code: 'BAD_MARKER' } });
    }
  });
});

describe('errors', () => {
  it('answers unknown routes with a JSON 404', async () => {
    const res = await api().get('/nope').expect(404);
    expect(res.body).toMatchObject({ error: { status: 404, code: 'NOT_FOUND' } });
  });

  it.each([
    ['longer than 255 characters', 'p'.repeat(256)],
    ['with a space', 'my project'],
    ['with a slash', 'a/b'],
    ['with a quote and a semicolon', "p';--"],
    ['with a non-ASCII letter', 'projé'],
  ])('answers 400 for an x-project-id %s', async (_what, projectId) => {
    const res = await api().get('/servers').set('x-project-id', projectId).expect(400);
    expect(res.body).toMatchObject({ error: { code: 'BAD_PROJECT_ID' } });
  });

  it('accepts an x-project-id of letters, digits and . _ : -', async () => {
    await api().get('/servers').set('x-project-id', 'Proj-1.a_b:c').expect(200);
  });

  it.each(['gzip', 'br', 'deflate'])(
    'answers 400 BAD_REQUEST_BODY for a body whose content-encoding %s does not decompress',
    async (encoding) => {
      const res = await api()
        .post('/servers')
        .set('content-type', 'application/json')
        .set('content-encoding', encoding)
        .send(Buffer.from('{"name": "not compressed at all"}'))
        .expect(400);
      expect(res.body).toMatchObject({ error: { status: 400, code: 'BAD_REQUEST_BODY' } });
    },
  );

  it('answers 413 BODY_TOO_LARGE and 415 UNSUPPORTED_BODY', async () => {
    const large = await api().post('/servers').send({ name: 'n'.repeat(20_000) }).expect(413);
    expect(large.body).toMatchObject({ error: { code: 'BODY_TOO_LARGE' } });
    const unsupported = await api()
      .post('/servers')
      .set('content-type', 'application/json')
      .set('content-encoding', 'zstd-unknown')
      .send('{"name":"x"}')
      .expect(415);
    expect(unsupported.body).toMatchObject({ error: { code: 'UNSUPPORTED_BODY' } });
  });

  it("documents every code the app answers with, and its status, in the README's error table", async () => {
    const readme = await readFile(join(__dirname, '..', '..', 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('## The example app'));
    const table = section.slice(section.indexOf('### Errors'), section.indexOf('\n## ', 1));
    const documented = Object.fromEntries(
      [...table.matchAll(/^\| (\d{3}) \| `([A-Z_]+)` \|/gm)].map((m) => [m[2]!, Number(m[1])]),
    );
    expect(documented).toEqual({ ...APP_ERRORS, ...LIBRARY_ERROR_STATUS });
    // And every code literal in the app's source, whatever table it comes from.
    const sources = await Promise.all(
      ['errors.ts', 'params.ts', 'context.ts', 'placement.ts', 'listing.ts', 'routes/servers.ts', 'routes/cells.ts'].map(
        (file) => readFile(join(__dirname, '..', '..', 'examples', 'express', file), 'utf8'),
      ),
    );
    const literals = new Set(sources.join('\n').match(/(?<=')(?:CELLS|BAD|NOT|SERVER|NO|BODY|UNSUPPORTED|FORBIDDEN|INTERNAL)[A-Z_]*(?=')/g));
    expect(literals.size).toBeGreaterThan(10);
    expect([...literals].filter((code) => !(code in documented))).toEqual([]);
  });
});

describe('concurrency', () => {
  it('serves 200 interleaved POSTs and GETs, every server in the cell its mapping names', async () => {
    const p = project();
    const cellsByName = [near[0], near[1], far].map((c) => c.mapping.name);
    const tasks = Array.from({ length: 200 }, async (_, i) => {
      const query = i % 4 === 3 ? '' : `?cell=${cellsByName[i % 3]}`;
      const created = await post(`c-${i}`, p, query);
      const [one] = await Promise.all([
        api().get(`/servers/${created.uuid}`).set('x-project-id', p).expect(200),
        i % 10 === 0 ? api().get('/servers?limit=50').set('x-project-id', p).expect(200) : Promise.resolve(),
      ]);
      expect((one.body as { server: ServerBody }).server.cell.uuid).toBe(created.cell.uuid);
      return created;
    });
    const created = await Promise.all(tasks);
    const mappings = await rowsIn<{ instance_uuid: string; cell: string }>(
      world.api.url,
      `SELECT m.instance_uuid, c.uuid AS cell FROM instance_mappings m JOIN cell_mappings c ON c.id = m.cell_id
       WHERE m.project_id = $1`,
      [p],
    );
    expect(mappings).toHaveLength(200);
    for (const cell of allCells()) {
      const here = new Set(await rowsOfProject(cell, p));
      const expected = mappings.filter((m) => m.cell === cell.mapping.uuid).map((m) => m.instance_uuid);
      expect(here.size).toBe(expected.length);
      for (const uuid of expected) expect(here.has(uuid)).toBe(true);
    }
    for (const server of created) {
      expect(mappings.find((m) => m.instance_uuid === server.uuid)?.cell).toBe(server.cell.uuid);
    }
  });
});

describe('a cell whose PostgreSQL server stops', () => {
  let onFar: ServerBody;
  let onNear: ServerBody;
  const p = project();

  beforeAll(async () => {
    onFar = await post('far-away', p, `?cell=${far.mapping.name}`);
    onNear = await post('close-by', p, `?cell=${near[0].mapping.name}`);
    await world.second!.stop();
  }, 60_000);
  afterAll(async () => {
    await world.second!.start();
  }, 60_000);

  it('is listed in unreachable_cells while the other cells are listed, well within the timeout', async () => {
    const started = Date.now();
    const res = await api().get('/servers?limit=1000').set('x-project-id', p).expect(200);
    const elapsed = Date.now() - started;
    const page = res.body as { servers: ServerBody[]; unreachable_cells: unknown[] };
    expect(page.unreachable_cells).toEqual([{ uuid: far.mapping.uuid, name: far.mapping.name }]);
    expect(page.servers.map((s) => s.uuid)).toEqual([onNear.uuid]);
    expect(elapsed).toBeLessThan(1500);
  });

  // The registry keeps the cell's DataSource open; its failed query must still read as unreachable.
  it('answers 503 for a server in that cell while its DataSource is open', async () => {
    const res = await api().get(`/servers/${onFar.uuid}`).set('x-project-id', p).expect(503);
    expect(res.body).toMatchObject({ error: { status: 503, code: 'CELLS_CELL_UNREACHABLE' } });
  });

  it('answers 503 for a server in that cell once its DataSource must be opened again', async () => {
    world.lib.evictCell(far.mapping.uuid);
    const res = await api().get(`/servers/${onFar.uuid}`).set('x-project-id', p).expect(503);
    expect(res.body).toMatchObject({ error: { status: 503, code: 'CELLS_CELL_UNREACHABLE' } });
    expect(res.text).not.toContain(new URL(far.url).password);
  });

  it('answers 503 when a POST is placed in that cell, and leaves no mapping', async () => {
    world.lib.evictCell(far.mapping.uuid);
    const q = project();
    const res = await api().post(`/servers?cell=${far.mapping.name}`).set('x-project-id', q).send({ name: 'x' });
    expect(res.status).toBe(503);
    expect(await rowsIn(world.api.url, 'SELECT 1 FROM instance_mappings WHERE project_id = $1', [q])).toEqual([]);
  });

  it('is unreachable in /healthz, the others ok', async () => {
    const res = await api().get('/healthz').expect(200);
    const cells = (res.body as { status: string; cells: Array<{ uuid: string; state: string }> }).cells;
    expect(res.body).toMatchObject({ status: 'degraded' });
    for (const c of cells) expect(c.state).toBe(c.uuid === far.mapping.uuid ? 'unreachable' : 'ok');
  });

  it('is served again after its server restarts, with no app restart', async () => {
    await world.second!.start();
    const one = await api().get(`/servers/${onFar.uuid}`).set('x-project-id', p).expect(200);
    expect((one.body as { server: ServerBody }).server.uuid).toBe(onFar.uuid);
    const res = await api().get('/servers?limit=1000').set('x-project-id', p).expect(200);
    const page = res.body as { servers: ServerBody[]; unreachable_cells: unknown[] };
    expect(page.unreachable_cells).toEqual([]);
    expect(page.servers.map((s) => s.uuid).sort()).toEqual([onFar.uuid, onNear.uuid].sort());
  });
});
