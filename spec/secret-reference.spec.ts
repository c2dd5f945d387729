import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { Client } from 'pg';
import {
  BadConnectionUrlError,
  CellMapping,
  Cells,
  SecretResolutionError,
  getContext,
  maskSecrets,
  readFromReplica,
  targetCell,
  type CellsLogEvent,
  type CellsOptions,
  type ResolveSecret,
} from '../lib';
import { parseConnectionUrl } from '../lib/connection-url';
import { createCellWorld, migrateCellDatabase, widgetFor, type CellWorld } from './support/cells';
import { capturingLogger, eventually } from './support/peers';
import { createTestSdk, exportedText, pointsOf } from './support/telemetry';
import { reportFigure } from './reliability/figures';
import { startSecondServer, type SecondServer } from './support/second-server';
import { Widget } from './support/widget';
import { repeatCalls } from './support/repeated-calls';
import { sleep } from '../dev/wait';

const ROTATION = 'secret rotation (PostgreSQL, file reference, reloadCell under load)';
const STALE = 'stale secret (PostgreSQL, server refuses the resolved password)';

/**
 * Secret references (`?password=env:NAME`, `file:/path`, `<kind>:<ref>` with `resolveSecret`) of
 * cells on a PostgreSQL server with SCRAM authentication (the main test server trusts 127.0.0.1,
 * which would never ask for a password): resolved when a cell opens, re-resolved once after a
 * refused password, rotated under load with `reloadCell`, and never shown anywhere.
 */

const suffix = `${process.pid}_${randomBytes(3).toString('hex')}`;
const ROLE = `cells_ref_${suffix}`;
const DATABASE = `cells_ref_${suffix}`;
/** Every password this file uses starts with it: none may appear in anything captured. */
const SENTINEL = `S3cretRef-${randomBytes(6).toString('hex')}`;
const ENV = `CELLS_SPEC_PW_${suffix}`.toUpperCase();

const captured: string[] = [];
const capture = (...parts: unknown[]): void => {
  captured.push(parts.map((p) => (typeof p === 'string' ? p : inspect(p, { depth: 8, showHidden: true }))).join(' '));
};

let second: SecondServer;
let world: CellWorld;
let dir: string;
let admin: Client;
let password = `${SENTINEL}-one`;

/** Sets the role's password on the server (what an operator's rotation does first or last). */
async function alterRole(to: string): Promise<void> {
  await admin.query(`ALTER ROLE ${ROLE} PASSWORD '${to}'`);
}

function cellUrl(query: string): string {
  const url = new URL(second.url(DATABASE));
  url.username = ROLE;
  url.password = '';
  return `${url.toString()}?${query}`;
}

async function mapCell(name: string, query: string): Promise<CellMapping> {
  return world.lib.mappings.createCell({ name: `${name}-${suffix}`, databaseConnection: cellUrl(query) });
}

async function openCells(options: Partial<CellsOptions> = {}): Promise<Cells> {
  return new Cells({
    api: world.api.url,
    entities: [Widget],
    poolSize: 2,
    connectTimeoutMs: 3_000,
    logger: (event: CellsLogEvent) => capture('cells', event),
    cellDataSourceOptions: { logging: 'all', logger: capturingLogger(capture) },
    ...options,
  }).initialize();
}

async function countWidgets(cells: Cells, cell: CellMapping): Promise<number> {
  return targetCell(cell, () => cells.getRepository(Widget).count());
}

beforeAll(async () => {
  second = await startSecondServer('cells-secret-ref-pg');
  const url = await second.createDatabase(DATABASE);
  await migrateCellDatabase(url);
  admin = new Client({ connectionString: second.url() });
  await admin.connect();
  await admin.query(`CREATE ROLE ${ROLE} LOGIN SUPERUSER PASSWORD '${password}'`);
  world = await createCellWorld('secretref', { cellCount: 0, apiOptions: { logging: 'all', logger: capturingLogger(capture) } });
  dir = await mkdtemp(join(tmpdir(), 'cells-secret-ref-'));
}, 120_000);

afterAll(async () => {
  delete process.env[ENV];
  await admin?.end();
  await world?.destroy();
  await second?.remove();
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  // The sentinel scan: no password reached a log line, an event, an error, an inspect output.
  expect(captured.length).toBeGreaterThan(0);
  expect(captured.filter((line) => line.includes(SENTINEL))).toEqual([]);
}, 120_000);

