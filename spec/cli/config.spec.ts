import { execFile } from 'node:child_process';
import { mkdir, readFile, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { loadConfig } from '../../lib/cli/config';
import { ConfigFileError } from '../../lib/cli/errors';
import {
  assertCliBuilt,
  createCliWorld,
  createProject,
  createSentinelRole,
  runCli,
  type CliProject,
  type CliResult,
  type CliWorld,
  type SentinelRole,
} from '../support/cli';

const ROOT = join(__dirname, '..', '..');

/**
 * A cell entity as users write them: legacy decorators, `!` fields whose column type comes from
 * decorator metadata (`design:type`), a parameter property and an enum.
 */
const GADGET = `
import { Column, Entity, PrimaryGeneratedColumn, type MigrationInterface, type QueryRunner } from 'typeorm';

export enum Size { Small = 1, Large = 2 }

@Entity({ name: 'gadgets' })
export class Gadget {
  @PrimaryGeneratedColumn()
  id!: number;

  @Column()
  name!: string;

  // Decorator metadata of an enum is the enum object, not Number (as tsc emits): give its type.
  @Column({ type: 'integer' })
  size: Size = Size.Small;

  constructor(private readonly origin?: string) {}
}

export class CreateGadgets1764072300000 implements MigrationInterface {
  name = 'CreateGadgets1764072300000';
  async up(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('CREATE TABLE "gadgets" ("id" serial PRIMARY KEY, "name" varchar NOT NULL, "size" integer NOT NULL)');
  }
  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.query('DROP TABLE "gadgets"');
  }
}
`;

/** A TypeScript config importing the gadget module through `specifier`. */
function tsConfig(apiUrl: string, specifier: string): string {
  return `
import { CreateGadgets1764072300000, Gadget, Size } from '${specifier}';

// TypeORM creates entities with \`new\`: a decorated field must not throw there.
if (new Gadget('config').size !== Size.Small) throw new Error('Gadget lost its field initializer');

const options = {
  api: ${JSON.stringify(apiUrl)},
  entities: [Gadget],
  migrations: [CreateGadgets1764072300000],
  connectTimeoutMs: 3000,
};
export default options;
`;
}

interface StatusReport {
  cells: { name: string; applied: string[]; pending: string[]; error?: string }[];
}

/** `db status --json` ran, built each cell's DataSource from the config's entities and migrations. */
function expectGadgetStatus(result: CliResult, world: CliWorld): void {
  expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: '' });
  const report = JSON.parse(result.stdout) as StatusReport;
  expect(report.cells).toEqual([
    {
      uuid: world.cells[0]!.uuid,
      name: world.cells[0]!.name,
      applied: [],
      pending: ['CreateGadgets1764072300000'],
    },
  ]);
}

let role: SentinelRole;
let world: CliWorld;
const projects: CliProject[] = [];

async function project(
  files: Record<string, string>,
  options: { linkNodeModules?: boolean } = {},
): Promise<CliProject> {
  const created = await createProject(files, options);
  projects.push(created);
  return created;
}

beforeAll(async () => {
  assertCliBuilt();
  role = await createSentinelRole();
  world = await createCliWorld('cli_conf', role, 1);
});

afterAll(async () => {
  await Promise.all(projects.map((p) => p.remove()));
  await world?.destroy();
  await role?.drop().catch(() => undefined);
});

