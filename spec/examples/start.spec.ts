import { execFile } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { assertCliBuilt } from '../support/cli';

const START = join(__dirname, '..', '..', 'dist', 'examples', 'express', 'start.js');
/** The port the busy-port hint used to suggest whatever port was busy. */
const BUSY_PORT = 3001;

/** Listens on `port`; resolves to undefined when something else already does (it is busy anyway). */
function hold(port: number): Promise<Server | undefined> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', (error: NodeJS.ErrnoException) =>
      error.code === 'EADDRINUSE' ? resolve(undefined) : reject(error),
    );
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

describe('npm start (examples/express/start.ts)', () => {
  beforeAll(() => assertCliBuilt());

  it('suggests a free port, not the busy one, when its port is taken', async () => {
    const held = await hold(BUSY_PORT);
    try {
      const { code, stderr } = await new Promise<{ code: number; stderr: string }>((resolve) => {
        execFile(
          process.execPath,
          [START],
          { env: { ...process.env, PORT: String(BUSY_PORT), DATABASE_URL: '' }, timeout: 30_000 },
          (error, _stdout, stderr) => resolve({ code: error ? Number(error.code) : 0, stderr }),
        );
      });
      expect(code).toBe(1);
      const suggested =
        /already in use\. Stop what uses it, or pick another: PORT=(\d+) npm start/.exec(stderr);
      expect(suggested).not.toBeNull();
      const port = Number(suggested![1]);
      expect(port).not.toBe(BUSY_PORT);
      // Free when suggested: nothing listens there now either.
      const probe = await hold(port);
      expect(probe).toBeDefined();
      await new Promise((resolve) => probe?.close(resolve));
    } finally {
      await new Promise((resolve) => (held ? held.close(resolve) : resolve(undefined)));
    }
  });
});