describe('parsing ?password= references', () => {
  it.each(['postgres', 'mysql', 'mariadb'])('reads env and file references of a %s:// URL', (scheme) => {
    expect(parseConnectionUrl(`${scheme}://app@db1/cell1?password=env:CELL1_PW`, 'cell').passwordRef).toEqual({
      kind: 'env',
      reference: 'CELL1_PW',
    });
    const parts = parseConnectionUrl(`${scheme}://app@db1/cell1?password=file:/run/secrets/cell1`, 'cell');
    expect(parts).toMatchObject({ password: undefined, passwordRef: { kind: 'file', reference: '/run/secrets/cell1' } });
  });

  it('reads a kind of its own for resolveSecret', () => {
    expect(parseConnectionUrl('postgres://app@db1/cell1?password=vault:secret%2Fcells%2F1', 'cell').passwordRef).toEqual({
      kind: 'vault',
      reference: 'secret/cells/1',
    });
  });

  it.each([
    ['a literal password', `?password=${SENTINEL}`, /not a secret reference/],
    ['an empty reference', '?password=env:', /not a secret reference/],
    ['a bad variable name', `?password=env:${SENTINEL}-x`, /env secret reference is not an environment variable name/],
    ['a relative file', `?password=file:${SENTINEL}.txt`, /file secret reference is not an absolute path/],
  ])('refuses %s without echoing it', (_what, query, reason) => {
    const error = captureError(() => parseConnectionUrl(`postgres://app@db1/cell1${query}`, "cell 'c1'"));
    expect(error).toBeInstanceOf(BadConnectionUrlError);
    expect((error as Error).message).toMatch(reason);
    // Nothing for masking to hide: the message reads the same once masked.
    expect(maskSecrets((error as Error).message)).toBe((error as Error).message);
    expect(inspect(error)).not.toContain(SENTINEL);
  });

  it('refuses a password given both after the user name and as a reference', () => {
    const error = captureError(() => parseConnectionUrl(`postgres://app:${SENTINEL}@db1/cell1?password=env:X`, 'cell'));
    expect(error).toMatchObject({ code: 'CELLS_BAD_CONNECTION_URL', message: expect.stringMatching(/keep one/) });
    expect(inspect(error)).not.toContain(SENTINEL);
  });
});