describe('config file forms', () => {
  const api = () => role.urlFor(world.api.name);

  it('finds and loads cells.config.ts with decorated entities from a sibling file', async () => {
    const dir = (
      await project(
        { 'cells.config.ts': tsConfig(api(), './gadget'), 'gadget.ts': GADGET },
        { linkNodeModules: true },
      )
    ).dir;
    expectGadgetStatus(await runCli(['db', 'status', '--json'], dir), world);
  });

  it('finds and loads cells.config.mts importing a ./gadget.js sibling written in TypeScript', async () => {
    const dir = (
      await project(
        { 'cells.config.mts': tsConfig(api(), './gadget.js'), 'gadget.ts': GADGET },
        { linkNodeModules: true },
      )
    ).dir;
    expectGadgetStatus(await runCli(['db', 'status', '--json'], dir), world);
  });

  it('loads an ESM cells.config.ts ("type": "module") importing ./gadget.js, as nodenext requires', async () => {
    const dir = (
      await project(
        {
          'package.json': JSON.stringify({ type: 'module' }),
          'cells.config.ts': tsConfig(api(), './gadget.js'),
          'gadget.ts': GADGET,
        },
        { linkNodeModules: true },
      )
    ).dir;
    expectGadgetStatus(await runCli(['db', 'status', '--json'], dir), world);
  });

  it.each([
    [
      'cells.config.mjs',
      (url: string) => `export default { api: ${JSON.stringify(url)}, entities: [] };\n`,
    ],
    [
      'cells.config.cjs',
      (url: string) => `module.exports = { api: ${JSON.stringify(url)}, entities: [] };\n`,
    ],
    [
      'cells.config.js',
      (url: string) =>
        `module.exports = async () => ({ api: ${JSON.stringify(url)}, entities: [] });\n`,
    ],
  ])('finds and loads %s', async (name, body) => {
    const dir = (await project({ [name]: body(api()) })).dir;
    const result = await runCli(['cell', 'list', '--json'], dir);
    expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: '' });
    expect((JSON.parse(result.stdout) as { name: string }[]).map((c) => c.name)).toEqual([
      world.cells[0]!.name,
    ]);
  });

  it('loads a .ts config when no typescript package can be found from its folder', async () => {
    const widget = join(ROOT, 'spec', 'support', 'widget');
    const dir = (
      await project({
        'cells.config.ts': `import { Widget } from ${JSON.stringify(widget)};\nexport default { api: ${JSON.stringify(api())}, entities: [Widget] as Function[] };\n`,
      })
    ).dir;
    const result = await runCli(['cell', 'list', '--json'], dir);
    expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: '' });
  });

  it('refuses a config that exports a TypeORM DataSource, saying what to export instead', async () => {
    const dir = (
      await project(
        {
          'cells.config.ts': `import { DataSource } from 'typeorm';\nexport const dataSource = new DataSource({ type: 'postgres', url: ${JSON.stringify(api())} });\nexport default dataSource;\n`,
        },
        { linkNodeModules: true },
      )
    ).dir;
    const result = await runCli(['cell', 'list'], dir);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      /^error: Config file .*cells\.config\.ts: it exports a TypeORM DataSource.*export default \{ api: .*entities: \[\.\.\.\], migrations: \[\.\.\.\] \}/,
    );
    expect(result.stderr).not.toContain(role.password);
  });
});

describe('with TypeScript 7 installed in the project', () => {
  let dir: string;

  beforeAll(async () => {
    dir = (
      await project({
        'cells.config.ts': tsConfig(role.urlFor(world.api.name), './gadget'),
        'gadget.ts': GADGET,
      })
    ).dir;
    // TypeScript 7's package has no JavaScript compiler API (require('typescript') gives only its
    // version); its native compiler comes as an optional dependency, not needed here.
    await promisify(execFile)(
      'npm',
      [
        'install',
        '--no-save',
        '--prefer-offline',
        '--omit=optional',
        '--ignore-scripts',
        '--no-audit',
        '--no-fund',
        'typescript@7',
      ],
      { cwd: dir, timeout: 180_000 },
    );
    await mkdir(join(dir, 'node_modules'), { recursive: true });
    await symlink(
      join(ROOT, 'node_modules', 'typeorm'),
      join(dir, 'node_modules', 'typeorm'),
      'dir',
    );
  }, 200_000);

  it('has TypeScript 7 there, whose package has no transpileModule', async () => {
    const pkg = JSON.parse(
      await readFile(join(dir, 'node_modules', 'typescript', 'package.json'), 'utf8'),
    ) as {
      version: string;
    };
    expect(pkg.version).toMatch(/^7\./);
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['-e', "process.stdout.write(typeof require('typescript').transpileModule)"],
      { cwd: dir },
    );
    expect(stdout).toBe('undefined');
  });

  it('loads cells.config.ts and its decorated entities', async () => {
    expectGadgetStatus(await runCli(['db', 'status', '--json'], dir), world);
  });
});

