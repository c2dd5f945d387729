import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { targetCell, type CellMapping, type CellsLogEvent, type ResolveSecret } from '../../lib';
import { cellDataSource, createMixedFleet, Gadget, gadgetFor, type MixedFleet } from '../support/mixed-fleet';
import { describeMysql, mysqlQuery } from '../support/mysql';
import { reportFigure } from '../reliability/figures';
import { repeatCalls } from '../support/repeated-calls';
import { sleep } from '../../dev/wait';

const ROTATION = 'secret rotation (MariaDB, file reference, reloadCell under load)';
const STALE = 'stale secret (MariaDB, ER_ACCESS_DENIED_ERROR)';

/**
 * Secret references of a MariaDB cell (`mariadb://user@host/db?password=file:...`, and a kind of
 * `resolveSecret`): resolved when the cell opens, resolved again once after ER_ACCESS_DENIED_ERROR,
 * rotated under load with `reloadCell`, and shown nowhere.
 */
describeMysql('secret references of a MariaDB cell', () => {
  const sentinel = `Sref${randomBytes(9).toString('hex')}`;
  const user = `cells_ref_${randomBytes(4).toString('hex')}`;
  const hosts = ['%', 'localhost', '127.0.0.1'];
  const events: CellsLogEvent[] = [];
  const shown: string[] = [];
  let password = `${sentinel}-one`;
  let resolutions = 0;
  const resolveSecret: ResolveSecret = (ref) => {
    if (ref.kind !== 'counted') return undefined;
    resolutions++;
    return password;
  };
  let fleet: MixedFleet;
  let dir: string;
  let file: string;
  let fileCell: CellMapping;
  let countedCell: CellMapping;

  const alterUser = async (to: string): Promise<void> => {
    for (const host of hosts) await mysqlQuery(`ALTER USER '${user}'@'${host}' IDENTIFIED BY '${to}'`);
  };
  const withReference = (url: string, query: string): string => {
    const parsed = new URL(url);
    parsed.username = user;
    parsed.password = '';
    parsed.search = query;
    return parsed.toString();
  };
  const sleepyCount = (cell: CellMapping): Promise<unknown> =>
    targetCell(cell, () => fleet.lib.getRepository(Gadget).query('SELECT SLEEP(0.2) AS s'));

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cells-mysql-ref-'));
    file = join(dir, 'cell-password');
    await writeFile(file, `${password}\n`);
    for (const host of hosts) await mysqlQuery(`CREATE USER '${user}'@'${host}' IDENTIFIED BY '${password}'`);
    fleet = await createMixedFleet('my_ref', {
      pgCells: 0,
      mariadbCells: 1,
      cells: { logger: (event) => void events.push(event), connectTimeoutMs: 2000, resolveSecret },
      mariadbUrl: (url) => withReference(url, `?password=file:${encodeURIComponent(file)}`),
    });
    for (const host of hosts) await mysqlQuery(`GRANT ALL ON \`${fleet.mariadb[0]!.db.name}\`.* TO '${user}'@'${host}'`);
    fileCell = fleet.mariadb[0]!.mapping;
    countedCell = await fleet.lib.mappings.createCell({
      name: 'my-ref-counted',
      databaseConnection: withReference(fileCell.databaseConnection, '?password=counted:x'),
    });
  }, 60_000);

  afterAll(async () => {
    await fleet?.destroy();
    for (const host of hosts) await mysqlQuery(`DROP USER IF EXISTS '${user}'@'${host}'`);
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
    shown.push(...events.map((event) => inspect(event, { depth: 10 })));
    expect(shown.length).toBeGreaterThan(0);
    expect(shown.filter((text) => text.includes(sentinel))).toEqual([]);
  }, 60_000);

  it('routes through the cell whose URL references a file', async () => {
    const gadgets = fleet.lib.getRepository(Gadget);
    await targetCell(fileCell, () => gadgets.insert(gadgetFor(fileCell.uuid)));
    expect(await targetCell(fileCell, () => gadgets.count())).toBe(1);
  });

  it('resolves a stale secret again once on ER_ACCESS_DENIED_ERROR, and the calls succeed', async () => {
    await sleepyCount(countedCell);
    expect(resolutions).toBe(1);
    password = `${sentinel}-two`;
    await alterUser(password);
    // Three at once on a pool of three: two new connections, opened with the password resolved first.
    const results = await Promise.all([1, 2, 3].map(() => sleepyCount(countedCell)));
    expect(results).toHaveLength(3);
    reportFigure(STALE, 'resolutions (1 at open, then 3 calls refused at once)', resolutions, 'must be 2');
    expect(resolutions).toBe(2);
  });

  it('rotates the file secret under load with reloadCell: 0 failed calls', async () => {
    await writeFile(file, `${password}\n`);
    fleet.lib.reloadCell(fileCell.uuid);
    const load = repeatCalls(6, () =>
      targetCell(fileCell, async () => {
        await fleet.lib.getRepository(Gadget).insert(gadgetFor(fileCell.uuid));
        await fleet.lib.getRepository(Gadget).query('SELECT SLEEP(0.005) AS s');
      }),
    );
    await sleep(400);
    password = `${sentinel}-three`;
    await writeFile(file, `${password}\n`);
    await alterUser(password);
    fleet.lib.reloadCell(fileCell.uuid);
    await sleep(800);
    const { calls, failures } = await load.stop();
    for (const failure of failures) shown.push(inspect(failure, { depth: 10 }));
    reportFigure(ROTATION, 'calls completed by 6 workers', calls, '> 50');
    reportFigure(ROTATION, 'failed calls', failures.length, 'must be 0');
    expect({ failures: failures.length, some: calls > 50 }).toEqual({ failures: 0, some: true });
  }, 30_000);

  it('shows the resolved password in no inspect or JSON of the DataSource, Cells or stats', async () => {
    const dataSource = await cellDataSource(fleet.lib, fileCell);
    shown.push(
      inspect(dataSource, { depth: 12, showHidden: true, getters: true }),
      inspect(fleet.lib, { depth: 12, showHidden: true }),
      JSON.stringify(fleet.lib.stats()),
      JSON.stringify(fileCell),
    );
    expect(shown.join('\n')).not.toContain(sentinel);
  });
});
