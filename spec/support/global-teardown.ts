import type { EmbeddedServer } from '../../examples/express/embedded';
import { EMBEDDED_SERVER_KEY, SERVER_URL_VARIABLE } from './global-setup';

type GlobalWithServer = typeof globalThis & { [EMBEDDED_SERVER_KEY]?: EmbeddedServer };

/**
 * Jest global teardown: stops the embedded PostgreSQL that global setup started, if any, and
 * removes its data directory (bounded: a server that already died does not hang the run). A server
 * named by `CELLS_TEST_DATABASE_URL` is left alone.
 */
export default async function globalTeardown(): Promise<void> {
  const holder = globalThis as GlobalWithServer;
  const server = holder[EMBEDDED_SERVER_KEY];
  if (!server) return;
  delete holder[EMBEDDED_SERVER_KEY];
  delete process.env[SERVER_URL_VARIABLE];
  await server.remove();
}
