import { execFile } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Cells, CellMapping } from '../../lib';
import { adminQuery, createRole, createTestDatabase, type TestDatabase } from './databases';
import { REPO_ROOT as ROOT } from '../../dev/repo-root';
import { BUILD_ERROR_VARIABLE } from './build';

/** The built CLI, as `npm install` links it. */
export const CLI_PATH = join(ROOT, 'dist', 'lib', 'cli', 'main.js');

/** What one CLI run printed and how it exited. */
export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

const transcript: string[] = [];

/** Everything every CLI run of this worker printed, for assertions over a whole spec file. */
export function cliTranscript(): string {
  return transcript.join('\n');
}

/** Throws the build failure recorded by global setup, so CLI specs fail with tsc's output. */
export function assertCliBuilt(): void {
  const failure = process.env[BUILD_ERROR_VARIABLE];
  if (failure) throw new Error(failure);
}

/** Options of `runCli`. */
export interface RunCliOptions {
  /** The run is killed after this many milliseconds (and the call rejects). Default: 60000. */
  timeoutMs?: number;
  /** Extra environment variables for the CLI process. */
  env?: NodeJS.ProcessEnv;
}

/**
 * Runs the built CLI with `node`, as a user would, in `cwd`; never rejects on a non-zero exit.
 *
 * @param args - command-line arguments after the binary.
 * @param cwd - working directory (where the default config file is looked for).
 */
export function runCli(
  args: readonly string[],
  cwd: string,
  options: RunCliOptions = {},
): Promise<CliResult> {
  return run(process.execPath, [CLI_PATH, ...args], cwd, options.timeoutMs, options.env);
}

/**
 * Runs the built CLI as `runCli` does, but on a pseudo-terminal `columns` wide (through util-linux
 * `script`), as a user at a terminal sees it: live progress and tables sized to the terminal.
 * stdout and stderr arrive together in `stdout`, with terminal escapes and carriage returns removed.
 */
export async function runCliOnTerminal(
  args: readonly string[],
  cwd: string,
  columns: number,
): Promise<CliResult> {
  const quote = (word: string): string => `'${word.replace(/'/g, `'\\''`)}'`;
  const command = `stty cols ${columns}; exec ${[process.execPath, CLI_PATH, ...args].map(quote).join(' ')}`;
  const result = await run('script', ['--quiet', '--return', '--command', command, '/dev/null'], cwd);
  // eslint-disable-next-line no-control-regex -- terminal escapes are what it removes
  const plain = result.stdout.replace(/\u001b\[[0-9;?]*[A-Za-z]/g, '').replace(/\r/g, '');
  return { ...result, stdout: plain };
}

/** Runs `file` without colours, adding what it printed to the transcript; rejects only when it could not run or timed out. */
function run(
  file: string,
  args: readonly string[],
  cwd: string,
  timeoutMs = 60_000,
  env: NodeJS.ProcessEnv = {},
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    execFile(
      file,
      args,
      { cwd, env: { ...process.env, NO_COLOR: '1', ...env }, timeout: timeoutMs, maxBuffer: 16 << 20 },
      (error, stdout, stderr) => {
        transcript.push(stdout, stderr);
        if (error && typeof error.code !== 'number') return reject(error);
        resolve({ code: error ? Number(error.code) : 0, stdout, stderr });
      },
    );
  });
}

/** A temporary project folder with a config file, like a user's. */
export interface CliProject {
  dir: string;
  /** Removes the folder. */
  remove(): Promise<void>;
}

/**
 * Creates a project folder whose `cells.config.ts` points at the API database `apiUrl`, with the
 * spec Widget entity and two cell migrations (the second one sleeps `migrationSleepMs`, so
 * concurrent runners overlap). `node_modules` links to this repository's, as in an installed project.
 *
 * @param apiUrl - URL of the API database.
 * @param options.typescript - link node_modules (typescript, typeorm) as an installed project has. Default: true.
 */
export async function createCliProject(
  apiUrl: string,
  options: { typescript?: boolean; migrationSleepMs?: number } = {},
): Promise<CliProject> {
  const sleep = ((options.migrationSleepMs ?? 300) / 1000).toFixed(3);
  const config = `
import type { MigrationInterface, QueryRunner } from 'typeorm';
import { CreateWidgets1764072100000, Widget } from ${JSON.stringify(join(ROOT, 'spec', 'support', 'widget'))};

export class AddWidgetColor1764072200000 implements MigrationInterface {
  name = 'AddWidgetColor1764072200000';
  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('SELECT pg_sleep(${sleep})');
    await queryRunner.query('ALTER TABLE "widgets" ADD "color" varchar(20)');
  }
  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('ALTER TABLE "widgets" DROP COLUMN "color"');
  }
}

