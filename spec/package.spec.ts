/**
 * The package as a user gets it from the registry: packed from a copy of the sources with no
 * dist/ (as a fresh clone, so `prepack` must build it), installed into a new project with exactly
 * the packages the README's quick start names, compiled under `strict` with `skipLibCheck: false`,
 * and run against the test server as CommonJS and as ESM.
 */
import { execFile } from 'node:child_process';
import {
  copyFile,
  mkdir,
  mkdtemp,
  readFile,
  readdir,
  rm,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { createTestDatabases, type TestDatabase } from './support/databases';

const ROOT = join(__dirname, '..');
const QUICK_START = join(ROOT, 'examples', 'quick-start');
const SETUP_TIMEOUT_MS = 300_000;
const STEP_TIMEOUT_MS = 180_000;

interface Run {
  stdout: string;
  stderr: string;
}

/**
 * Runs `file` with this process's Node first on PATH (npm, tsc and the bin run on the Node under
 * test); rejects with everything it printed when it exits non-zero or outlives `STEP_TIMEOUT_MS`.
 */
function run(
  file: string,
  args: readonly string[],
  cwd: string,
  env: NodeJS.ProcessEnv = {},
): Promise<Run> {
  const path = `${dirname(process.execPath)}:${process.env.PATH ?? ''}`;
  return new Promise((resolve, reject) => {
    execFile(
      file,
      args,
      {
        cwd,
        env: { ...process.env, PATH: path, NO_COLOR: '1', ...env },
        timeout: STEP_TIMEOUT_MS,
        maxBuffer: 16 << 20,
      },
      (error, stdout, stderr) => {
        if (error) {
          const command = [relative(cwd, file) || file, ...args].join(' ');
          reject(
            new Error(`'${command}' in ${cwd} failed: ${error.message}\n${stdout}\n${stderr}`),
          );
        } else resolve({ stdout, stderr });
      },
    );
  });
}

/** The README's quick-start blocks, by the file each one says it shows. */
async function readmeQuickStart(): Promise<{ files: Map<string, string>; installs: string[][] }> {
  const readme = await readFile(join(ROOT, 'README.md'), 'utf8');
  const start = readme.indexOf('## Quick start');
  const section = readme.slice(start, readme.indexOf('\n## ', start + 1));
  const files = new Map<string, string>();
  for (const match of section.matchAll(/<!-- quick-start: (\S+) -->\n```\w+\n([\s\S]*?)```/g)) {
    files.set(match[1]!, match[2]!);
  }
  const installs = [...section.matchAll(/^npm install .*$/gm)].map((line) =>
    line[0].replace(/#.*/, '').trim().split(/\s+/),
  );
  return { files, installs };
}

/** Every file under `dir`, as paths relative to it. */
async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => relative(dir, join(e.parentPath, e.name)));
}

describe('the README quick start', () => {
  it('shows every file of examples/quick-start exactly as it is', async () => {
    const { files } = await readmeQuickStart();
    const onDisk = new Map<string, string>();
    for (const name of await filesUnder(QUICK_START)) {
      const path = `examples/quick-start/${name}`;
      onDisk.set(path, await readFile(join(ROOT, path), 'utf8'));
    }
    expect(onDisk.size).toBeGreaterThan(0);
    expect(Object.fromEntries(files)).toEqual(Object.fromEntries(onDisk));
  });
});

