import { randomBytes } from 'node:crypto';
import { createConnection, type Connection, type RowDataPacket } from 'mysql2/promise';
import { eventually } from '../../dev/wait';

/** The variable naming a MySQL or MariaDB server for the MySQL specs (`mysql://root@127.0.0.1:3306/mysql`). */
export const MYSQL_URL_VARIABLE = 'CELLS_TEST_MYSQL_URL';

/** The server of the MySQL specs, or undefined when none is given (they are then skipped). */
export function mysqlServerUrl(): string | undefined {
  const url = process.env[MYSQL_URL_VARIABLE];
  return url === undefined || url === '' ? undefined : url;
}

let skipNoted = false;

/**
 * `describe` when a MySQL/MariaDB server is given in CELLS_TEST_MYSQL_URL, else `describe.skip`
 * with one line saying why (once per test file).
 */
export function describeMysql(name: string, fn: () => void): void {
  if (mysqlServerUrl() !== undefined) {
    describe(name, fn);
    return;
  }
  if (!skipNoted) {
    skipNoted = true;
    console.log(`MySQL/MariaDB specs skipped: set ${MYSQL_URL_VARIABLE} (e.g. mysql://root@127.0.0.1:3306/mysql) to run them.`);
  }
  describe.skip(name, fn);
}

/** A database made on the MySQL test server for one test file. */
export interface MysqlTestDatabase {
  name: string;
  /** Its URL, with the scheme of `scheme` (`mysql` or `mariadb`). */
  url: string;
  /** Drops it, killing its connections first; safe to call twice. */
  drop(): Promise<void>;
}

/** A connection to the MySQL test server (no database selected). */
export function mysqlAdmin(): Promise<Connection> {
  const url = new URL(mysqlServerUrl()!);
  url.pathname = '/';
  return createConnection({ uri: url.toString().replace(/^mariadb:/, 'mysql:'), multipleStatements: false });
}

/** Runs one statement on the MySQL test server and returns its rows. */
export async function mysqlQuery<Row extends RowDataPacket = RowDataPacket>(sql: string, values: unknown[] = []): Promise<Row[]> {
  const admin = await mysqlAdmin();
  try {
    const [rows] = await admin.query<Row[]>(sql, values);
    return rows;
  } finally {
    await admin.end();
  }
}

/** Server connections open to the database `name` of the MySQL test server. */
export async function mysqlConnectionsTo(name: string): Promise<number> {
  const [row] = await mysqlQuery('SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE DB = ?', [name]);
  return Number(row?.n);
}

/**
 * Connections the server still lists to database `name` once every client socket to it is closed:
 * the server takes a thread off its list just after it closes the socket, so this waits up to
 * `settleMs` (default 500) for the count to reach 0 and returns the count then.
 */
export async function mysqlConnectionsLeft(name: string, settleMs = 500): Promise<number> {
  await eventually(async () => (await mysqlConnectionsTo(name)) === 0, settleMs).catch(() => undefined);
  return mysqlConnectionsTo(name);
}

/** Creates a uniquely named database on the MySQL test server. */
export async function createMysqlTestDatabase(label: string, scheme: 'mysql' | 'mariadb' = 'mariadb'): Promise<MysqlTestDatabase> {
  const name = `cells_${label.replace(/[^a-z0-9_]/gi, '_').toLowerCase().slice(0, 40)}_${randomBytes(4).toString('hex')}`;
  await mysqlQuery(`CREATE DATABASE \`${name}\``);
  const url = new URL(mysqlServerUrl()!);
  url.pathname = `/${name}`;
  const shown = url.toString().replace(/^[a-z]+:/, `${scheme}:`);
  let dropped = false;
  return {
    name,
    url: shown,
    async drop() {
      if (dropped) return;
      dropped = true;
      const rows = await mysqlQuery<RowDataPacket & { id: number }>(
        'SELECT ID AS id FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()',
        [name],
      );
      for (const { id } of rows) await mysqlQuery(`KILL ${Number(id)}`).catch(() => undefined);
      await mysqlQuery(`DROP DATABASE IF EXISTS \`${name}\``);
    },
  };
}
