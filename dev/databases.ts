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