describe('configs that never settle', () => {
  const COMMANDS = [
    ['db', 'migrate', '--all'],
    ['api-db', 'migrate'],
    ['cell', 'create', '--name', 'never', '--database-connection', 'postgres://u:p@127.0.0.1:1/x'],
    ['cell', 'delete', 'never'],
  ];
  const NEVER = [
    [
      'a function whose promise never settles',
      'cells.config.js',
      'module.exports = () => new Promise(() => {});\n',
      /the promise its exported function returned never settled/,
    ],
    [
      'a top-level await that never settles',
      'cells.config.mjs',
      'export default await new Promise(() => {});\n',
      /its top-level code never finished/,
    ],
    [
      'a function returning a thenable that never calls back',
      'cells.config.js',
      'module.exports = () => ({ then() {} });\n',
      /its exported function returned an object with a then\(\) method.*never called back/,
    ],
  ] as const;
  const CASES = NEVER.flatMap(([what, name, body, reason]) =>
    COMMANDS.map((args) => [what, args.join(' '), name, body, reason, args] as const),
  );

  it.each(CASES)(
    '%s fails `%s` with exit 1, naming the file',
    async (_what, _command, name, body, reason, args) => {
      const dir = (await project({ [name]: body })).dir;
      const result = await runCli(args, dir);
      expect(result.code).toBe(1);
      expect(result.stdout).toBe('');
      expect(result.stderr).toMatch(
        new RegExp(
          `^error: Config file \\S*${name.replace('.', '\\.')}: it never settled, so the command did nothing: `,
        ),
      );
      expect(result.stderr).toMatch(reason);
    },
  );

  it.each(COMMANDS.map((args) => [args.join(' '), args]))(
    'refuses options that are a thenable (a then method) in `%s` instead of waiting on it',
    async (_command, args) => {
      const dir = (
        await project({
          'cells.config.js': `module.exports = { api: ${JSON.stringify(role.urlFor(world.api.name))}, entities: [], then() {} };\n`,
        })
      ).dir;
      const result = await runCli(args, dir);
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(
        /^error: Config file \S*cells\.config\.js: its options have a then\(\) method/,
      );
      expect(result.stderr).not.toContain(role.password);
    },
  );

  it('gives up on a config still pending after --config-timeout', async () => {
    const dir = (
      await project({
        'cells.config.js':
          'module.exports = () => new Promise(() => setInterval(() => {}, 1000));\n',
      })
    ).dir;
    const result = await runCli(['--config-timeout', '200', 'cell', 'list'], dir);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(
      /^error: Config file \S*cells\.config\.js: it did not settle within 200 ms \(--config-timeout\): the promise its exported function returned never settled\.\n$/,
    );
  });
});

describe('configs whose exports throw when read', () => {
  const secret = 'postgres://app:s3cret-pw@db.example:5432/api';
  const THROWING = [
    [
      'a getter of the options',
      `module.exports = { get api() { throw new Error('no ${secret}'); }, entities: [] };`,
    ],
    [
      'a getter of the default export',
      `Object.defineProperty(exports, 'default', { enumerable: true, get() { throw new Error('no ${secret}'); } });`,
    ],
    [
      'a Proxy get trap',
      `module.exports = new Proxy({ api: 'x' }, { get() { throw new Error('no ${secret}'); } });`,
    ],
    [
      'a Proxy getOwnPropertyDescriptor trap',
      `module.exports = { default: new Proxy({ api: 'x' }, { getOwnPropertyDescriptor() { throw new Error('no ${secret}'); } }) };`,
    ],
    [
      'a Proxy ownKeys trap',
      `module.exports = () => new Proxy({ api: 'x' }, { ownKeys() { throw new Error('no ${secret}'); } });`,
    ],
    ['a thrown non-Error', `module.exports = { get api() { throw '${secret}'; } };`],
  ];

  it.each(THROWING)(
    'refuses %s with ConfigFileError naming the file, password masked',
    async (_what, body) => {
      const dir = (await project({ 'cells.config.js': `${body}\n` })).dir;
      const file = join(dir, 'cells.config.js');
      const error = await loadConfig(file).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(ConfigFileError);
      expect(error).toMatchObject({ code: 'CELLS_CONFIG_FILE', file });
      expect((error as Error).message).toContain('postgres://app:***@db.example:5432/api');
      expect((error as Error).message).not.toContain('s3cret-pw');
      const result = await runCli(['cell', 'list'], dir);
      expect(result.code).toBe(1);
      expect(result.stderr).toMatch(/^error: Config file \S*cells\.config\.js: /);
      expect(result.stderr).not.toContain('s3cret-pw');
    },
  );
});
