import { randomUUID } from 'node:crypto';
import request from 'supertest';
import { createExampleApp, type ExampleApp } from '../support/example-app';
import { describeMysql, mysqlQuery } from '../support/mysql';

interface ServerBody {
  uuid: string;
  name: string;
  created_at: string;
  cell: { uuid: string; name: string };
}

describeMysql('the example app with a MariaDB cell beside a PostgreSQL one', () => {
  let world: ExampleApp;
  const api = () => request(world.app);
  const project = () => `p-${randomUUID().slice(0, 8)}`;

  beforeAll(async () => {
    world = await createExampleApp('ex_my', {
      cellSpecs: [
        { name: 'ex-my-pg', database: 'pg' },
        { name: 'ex-my-maria', database: 'maria', onMysql: true },
      ],
    });
  }, 120_000);

  afterAll(async () => {
    await world?.destroy();
  }, 60_000);

  async function post(name: string, projectId: string, cell?: string): Promise<ServerBody> {
    const res = await api()
      .post(`/servers${cell === undefined ? '' : `?cell=${cell}`}`)
      .set('x-project-id', projectId)
      .send({ name })
      .expect(201);
    return (res.body as { server: ServerBody }).server;
  }

  it('places a server in the MariaDB cell, reads it back by uuid and soft-deletes it there', async () => {
    const p = project();
    const created = await post('maria-1', p, 'ex-my-maria');
    expect(created.cell.name).toBe('ex-my-maria');
    const maria = world.cells[1]!;
    const database = new URL(maria.url).pathname.slice(1);
    const rows = await mysqlQuery(`SELECT uuid, deleted_at FROM \`${database}\`.servers WHERE project_id = ?`, [p]);
    expect(rows.map((r) => r.uuid)).toEqual([created.uuid]);
    const read = await api().get(`/servers/${created.uuid}`).set('x-project-id', p).expect(200);
    expect((read.body as { server: ServerBody }).server).toMatchObject({ uuid: created.uuid, created_at: created.created_at });
    await api().delete(`/servers/${created.uuid}`).set('x-project-id', p).expect(204);
    await api().get(`/servers/${created.uuid}`).set('x-project-id', p).expect(404);
    const deleted = await mysqlQuery(`SELECT deleted_at FROM \`${database}\`.servers WHERE uuid = ?`, [created.uuid]);
    expect(deleted[0]?.deleted_at).not.toBeNull();
    const only = await api().get('/servers?read_deleted=only').set('x-project-id', p).set('x-roles', 'admin').expect(200);
    expect((only.body as { servers: ServerBody[] }).servers.map((s) => s.uuid)).toEqual([created.uuid]);
  });

  it('lists a project over both engines newest first, paging with the marker across them', async () => {
    const p = project();
    const made: ServerBody[] = [];
    for (let i = 0; i < 6; i++) made.push(await post(`s-${i}`, p));
    expect(new Set(made.map((s) => s.cell.name))).toEqual(new Set(['ex-my-pg', 'ex-my-maria']));
    const seen: string[] = [];
    let marker: string | null = null;
    do {
      const res = await api()
        .get(`/servers?limit=2${marker === null ? '' : `&marker=${marker}`}`)
        .set('x-project-id', p)
        .expect(200);
      const body = res.body as { servers: ServerBody[]; next_marker: string | null; unreachable_cells: unknown[] };
      expect(body.unreachable_cells).toEqual([]);
      seen.push(...body.servers.map((s) => s.uuid));
      marker = body.next_marker;
    } while (marker !== null);
    expect(seen).toEqual(made.map((s) => s.uuid).reverse());
  });

  it('keeps every server in the cell it was placed in under 200 concurrent requests', async () => {
    const p = project();
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => post(`c-${i}`, p)));
    const byCell = new Map<string, string[]>();
    for (const server of results) byCell.set(server.cell.name, [...(byCell.get(server.cell.name) ?? []), server.uuid]);
    const maria = world.cells[1]!;
    const database = new URL(maria.url).pathname.slice(1);
    const inMaria = (await mysqlQuery(`SELECT uuid FROM \`${database}\`.servers WHERE project_id = ?`, [p])).map((r) => String(r.uuid));
    expect(new Set(inMaria)).toEqual(new Set(byCell.get('ex-my-maria')));
    expect(inMaria.length).toBeGreaterThan(0);
  });
});