describe('the packed package in a new project', () => {
  let work: string;
  let app: string;
  let installed: string;
  let databases: TestDatabase[] = [];

  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'cells-package-'));
    const [tarball, dbs] = await Promise.all([
      packFreshCopy(work),
      createTestDatabases('package', 8),
    ]);
    databases = dbs;
    app = join(work, 'app');
    await mkdir(app);
    // What `npm init -y` writes, less the noise: a CommonJS project.
    await writeFile(
      join(app, 'package.json'),
      JSON.stringify({ name: 'consumer', version: '1.0.0', private: true, type: 'commonjs' }),
    );
    const { installs } = await readmeQuickStart();
    expect(installs.length).toBeGreaterThan(0);
    for (const [, install, ...packages] of installs) {
      const args = packages.map((name) => (name === 'typeorm-cells' ? tarball : name));
      await run('npm', [install!, ...args, '--prefer-offline', '--no-audit', '--no-fund'], app);
    }
    installed = join(app, 'node_modules', 'typeorm-cells');
  }, SETUP_TIMEOUT_MS);

  afterAll(async () => {
    await Promise.all(databases.map((db) => db.drop().catch(() => undefined)));
    if (work) await rm(work, { recursive: true, force: true });
  });

  /** Compiles the project in `dir` with the tsc the README had installed. */
  function tsc(dir: string): Promise<Run> {
    return run(join(app, 'node_modules', '.bin', 'tsc'), ['-p', '.'], dir);
  }

  it('holds the built code, its types, the bin and the LICENSE, and no source maps without sources', async () => {
    const files = await filesUnder(installed);
    expect(files).toEqual(
      expect.arrayContaining([
        'LICENSE',
        'package.json',
        'README.md',
        'dist/lib/index.js',
        'dist/lib/index.d.ts',
        'dist/lib/cli/main.js',
      ]),
    );
    expect(files.filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))).toEqual([]);
    const pkg = JSON.parse(await readFile(join(installed, 'package.json'), 'utf8')) as {
      license: string;
    };
    expect(pkg.license).toBe('MIT');
    expect(await readFile(join(installed, 'LICENSE'), 'utf8')).toMatch(
      /^MIT License\n\nCopyright \(c\) 2026 typeorm-cells contributors\n/,
    );
    const unsourced: string[] = [];
    for (const map of files.filter((f) => f.endsWith('.map'))) {
      const { sources, sourcesContent } = JSON.parse(
        await readFile(join(installed, map), 'utf8'),
      ) as {
        sources: string[];
        sourcesContent?: (string | null)[];
      };
      if (
        sourcesContent?.length !== sources.length ||
        sourcesContent.some((s) => typeof s !== 'string')
      )
        unsourced.push(map);
    }
    expect(unsourced).toEqual([]);
  });

  it('runs the typeorm-cells bin', async () => {
    const { stdout } = await run(
      join(app, 'node_modules', '.bin', 'typeorm-cells'),
      ['--help'],
      app,
    );
    expect(stdout).toMatch(/^Usage: typeorm-cells /);
    expect(stdout).toContain('db');
  });

  it(
    'compiles the quick start as written and runs it against PostgreSQL, twice',
    async () => {
      const dir = join(app, 'quick-start');
      await mkdir(dir);
      for (const name of await filesUnder(QUICK_START))
        await copyFile(join(QUICK_START, name), join(dir, name));
      await tsc(dir);
      const env = { API_DATABASE_URL: databases[0]!.url, CELL1_DATABASE_URL: databases[1]!.url };
      const first = await run(process.execPath, ['dist/quick-start.js'], dir, env);
      const second = await run(process.execPath, ['dist/quick-start.js'], dir, env);
      expect([first.stdout, second.stdout]).toEqual([
        'cell1 holds 1 server(s) named web-1\n',
        'cell1 holds 2 server(s) named web-1\n',
      ]);
    },
    STEP_TIMEOUT_MS,
  );

  const FORMATS = [
    {
      format: 'CommonJS',
      type: 'commonjs',
      databases: [2, 3, 4],
      emitted: /require\("typeorm-cells"\)/,
    },
    { format: 'ESM', type: 'module', databases: [5, 6, 7], emitted: /from 'typeorm-cells'/ },
  ] as const;

  it.each(FORMATS)(
    'compiles the public API under strict, skipLibCheck false, and runs it as $format',
    async (variant) => {
      const dir = join(app, variant.type);
      await mkdir(dir);
      await writeFile(join(dir, 'package.json'), JSON.stringify({ type: variant.type }));
      await writeFile(
        join(dir, 'tsconfig.json'),
        JSON.stringify({
          compilerOptions: {
            target: 'es2022',
            module: 'nodenext',
            moduleResolution: 'nodenext',
            strict: true,
            skipLibCheck: false,
            types: ['node'],
            experimentalDecorators: true,
            emitDecoratorMetadata: true,
            useDefineForClassFields: false,
            outDir: 'dist',
          },
          files: ['consumer.ts'],
        }),
      );
      await copyFile(join(__dirname, 'support', 'consumer-app.ts'), join(dir, 'consumer.ts'));
      await tsc(dir);
      expect(await readFile(join(dir, 'dist', 'consumer.js'), 'utf8')).toMatch(variant.emitted);
      const [api, cellA, cellB] = variant.databases.map((i) => databases[i]!.url);
      const { stdout } = await run(process.execPath, ['dist/consumer.js'], dir, {
        API_DATABASE_URL: api,
        CELL_A_URL: cellA,
        CELL_B_URL: cellB,
      });
      expect(JSON.parse(stdout)).toEqual({
        requestId: 'consumer-1',
        a: ['in a'],
        b: ['in b', 'also in b'],
        untargeted: 'CELLS_NO_TARGET_CELL',
      });
    },
    STEP_TIMEOUT_MS,
  );

  it('offers every CommonJS export as an ESM named import', async () => {
    const dir = join(app, 'named-imports');
    await mkdir(dir);
    const script = join(dir, 'names.mjs');
    await writeFile(
      script,
      `import { createRequire } from 'node:module';
import * as esm from 'typeorm-cells';
const cjs = createRequire(import.meta.url)('typeorm-cells');
console.log(JSON.stringify({ cjs: Object.keys(cjs).sort(), esm: Object.keys(esm).filter((k) => !['default', '__esModule', 'module.exports'].includes(k)).sort() }));
`,
    );
    const { cjs, esm } = JSON.parse((await run(process.execPath, [script], dir)).stdout) as {
      cjs: string[];
      esm: string[];
    };
    expect(cjs).toEqual(
      expect.arrayContaining(['Cells', 'RequestContext', 'targetCell', 'CellsError']),
    );
    // Node 23+ also names the whole CommonJS object 'module.exports' in the namespace.
    expect(esm).toEqual(cjs);
  });
});

/**
 * Copies the sources (git's tracked and unignored files, so no dist/) to `work/clone`, as a fresh
 * clone holds them, and runs `npm pack` there: only `prepack` can put code in the tarball.
 * node_modules is linked from this checkout. Returns the tarball's path.
 */
async function packFreshCopy(work: string): Promise<string> {
  const clone = join(work, 'clone');
  const listed = await run(
    'git',
    ['ls-files', '-z', '--cached', '--others', '--exclude-standard'],
    ROOT,
  );
  for (const name of listed.stdout.split('\0').filter(Boolean)) {
    const source = join(ROOT, name);
    const info = await stat(source).catch(() => undefined);
    if (!info?.isFile()) continue; // deleted in the work tree, or a link such as node_modules
    await mkdir(dirname(join(clone, name)), { recursive: true });
    await copyFile(source, join(clone, name));
  }
  await symlink(join(ROOT, 'node_modules'), join(clone, 'node_modules'), 'dir');
  await run('npm', ['pack', '--pack-destination', work], clone);
  const tarballs = (await readdir(work)).filter((name) => name.endsWith('.tgz'));
  expect(tarballs).toHaveLength(1);
  return join(work, tarballs[0]!);
}