describe('resolving references when a cell opens', () => {
  it('connects with the password of an environment variable', async () => {
    process.env[ENV] = password;
    const cell = await mapCell('env', `password=env:${ENV}`);
    const cells = await openCells();
    try {
      await targetCell(cell, () => cells.getRepository(Widget).insert(widgetFor(cell.uuid)));
      expect(await countWidgets(cells, cell)).toBeGreaterThan(0);
    } finally {
      await cells.destroy();
    }
  });

  it('connects with the password of a file, without its trailing newline', async () => {
    const file = join(dir, 'cell-file');
    await writeFile(file, `${password}\n`);
    const cell = await mapCell('file', `password=file:${encodeURIComponent(file)}`);
    const cells = await openCells();
    try {
      expect(await countWidgets(cells, cell)).toBeGreaterThanOrEqual(0);
    } finally {
      await cells.destroy();
    }
  });

  it("resolves a reader's reference too: a replica read opens the reader with its password", async () => {
    const file = join(dir, 'reader-file');
    await writeFile(file, password);
    process.env[ENV] = password;
    const cell = await world.lib.mappings.createCell({
      name: `with-reader-${suffix}`,
      databaseConnection: cellUrl(`password=env:${ENV}`),
      readConnections: [cellUrl(`password=file:${encodeURIComponent(file)}`)],
    });
    const events: CellsLogEvent[] = [];
    const cells = await openCells({ logger: (event) => void events.push(event) });
    try {
      await targetCell(cell, () => readFromReplica(() => cells.getRepository(Widget).count()));
      expect(events.map((e) => e.type)).toContain('replica-open');
      expect(events.map((e) => e.type)).not.toContain('replica-unavailable');
    } finally {
      await cells.destroy();
    }
  });

  it('asks resolveSecret for a kind of its own, and the built-in resolvers when it answers undefined', async () => {
    process.env[ENV] = password;
    const asked: string[] = [];
    const resolveSecret: ResolveSecret = async (ref, owner) => {
      asked.push(`${ref.kind}:${ref.reference}@${owner.name ?? ''}`);
      return ref.kind === 'vault' ? password : undefined;
    };
    const vault = await mapCell('vault', 'password=vault:cells/1');
    const env = await mapCell('vault-env', `password=env:${ENV}`);
    const cells = await openCells({ resolveSecret });
    try {
      await countWidgets(cells, vault);
      await countWidgets(cells, env);
      expect(asked).toEqual([`vault:cells/1@${vault.name}`, `env:${ENV}@${env.name}`]);
    } finally {
      await cells.destroy();
    }
  });

  it('fails the call with SecretResolutionError naming the cell and the kind, not the secret', async () => {
    const missing = await mapCell('missing-file', `password=file:${encodeURIComponent(join(dir, 'nothing-here'))}`);
    const unset = await mapCell('unset-env', `password=env:${ENV}_UNSET`);
    const unknown = await mapCell('unknown-kind', 'password=vault:cells/1');
    const cells = await openCells();
    try {
      const errors = await Promise.all([missing, unset, unknown].map((cell) => countWidgets(cells, cell).catch((e: unknown) => e)));
      for (const error of errors) capture(error, String((error as Error).stack));
      expect(errors.map((e) => [e instanceof SecretResolutionError, (e as SecretResolutionError).code, (e as SecretResolutionError).kind])).toEqual([
        [true, 'CELLS_SECRET_RESOLUTION', 'file'],
        [true, 'CELLS_SECRET_RESOLUTION', 'env'],
        [true, 'CELLS_SECRET_RESOLUTION', 'vault'],
      ]);
      expect((errors[0] as Error).message).toMatch(new RegExp(`missing-file.*ENOENT`));
      expect((errors[1] as Error).message).toMatch(/unset-env.*not set/);
      expect((errors[2] as Error).message).toMatch(/resolveSecret option/);
      // Built-in kinds name their reference (a path, a variable name: not secret); a user kind never.
      expect((errors[0] as Error).message).toContain(`'file' secret reference (file:${join(dir, 'nothing-here')})`);
      expect((errors[1] as Error).message).toContain(`'env' secret reference (env:${ENV}_UNSET)`);
      expect((errors.map((e) => (e as SecretResolutionError).reference))).toEqual([join(dir, 'nothing-here'), `${ENV}_UNSET`, undefined]);
      expect((errors[2] as Error).message).not.toContain('cells/1');
      for (const error of errors) expect(maskSecrets((error as Error).message)).toBe((error as Error).message);
    } finally {
      await cells.destroy();
    }
  });

  it('bounds resolveSecret by the connect timeout', async () => {
    const cell = await mapCell('slow-vault', 'password=vault:slow');
    const cells = await openCells({ connectTimeoutMs: 300, resolveSecret: () => new Promise<string>(() => undefined) });
    try {
      const started = Date.now();
      const error = await countWidgets(cells, cell).catch((e: unknown) => e);
      capture(error);
      expect(error).toMatchObject({ code: 'CELLS_SECRET_RESOLUTION', message: expect.stringMatching(/within 300 ms/) });
      expect(Date.now() - started).toBeLessThan(2_000);
    } finally {
      await cells.destroy();
    }
  });

  it("keeps a resolver's own error message out of SecretResolutionError", async () => {
    const cell = await mapCell('throwing-vault', 'password=vault:throws');
    const cells = await openCells({
      resolveSecret: () => {
        throw new Error(`vault said ${SENTINEL}`);
      },
    });
    try {
      const error = await countWidgets(cells, cell).catch((e: unknown) => e);
      capture(error, JSON.stringify(error));
      expect(error).toBeInstanceOf(SecretResolutionError);
    } finally {
      await cells.destroy();
    }
  });

  it('resolves the API database password too (a failure fails initialize)', async () => {
    const api = new URL(world.api.url);
    api.password = '';
    const cells = new Cells({ api: `${api.toString()}?password=env:${ENV}_UNSET`, entities: [Widget] });
    const error = await cells.initialize().catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'CELLS_SECRET_RESOLUTION', cell: 'the API database', kind: 'env' });
  });
});