export default {
  api: ${JSON.stringify(apiUrl)},
  entities: [Widget],
  migrations: [CreateWidgets1764072100000, AddWidgetColor1764072200000],
  connectTimeoutMs: 3000,
};
`;
  return createProject(
    { 'cells.config.ts': config },
    { linkNodeModules: options.typescript !== false },
  );
}

/** Prefix of every temporary folder the CLI specs create, so a leftover can be traced back here. */
export const PROJECT_PREFIX = 'cells-cli-';

/**
 * Creates a temporary project folder holding `files` (relative path -> content).
 *
 * @param options.linkNodeModules - link `node_modules` to this repository's, as in a project that
 * installed typeorm-cells. Default: false (no packages at all).
 */
export async function createProject(
  files: Readonly<Record<string, string>>,
  options: { linkNodeModules?: boolean } = {},
): Promise<CliProject> {
  const dir = await mkdtemp(join(tmpdir(), PROJECT_PREFIX));
  if (options.linkNodeModules)
    await symlink(join(ROOT, 'node_modules'), join(dir, 'node_modules'), 'dir');
  for (const [name, content] of Object.entries(files)) {
    await mkdir(dirname(join(dir, name)), { recursive: true });
    await writeFile(join(dir, name), content);
  }
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

/** Writes a CommonJS config (no TypeScript involved) to `dir`, returning its path. */
export async function writeJsConfig(dir: string, apiUrl: string): Promise<string> {
  const file = join(dir, 'plain.config.js');
  await writeFile(file, `module.exports = { api: ${JSON.stringify(apiUrl)}, entities: [] };\n`);
  return file;
}

/**
 * Writes `<className>.config.js` in `dir`: a config for the API database at `apiUrl` whose only
 * migration is the class `className`, with `up` and `down` as the bodies of its methods
 * (JavaScript; `q` is the QueryRunner). Returns the file's path.
 */
export async function writeOneMigrationConfig(
  dir: string,
  apiUrl: string,
  className: string,
  { up, down }: { up: string; down: string },
): Promise<string> {
  const file = join(dir, `${className}.config.js`);
  await writeFile(
    file,
    `
class ${className} {
  name = '${className}';
  async up(q) {
    ${up}
  }
  async down(q) { ${down} }
}
module.exports = { api: ${JSON.stringify(apiUrl)}, entities: [], migrations: [${className}] };
`,
  );
  return file;
}

/** A login role whose password is a sentinel that must never be printed. */
export interface SentinelRole {
  name: string;
  password: string;
  /** `url` with the database replaced by `database` and the role's credentials. */
  urlFor(database: string): string;
  drop(): Promise<void>;
}

/** Creates a superuser role with a random `S3ntinel-…` password. */
export async function createSentinelRole(): Promise<SentinelRole> {
  const suffix = randomBytes(6).toString('hex');
  const name = `cells_cli_${suffix}`;
  const password = `S3ntinel-${suffix}`;
  const serverUrl = await createRole(name, password);
  return {
    name,
    password,
    urlFor(database) {
      const url = new URL(serverUrl);
      url.pathname = `/${database}`;
      return url.toString();
    },
    async drop() {
      await adminQuery(`DROP ROLE IF EXISTS "${name}"`);
    },
  };
}

/** An API database (migrated) with cell databases mapped in it (not migrated), and a project. */
export interface CliWorld {
  api: TestDatabase;
  cells: { db: TestDatabase; name: string; uuid: string; url: string }[];
  project: CliProject;
  /** Maps one more cell at `url`, which need not exist or answer. */
  mapCell(name: string, url: string): Promise<string>;
  destroy(): Promise<void>;
}

/**
 * Creates a CLI world: an API database migrated through the library, `cellCount` empty cell
 * databases mapped as `<label>-cell<i>` with the role's sentinel password in their URLs.
 */
export async function createCliWorld(
  label: string,
  role: SentinelRole,
  cellCount = 3,
): Promise<CliWorld> {
  const api = await createTestDatabase(`${label}_api`);
  const dbs = await Promise.all(
    Array.from({ length: cellCount }, (_, i) => createTestDatabase(`${label}_c${i}`)),
  );
  const project = await createCliProject(role.urlFor(api.name));
  const lib = new Cells({ api: role.urlFor(api.name), entities: [], migrateApi: true });
  const mapCell = async (name: string, url: string): Promise<string> => {
    const repo = lib.getRepository(CellMapping, 'api');
    const saved = await repo.save(
      repo.create({ uuid: randomUUID(), name, databaseConnection: url }),
    );
    return saved.uuid;
  };
  await lib.initialize();
  const cells = [];
  for (const [i, db] of dbs.entries()) {
    const url = role.urlFor(db.name);
    const name = `${label}-cell${i}`;
    cells.push({ db, name, url, uuid: await mapCell(name, url) });
  }
  return {
    api,
    cells,
    project,
    mapCell,
    async destroy() {
      await lib.destroy();
      await project.remove();
      await Promise.all([api, ...dbs].map((db) => db.drop()));
    },
  };
}
