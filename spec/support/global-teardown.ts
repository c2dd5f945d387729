import type { EmbeddedServer } from '../../dev/embedded-server';
import { EMBEDDED_SERVER_KEY, SERVER_URL_VARIABLE } from './global-setup';
import { leaveTempRoot } from './temp-root';

type GlobalWithServer = typeof globalThis & { [EMBEDDED_SERVER_KEY]?: EmbeddedServer };

/**
 * Jest global teardown: stops the embedded PostgreSQL that global setup started, if any, and
 * removes its data directory (bounded: a server that already died does not hang the run). A server
 * named by `CELLS_TEST_DATABASE_URL` is left alone. Then removes the run's temporary root, and
 * fails the run when some spec left files in it: `npm test` leaves nothing in the OS temp directory.
 *
 * @throws Error listing the files left in the temporary directory.
 */
export default async function globalTeardown(): Promise<void> {
  const holder = globalThis as GlobalWithServer;
  const server = holder[EMBEDDED_SERVER_KEY];
  if (server) {
    delete holder[EMBEDDED_SERVER_KEY];
    delete process.env[SERVER_URL_VARIABLE];
    await server.remove();
  }
  const left = await leaveTempRoot();
  if (left.length > 0) {
    throw new Error(
      `The test run left ${left.length} file(s) in the OS temp directory (now removed): ${left.join(', ')}. ` +
        `The spec that creates them must remove them (see spec/support/temp-root.ts).`,
    );
  }
}
