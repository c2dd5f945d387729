import 'reflect-metadata';
import { randomUUID } from 'node:crypto';
import { Cells, CellMapping, UnknownCellError, targetCell } from '../../lib';
import { startForwarder, type Forwarder } from '../support/forwarder';
import { Gadget, createGadgetTable } from '../support/gadget';
import { createMysqlTestDatabase, describeMysql, mysqlConnectionsTo, mysqlAdmin, mysqlQuery, type MysqlTestDatabase } from '../support/mysql';
import { sleep } from '../../dev/wait';

const POLL_MS = 200;
/** What the change log promises: seen within the interval plus one round trip; 1 s of slack. */
const BOUND_MS = POLL_MS + 1_000;

/** Ms until `check` holds, polling every 5 ms; fails after 10 s. */
async function msUntil(check: () => Promise<boolean>): Promise<number> {
  const started = performance.now();
  while (!(await check().catch(() => false))) {
    if (performance.now() - started > 10_000) throw new Error('not seen after 10 s');
    await sleep(5);
  }
  return performance.now() - started;
}

describeMysql('mapping changes across processes sharing a MariaDB API database', () => {
  let api: MysqlTestDatabase;
  let cellDbs: MysqlTestDatabase[];
  let forwarder: Forwarder;
  /** Two processes: `a` writes, `b` (its API connections through `forwarder`) reads. */
  let a: Cells;
  let b: Cells;
  let one: CellMapping;
  let two: CellMapping;

  beforeAll(async () => {
    api = await createMysqlTestDatabase('changelog_api', 'mariadb');
    cellDbs = [await createMysqlTestDatabase('changelog_c1'), await createMysqlTestDatabase('changelog_c2'), await createMysqlTestDatabase('changelog_c3')];
    for (const db of cellDbs) await createGadgetTable(db.url);
    forwarder = await startForwarder(api.url);
    const options = { entities: [Gadget], poolSize: 2, mappingCache: { pollIntervalMs: POLL_MS, ttlMs: 600_000 } };
    a = await new Cells({ ...options, api: api.url, migrateApi: true }).initialize();
    b = await new Cells({ ...options, api: forwarder.url(api.url) }).initialize();
    one = await a.mappings.createCell({ name: 'one', databaseConnection: cellDbs[0]!.url });
    two = await a.mappings.createCell({ name: 'two', databaseConnection: cellDbs[1]!.url });
  });

  afterAll(async () => {
    await Promise.all([a?.destroy(), b?.destroy()]);
    await forwarder?.close();
    await Promise.all([api, ...(cellDbs ?? [])].map((db) => db?.drop()));
  });

  it('shows a cell created in one process to the other within the bound', async () => {
    expect((await b.mappings.allCells()).map((c) => c.name)).not.toContain('three');
    const created = await a.mappings.createCell({ name: 'three', databaseConnection: cellDbs[2]!.url });
    const ms = await msUntil(async () => (await b.mappings.allCells()).some((c) => c.uuid === created.uuid));
    expect(ms).toBeLessThan(BOUND_MS);
    expect(b.mappings.cacheStats().listening).toBe(true);
  });

  it('shows a renamed and a deleted cell to the other process within the bound', async () => {
    const cell = await a.mappings.createCell({ name: 'short-lived', databaseConnection: cellDbs[2]!.url });
    await msUntil(async () => (await b.mappings.cell(cell.uuid)).name === 'short-lived');
    await a.mappings.updateCell(cell, { name: 'renamed' });
    expect(await msUntil(async () => (await b.mappings.cell(cell.uuid)).name === 'renamed')).toBeLessThan(BOUND_MS);
    await a.mappings.deleteCell(cell);
    const gone = await msUntil(() =>
      b.mappings.cell(cell.uuid).then(
        () => false,
        (error: unknown) => error instanceof UnknownCellError,
      ),
    );
    expect(gone).toBeLessThan(BOUND_MS);
  });

  it('shows a moved instance to the other process within the bound', async () => {
    const instanceUuid = randomUUID();
    await a.mappings.mapInstance({ instanceUuid, cell: one.uuid, projectId: 'p' });
    expect((await b.mappings.instanceCell(instanceUuid)).uuid).toBe(one.uuid);
    const hits = b.mappings.cacheStats().hits;
    expect((await b.mappings.instanceCell(instanceUuid)).uuid).toBe(one.uuid);
    expect(b.mappings.cacheStats().hits).toBeGreaterThan(hits); // cached: only the change log can correct it
    await a.mappings.moveInstance(instanceUuid, two.uuid);
    expect(await msUntil(async () => (await b.mappings.instanceCell(instanceUuid)).uuid === two.uuid)).toBeLessThan(BOUND_MS);
  });

  it('delivers a change whose transaction commits after a later one', async () => {
    const late = randomUUID();
    const early = randomUUID();
    for (const uuid of [late, early]) await a.mappings.mapInstance({ instanceUuid: uuid, cell: one.uuid, projectId: 'p' });
    for (const uuid of [late, early]) expect((await b.mappings.instanceCell(uuid)).uuid).toBe(one.uuid);
    // Another process's write, held open: its change row takes an id before the next write's.
    const held = await mysqlAdmin();
    try {
      await held.query(`USE \`${api.name}\``);
      await held.beginTransaction();
      await held.query('UPDATE instance_mappings SET cell_id = ? WHERE instance_uuid = ?', [two.id, late]);
      const [inserted] = await held.query('INSERT INTO cell_mapping_changes (payload) VALUES (?)', [
        JSON.stringify({ origin: 'another-process', change: { kind: 'instance', uuid: late } }),
      ]);
      await a.mappings.moveInstance(early, two.uuid);
      await msUntil(async () => (await b.mappings.instanceCell(early)).uuid === two.uuid);
      const [newest] = await mysqlQuery(`SELECT MAX(id) AS maxId FROM \`${api.name}\`.cell_mapping_changes`);
      expect(Number(newest?.maxId)).toBeGreaterThan(Number((inserted as { insertId: number }).insertId));
      await sleep(3 * POLL_MS); // b has read past the held id
      expect((await b.mappings.instanceCell(late)).uuid).toBe(one.uuid);
      await held.commit();
    } finally {
      await held.end();
    }
    expect(await msUntil(async () => (await b.mappings.instanceCell(late)).uuid === two.uuid)).toBeLessThan(BOUND_MS);
  });

  it('reads more unsettled changes than one page lists, with no resync', async () => {
    const instanceUuid = randomUUID();
    await a.mappings.mapInstance({ instanceUuid, cell: one.uuid, projectId: 'p' });
    expect((await b.mappings.instanceCell(instanceUuid)).uuid).toBe(one.uuid);
    const reconnects = b.mappings.cacheStats().reconnects;
    const noise = Array.from({ length: 2_500 }, () => JSON.stringify({ origin: 'another-process', change: { kind: 'instance', uuid: randomUUID() } }));
    await mysqlQuery(`INSERT INTO \`${api.name}\`.cell_mapping_changes (payload) VALUES ${noise.map(() => '(?)').join(', ')}`, noise);
    await a.mappings.moveInstance(instanceUuid, two.uuid);
    expect(await msUntil(async () => (await b.mappings.instanceCell(instanceUuid)).uuid === two.uuid)).toBeLessThan(BOUND_MS);
    await sleep(2 * POLL_MS);
    expect(b.mappings.cacheStats()).toMatchObject({ listening: true, reconnects });
  });

  it('resyncs after losing the API database, its unread changes pruned meanwhile', async () => {
    const repo = b.getRepository(Gadget);
    const cell = await a.mappings.createCell({ name: 'repointed', databaseConnection: cellDbs[0]!.url });
    await msUntil(async () => (await b.mappings.allCells()).some((c) => c.uuid === cell.uuid));
    await targetCell(cell, () => repo.save({ uuid: randomUUID(), name: 'before', intendedCell: 'c1' }));
    expect(await mysqlConnectionsTo(cellDbs[0]!.name)).toBeGreaterThan(0);
    const reconnects = b.mappings.cacheStats().reconnects;
    await forwarder.cut();
    await msUntil(async () => !b.mappings.cacheStats().listening);
    await a.mappings.updateCell(cell, { databaseConnection: cellDbs[1]!.url });
    await mysqlQuery(`DELETE FROM \`${api.name}\`.cell_mapping_changes`);
    await forwarder.restore();
    await msUntil(async () => b.mappings.cacheStats().listening);
    expect(b.mappings.cacheStats().reconnects).toBe(reconnects + 1);
    // No change row tells b of the re-pointing: its resync closes the old DataSource, unasked.
    expect(await msUntil(async () => (await mysqlConnectionsTo(cellDbs[0]!.name)) === 0)).toBeLessThan(BOUND_MS);
    const uuid = randomUUID();
    await targetCell(cell, () => repo.save({ uuid, name: 'after', intendedCell: 'c2' }));
    const rows = await mysqlQuery(`SELECT uuid FROM \`${cellDbs[1]!.name}\`.gadgets WHERE uuid = ?`, [uuid]);
    expect(rows).toHaveLength(1);
  });
});