describe('rotation', () => {
  /** A resolver of kind `counted` answering the current `password`, counting its calls. */
  function countedResolver(): { resolveSecret: ResolveSecret; calls: () => number } {
    let calls = 0;
    return {
      resolveSecret: (ref) => {
        if (ref.kind !== 'counted') return undefined;
        calls++;
        return password;
      },
      calls: () => calls,
    };
  }

  it('resolves a stale secret again once when the server refuses it, and the call succeeds', async () => {
    const cell = await mapCell('stale', 'password=counted:x');
    const { resolveSecret, calls } = countedResolver();
    const cells = await openCells({ resolveSecret, poolSize: 3 });
    try {
      await countWidgets(cells, cell);
      expect(calls()).toBe(1);
      password = `${SENTINEL}-two`;
      await alterRole(password);
      // Three at once: the pool opens new connections with the password it resolved first.
      const counts = await Promise.all(
        [1, 2, 3].map(() => targetCell(cell, () => cells.getRepository(Widget).query('SELECT pg_sleep(0.2), 1 AS one'))),
      );
      expect(counts).toHaveLength(3);
      // Concurrent refusals share one new resolution.
      reportFigure(STALE, 'resolutions (1 at open, then 3 calls refused at once)', calls(), 'must be 2');
      expect(calls()).toBe(2);
    } finally {
      await cells.destroy();
    }
  });

  it('points a refused password at its secret reference, not at the URL', async () => {
    const wrongEnv = `${ENV}_WRONG`;
    process.env[wrongEnv] = `${SENTINEL}-wrong`;
    const envCell = await mapCell('refused-env', `password=env:${wrongEnv}`);
    const vaultCell = await mapCell('refused-vault', 'password=vault:cells/refused');
    const cells = await openCells({ resolveSecret: (ref) => (ref.kind === 'vault' ? `${SENTINEL}-wrong` : undefined) });
    try {
      const [envError, vaultError] = await Promise.all([envCell, vaultCell].map((cell) => countWidgets(cells, cell).catch((e: unknown) => e)));
      capture(envError, vaultError);
      for (const error of [envError, vaultError]) {
        expect(error).toMatchObject({ code: 'CELLS_CELL_UNREACHABLE' });
        expect((error as Error).message).toMatch(/Authentication failed with the password of its '(env|vault)' secret reference/);
        expect((error as Error).message).not.toMatch(/user name and password of its URL/);
      }
      expect((envError as Error).message).toContain(`'env' secret reference (env:${wrongEnv})`);
      expect((vaultError as Error).message).not.toContain('cells/refused');
    } finally {
      delete process.env[wrongEnv];
      await cells.destroy();
    }
  });

  it('fails after one new resolution when the secret is still wrong', async () => {
    const cell = await mapCell('still-wrong', 'password=counted:x');
    const { resolveSecret, calls } = countedResolver();
    const cells = await openCells({ resolveSecret, poolSize: 3 });
    const before = password;
    try {
      await countWidgets(cells, cell);
      await alterRole(`${SENTINEL}-not-told`);
      const results = await Promise.all(
        [1, 2].map(() =>
          targetCell(cell, () => cells.getRepository(Widget).query('SELECT pg_sleep(0.2), 1 AS one')).catch((e: unknown) => e),
        ),
      );
      const errors = results.filter((r): r is Error => r instanceof Error);
      capture(...errors);
      expect(errors.length).toBeGreaterThan(0);
      // The refused login, typed: CellUnreachableError with the server's 28P01 as its cause.
      expect(errors.map((e) => [(e as { code?: string }).code, (e.cause as { code?: string } | undefined)?.code])).toContainEqual([
        'CELLS_CELL_UNREACHABLE',
        '28P01',
      ]);
      expect(calls()).toBe(2);
    } finally {
      await alterRole(before);
      await cells.destroy();
    }
  });

  it('rotates a file secret under load with reloadCell: 0 failed calls, new connections use the new secret', async () => {
    const file = join(dir, 'rotated');
    await writeFile(file, `${password}\n`);
    const cell = await mapCell('rotated', `password=file:${encodeURIComponent(file)}`);
    const events: CellsLogEvent[] = [];
    const cells = await openCells({
      poolSize: 4,
      logger: (event) => {
        events.push(event);
        capture('cells', event);
      },
    });
    const load = repeatCalls(12, () =>
      targetCell(cell, async () => {
        const widgets = cells.getRepository(Widget);
        await widgets.insert(widgetFor(cell.uuid));
        await widgets.query('SELECT pg_sleep(0.005)');
      }),
    );
    try {
      await sleep(500);
      // The operator's rotation: the new secret where the reference points, then the server, then reload.
      const next = `${SENTINEL}-three`;
      await writeFile(file, `${next}\n`);
      await alterRole(next);
      password = next;
      cells.reloadCell(cell.uuid);
      await sleep(800);
      // A second reload: the reopened DataSource resolved the new secret.
      cells.reloadCell(cell.uuid);
      await sleep(500);
      const { calls, failures } = await load.stop();
      capture(...failures);
      reportFigure(ROTATION, 'calls completed by 12 workers', calls, '> 100');
      reportFigure(ROTATION, 'failed calls', failures.length, 'must be 0');
      expect({ failures: failures.length, some: calls > 100 }).toEqual({ failures: 0, some: true });
      // Each reload drained the open DataSource and the next call opened a new one.
      const opens = events.filter((e) => e.type === 'open' && 'key' in e && e.key === cell.uuid);
      expect(opens).toHaveLength(3);
      // The old password no longer opens anything: new connections used the new one.
      const old = new Client({ connectionString: cellUrl('').replace(/\?$/, '').replace(`${ROLE}@`, `${ROLE}:${SENTINEL}-one@`) });
      const refused = await old.connect().then(
        () => undefined,
        (e: unknown) => e,
      );
      await old.end().catch(() => undefined);
      expect(refused).toMatchObject({ code: '28P01' });
      capture(refused);
    } finally {
      await load.stop();
      await cells.destroy();
    }
  }, 30_000);
});

