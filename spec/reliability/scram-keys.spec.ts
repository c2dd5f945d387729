import { webcrypto } from 'node:crypto';
import { Client } from 'pg';
import { Cells, CellUnreachableError, targetCell, type CellMapping } from '../../lib';
import { createCellWorld, migrateCellDatabase, type CellWorld } from '../support/cells';
import { startSecondServer, type SecondServer } from '../support/second-server';
import { Widget } from '../support/widget';

/**
 * SCRAM-SHA-256 salted passwords are derived once per role, salt and round count (scram-keys.ts):
 * many new connections of cells on one server pay PBKDF2 once, while the server still checks every
 * connection's proof (a wrong password is refused, a changed password is derived anew).
 */

let second: SecondServer;
let world: CellWorld;
let lib: Cells;
const cells: CellMapping[] = [];
const CELL_COUNT = 6;

beforeAll(async () => {
  second = await startSecondServer('cells-scram-pg');
  world = await createCellWorld('scram', { cellCount: 0 });
  for (let i = 0; i < CELL_COUNT; i++) {
    const url = await second.createDatabase(`cells_scram_${i}_${process.pid}`);
    await migrateCellDatabase(url);
    cells.push(await world.lib.mappings.createCell({ name: `scram-${i}`, databaseConnection: url }));
  }
  lib = await new Cells({ api: world.api.url, entities: [Widget], poolSize: 3, connectTimeoutMs: 5_000 }).initialize();
}, 120_000);
afterAll(async () => {
  await lib?.destroy();
  await world?.destroy();
  await second?.remove();
}, 120_000);

afterEach(() => jest.restoreAllMocks());

/** Counts PBKDF2 derivations (node-postgres derives SCRAM keys with WebCrypto's deriveBits). */
function countDerivations(): () => number {
  const spy = jest.spyOn(webcrypto.subtle, 'deriveBits');
  return () => spy.mock.calls.filter(([params]) => (params as { name?: string }).name === 'PBKDF2').length;
}

describe('SCRAM keys derived once per role and server', () => {
  it('opens 6 cells with 3 connections each, interleaved, deriving the key at most once', async () => {
    const derivations = countDerivations();
    // The per-connection HMACs run on node:crypto, not WebCrypto's importKey + sign.
    const signs = jest.spyOn(webcrypto.subtle, 'sign');
    // 30 concurrent calls per cell: each pool opens all its connections at once.
    const results = await Promise.all(
      cells.flatMap((cell) =>
        Array.from({ length: 30 }, () => targetCell(cell, () => lib.getRepository(Widget).query('SELECT pg_sleep(0.02), 1 AS one'))),
      ),
    );
    expect(results).toHaveLength(CELL_COUNT * 30);
    const backends = await Promise.all(cells.map((_, i) => second.backends(`cells_scram_${i}_${process.pid}`)));
    expect(backends.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(CELL_COUNT * 2);
    expect(derivations()).toBeLessThanOrEqual(1);
    expect(signs).not.toHaveBeenCalled();
  });

  it('still has the server check every connection: a wrong password is refused', async () => {
    const url = new URL(second.url(`cells_scram_0_${process.pid}`));
    url.password = 'not-the-password';
    const cell = await world.lib.mappings.createCell({ name: 'scram-wrong', databaseConnection: url.toString() });
    await expect(targetCell(cell, () => lib.getRepository(Widget).count())).rejects.toBeInstanceOf(CellUnreachableError);
  });

  it('derives anew after the password changed, and the old password no longer connects', async () => {
    const role = `scram_role_${process.pid}`;
    const admin = new Client({ connectionString: second.url() });
    await admin.connect();
    try {
      await admin.query(`CREATE ROLE ${role} LOGIN PASSWORD 'first-pw'`);
      await admin.query(`GRANT ALL ON DATABASE cells_scram_1_${process.pid} TO ${role}`);
      const urlWith = (password: string) => {
        const url = new URL(second.url(`cells_scram_1_${process.pid}`));
        url.username = role;
        url.password = password;
        return url.toString();
      };
      const first = await world.lib.mappings.createCell({ name: 'scram-first', databaseConnection: urlWith('first-pw') });
      await targetCell(first, () => lib.getRepository(Widget).query('SELECT 1'));
      await admin.query(`ALTER ROLE ${role} PASSWORD 'second-pw'`);
      lib.evictCell(first.uuid);
      const derivations = countDerivations();
      const second_ = await world.lib.mappings.createCell({ name: 'scram-second', databaseConnection: urlWith('second-pw') });
      await targetCell(second_, () => lib.getRepository(Widget).query('SELECT 1'));
      expect(derivations()).toBe(1);
      await expect(targetCell(first, () => lib.getRepository(Widget).query('SELECT 1'))).rejects.toBeInstanceOf(CellUnreachableError);
    } finally {
      await admin.end();
    }
  });
});
