import { Client, escapeIdentifier } from 'pg';

/**
 * Creates database `name` on the server at `serverUrl` unless it exists, and returns its URL.
 * @throws the pg error when the server refuses (no CREATEDB right, unreachable).
 */
export async function ensureDatabase(serverUrl: string, name: string): Promise<string> {
  const client = new Client({ connectionString: serverUrl, connectionTimeoutMillis: 10_000 });
  await client.connect();
  try {
    const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (!rowCount) {
      try {
        await client.query(`CREATE DATABASE ${escapeIdentifier(name)}`);
      } catch (error) {
        // 42P04: created by someone else since the check.
        if ((error as { code?: unknown }).code !== '42P04') throw error;
      }
    }
  } finally {
    await client.end();
  }
  const url = new URL(serverUrl);
  url.pathname = `/${encodeURIComponent(name)}`;
  return url.toString();
}

/**
 * Creates database `name` on the MySQL or MariaDB server at `serverUrl` (`mysql://` or `mariadb://`)
 * unless it exists, and returns its URL, with the scheme of `serverUrl`. Needs the `mysql2` package.
 * @throws the mysql2 error when the server refuses (no CREATE right, unreachable).
 */
export async function ensureMysqlDatabase(serverUrl: string, name: string): Promise<string> {
  const { createConnection } = await import('mysql2/promise');
  const admin = new URL(serverUrl);
  admin.pathname = '/';
  const connection = await createConnection({ uri: admin.toString().replace(/^mariadb:/, 'mysql:'), connectTimeout: 10_000 });
  try {
    await connection.query(`CREATE DATABASE IF NOT EXISTS \`${name.replace(/`/g, '``')}\``);
  } finally {
    await connection.end();
  }
  const url = new URL(serverUrl);
  url.pathname = `/${encodeURIComponent(name)}`;
  return url.toString();
}