describe('rotation through a mapping write', () => {
  it('reopens the cell in another process when its unchanged URL is written again', async () => {
    const file = join(dir, 'written');
    await writeFile(file, password);
    const cell = await mapCell('written', `password=file:${encodeURIComponent(file)}`);
    const events: CellsLogEvent[] = [];
    const other = await openCells({ logger: (event) => void events.push(event) });
    const opens = (): number => events.filter((e) => e.type === 'open' && 'key' in e && e.key === cell.uuid).length;
    try {
      await countWidgets(other, cell);
      expect(opens()).toBe(1);
      const next = `${SENTINEL}-four`;
      await writeFile(file, next);
      await alterRole(next);
      password = next;
      await world.lib.mappings.updateCell(cell.uuid, { databaseConnection: cell.databaseConnection });
      await eventually(() => events.some((e) => e.type === 'evict' && 'key' in e && e.key === cell.uuid), 5_000);
      await countWidgets(other, cell);
      expect(opens()).toBe(2);
    } finally {
      await other.destroy();
    }
  });
});

describe('the resolved password is shown nowhere', () => {
  it('not in the API database, stats, inspect or JSON of Cells, its DataSources, mappings and the context', async () => {
    process.env[ENV] = password;
    const cell = await mapCell('shown', `password=env:${ENV}`);
    const cells = await openCells();
    try {
      await targetCell(cell, async () => {
        await cells.getRepository(Widget).count();
        const context = getContext();
        capture(inspect(context, { depth: 8, showHidden: true }), JSON.stringify(context), String(context));
      });
      const { registry } = cells as unknown as { registry: { dataSources(): object[] } };
      expect(registry.dataSources()).toHaveLength(1);
      for (const dataSource of registry.dataSources()) {
        capture(inspect(dataSource, { depth: 12, showHidden: true, getters: true }));
      }
      const rows = await world.lib.getRepository(CellMapping, 'api').query('SELECT row_to_json(c)::text AS row FROM cell_mappings c');
      capture(...rows.map((r: { row: string }) => r.row));
      capture(inspect(cells, { depth: 12, showHidden: true }), JSON.stringify(cells), JSON.stringify(cells.stats()));
      const mapping = await cells.mappings.cellByUuid(cell.uuid);
      capture(inspect(mapping, { showHidden: true }), JSON.stringify(mapping));
      expect(rows.map((r: { row: string }) => r.row).join('\n')).toContain(`password=env:${ENV}`);
    } finally {
      await cells.destroy();
    }
  });
});

describe('the resolved password is in no span or metric', () => {
  it('spans and metrics of a cell whose reference resolves, and of one whose resolved password is refused', async () => {
    const sdk = createTestSdk();
    process.env[ENV] = password;
    const good = await mapCell('traced', `password=env:${ENV}`);
    const refusedCell = await mapCell('traced-refused', 'password=vault:traced');
    const cells = await openCells({
      telemetry: { tracerProvider: sdk.tracerProvider, meterProvider: sdk.meterProvider },
      resolveSecret: (ref) => (ref.kind === 'vault' ? `${SENTINEL}-refused` : undefined),
    });
    try {
      await countWidgets(cells, good);
      const refused = await countWidgets(cells, refusedCell).catch((e: unknown) => e);
      expect(refused).toMatchObject({ code: 'CELLS_CELL_UNREACHABLE' });
      const spans = sdk.spans();
      expect(spans.filter((span) => span.attributes['typeorm_cells.cell.uuid'] === good.uuid).length).toBeGreaterThan(0);
      expect(spans.filter((span) => span.attributes['typeorm_cells.cell.uuid'] === refusedCell.uuid).length).toBeGreaterThan(0);
      capture(...spans.map(exportedText));
      const metrics = await sdk.metrics();
      expect(metrics.size).toBeGreaterThan(0);
      capture(JSON.stringify([...metrics.values()].map((metric) => ({ name: metric.descriptor.name, points: pointsOf(metric) }))));
    } finally {
      await cells.destroy();
      await sdk.shutdown();
    }
  });
});

function captureError(fn: () => unknown): unknown {
  try {
    fn();
  } catch (error) {
    capture(error);
    return error;
  }
  throw new Error('expected an error');
}
