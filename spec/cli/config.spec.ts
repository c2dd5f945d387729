import { execFile } from 'node:child_process';
import { mkdir, readFile, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
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
