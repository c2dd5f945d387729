import { randomBytes } from 'node:crypto';
import { inspect } from 'node:util';
import fc from 'fast-check';
import {
  BadConnectionUrlError,
  CellMapping,
  CellUnreachableError,
  Cells,
  DuplicateMappingError,
  RequestContext,
  maskSecrets,
  redactUrl,
  targetCell,
  type CellsLogEvent,
} from '../lib';
import { parseConnectionUrl } from '../lib/connection-url';
import { createCellWorld, widgetFor, type CellWorld } from './support/cells';
import { asRole, createRole, withPassword } from './support/databases';
import { Widget } from './support/widget';
import { capturingLogger, closedPort } from './support/peers';

const SENTINEL = `S3ntinel-${randomBytes(6).toString('hex')}`;
const captured: string[] = [];
const capture = (...parts: unknown[]) => captured.push(parts.map((p) => (typeof p === 'string' ? p : inspect(p, { depth: 6 }))).join(' '));

const captureLogger = capturingLogger(capture);

let world: CellWorld;
let roleUrl: string;

beforeAll(async () => {
  roleUrl = await createRole(`cells_secret_${process.pid}`, SENTINEL);
  world = await createCellWorld('secret', {
    cellCount: 2,
    connectionUrl: asRole(roleUrl, SENTINEL),
    apiOptions: { logging: 'all', logger: captureLogger },
    cells: {
      logger: (e: CellsLogEvent) => capture('cells', e),
      cellDataSourceOptions: { logging: 'all', logger: captureLogger },
    },
  });
});
afterAll(async () => {
  await world?.destroy();
  // The sentinel must be nowhere in what the whole file produced.
  expect(captured.length).toBeGreaterThan(0);
  expect(captured.filter((line) => line.includes(SENTINEL))).toEqual([]);
});

describe('connection secrets', () => {
  it('routes through cells whose URL carries the sentinel password', async () => {
    const widgets = world.lib.getRepository(Widget);
    const target = world.cells[0]!.mapping;
    await targetCell(target, () => widgets.insert(widgetFor(target.uuid)));
    expect(await targetCell(target, () => widgets.count())).toBe(1);
  });

  it('masks the password in CellMapping toJSON and inspect', async () => {
    const [cell] = await world.lib.getRepository(CellMapping, 'api').find({ take: 1 });
    expect(cell!.databaseConnection).toContain(SENTINEL);
    const shown = [JSON.stringify(cell), inspect(cell), inspect([cell], { depth: 5 })];
    capture(...shown);
    for (const text of shown) {
      expect(text).not.toContain(SENTINEL);
      expect(text).toContain('***');
    }
  });

  it('keeps the connection URLs of open cells only in memory', async () => {
    const cells = await new Cells({ api: world.api.url, entities: [Widget], maxOpenCells: 1, poolSize: 1 }).initialize();
    const kept = (): string[] => [...(cells as unknown as { cellConnections: Map<string, string> }).cellConnections.keys()];
    try {
      const widgets = cells.getRepository(Widget);
      for (const { mapping } of world.cells) {
        await targetCell(mapping, () => widgets.count());
        expect(kept()).toEqual([mapping.uuid]);
      }
      cells.evictCell(world.cells[1]!.mapping.uuid);
      expect(kept()).toEqual([]);
      await targetCell(world.cells[0]!.mapping, () => widgets.count());
    } finally {
      await cells.destroy();
    }
    expect(kept()).toEqual([]);
  });

  it('keeps the context free of URLs and passwords', async () => {
    const cell = world.cells[1]!.mapping;
    await targetCell(cell, async () => {
      const ctx = new RequestContext({ cell });
      const shown = [JSON.stringify(ctx), String(ctx), inspect(ctx)];
      capture(...shown);
      for (const text of shown) expect(text).not.toContain(SENTINEL);
    });
  });

  it('names an unreachable cell without its connection string', async () => {
    const port = await closedPort();
    const mapping = await world.lib.mappings.createCell({
      name: 'secret-down',
      databaseConnection: `postgres://someone:${SENTINEL}@127.0.0.1:${port}/nowhere`,
    });
    const widgets = world.lib.getRepository(Widget);
    const error = await targetCell(mapping, () => widgets.count()).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CellUnreachableError);
    const text = [String(error), (error as Error).stack, inspect(error, { depth: 8 }), JSON.stringify(error)].join('\n');
    capture(text);
    expect(text).toContain('secret-down');
    expect(text).not.toContain(SENTINEL);
  });

  it('masks a password ending in a backslash in query logs and a duplicate-mapping error', async () => {
    const port = await closedPort();
    const init = {
      name: 'secret-backslash',
      databaseConnection: `postgres://someone:${SENTINEL}\\@127.0.0.1:${port}/db`,
    };
    const logged = captured.length;
    await world.lib.mappings.createCell(init);
    const error = await world.lib.mappings.createCell(init).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DuplicateMappingError);
    const shown = [inspect(error, { depth: 8 }), JSON.stringify(error), ...captured.slice(logged)];
    capture(...shown);
    expect(shown.some((text) => text.includes('someone:***@127.0.0.1'))).toBe(true);
    expect(shown.filter((text) => text.includes(SENTINEL))).toEqual([]);
  });

  it('rejects a malformed connection URL with a typed error that does not echo it', async () => {
    const bad = `postgres://u:${SENTINEL}@[bad/db`;
    const error = await world.lib.mappings.createCell({ name: 'secret-bad', databaseConnection: bad }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BadConnectionUrlError);
    capture(inspect(error), (error as Error).stack);
    expect(inspect(error)).not.toContain(SENTINEL);
    const notPostgres = await world.lib.mappings
      .createCell({ name: 'secret-mssql', databaseConnection: `mssql://u:${SENTINEL}@h/db` })
      .catch((e: unknown) => e);
    expect(notPostgres).toMatchObject({ code: 'CELLS_BAD_CONNECTION_URL' });
  });

  it('fails to start against an unreachable API database without leaking its password', async () => {
    const port = await closedPort();
    const cells = new Cells({ api: `postgres://x:${SENTINEL}@127.0.0.1:${port}/api`, entities: [Widget] });
    const error = await cells.initialize().catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'CELLS_CELL_UNREACHABLE' });
    capture(inspect(error, { depth: 8 }));
    expect(inspect(error, { depth: 8 })).not.toContain(SENTINEL);
    await cells.destroy();
  });

  describe('masks passwords that URLs and texts make awkward', () => {
    // Each password's parts are distinct tokens: none of them may survive masking.
    const hostile: Array<[string, string[]]> = [
      ['a raw @', ['Pa1x', 'Pa2x']],
      ['raw @ and :', ['Pb1x', 'Pb2x', 'Pb3x']],
      ['raw /', ['Pc1x', 'Pc2x']],
      ['a %-escaped @', ['Pd1x', 'Pd2x']],
      ['unicode', ['Pé1x', '密码2x', '🔑3x']],
      ['a raw space', ['Pf1x', 'Pf2x']],
      ['a raw "', ['Pg1x', 'Pg2x']],
      ['raw spaces, quotes and @', ['Ph1x', 'Ph2x', 'Ph3x', 'Ph4x']],
    ];
    const joiners: Record<string, (parts: string[]) => string> = {
      'a raw @': (p) => p.join('@'),
      'raw @ and :': (p) => `${p[0]}@${p[1]}:${p[2]}`,
      'raw /': (p) => p.join('/'),
      'a %-escaped @': (p) => p.join('%40'),
      unicode: (p) => p.join(''),
      'a raw space': (p) => p.join(' '),
      'a raw "': (p) => p.join('"'),
      'raw spaces, quotes and @': (p) => `${p[0]}@${p[1]} ${p[2]}"${p[3]}`,
    };
    const forms: Array<[string, (url: string) => string]> = [
      ['alone', (url) => url],
      ['in a sentence', (url) => `could not connect to ${url} (retrying)`],
      ['in a TypeORM parameter list', (url) => `-- PARAMETERS: ${JSON.stringify(['c1', url, null, false])}`],
      ['in JSON beside another URL', (url) => JSON.stringify({ a: url, b: 'amqp://g:x@mq:5672/', c: 'x@y' })],
      ['in quotes', (url) => `url '${url}' refused`],
    ];
    it.each(hostile.flatMap(([what, parts]) => forms.map(([form, wrap]) => [what, form, parts, wrap] as const)))(
      'holding %s, %s',
      (what, _form, parts, wrap) => {
        const url = `postgres://cells_user:${joiners[what]!(parts)}@db.example:5432/cell1`;
        const masked = maskSecrets(wrap(url));
        for (const part of parts) expect(masked).not.toContain(part);
        expect(masked).toContain('***@');
        capture(masked);
      },
    );

    it('in libpq keywords, inspect output and JSON', () => {
      for (const text of [
        `host=h password='Kw1x \\' Kw2x' dbname=d`,
        `host=h password = 'Kw1x Kw2x' dbname=d`,
        `host=h password=Kw1x"Kw2x dbname=d`,
        `host=h password=Kw1x,Kw2x dbname=d`,
        `PGPASSWORD=Kw1x,Kw2x psql -h h`,
        `host=h password=Kw1x;Kw2x dbname=d`,
        `Server=h;Uid=u;Pwd=Kw1x;Kw2x`,
        `Server=h;Uid=u;PWD=Kw1x.Kw2x;`,
        // ODBC's braced value holds spaces, ';' and '}' (doubled).
        `Driver={MariaDB};Server=h;Uid=u;Pwd={Kw1x Kw2x};Database=d`,
        `Driver={MariaDB};Uid=u;PWD={Kw1x}};Kw2x} Database=d`,
        // The MySQL client's own variable, and an application's.
        `MYSQL_PWD=Kw1x,Kw2x mysql -h h`,
        `DB_PASSWORD=Kw1x,Kw2x node app.js`,
        `{ password: 'Kw1x, Kw2x', host: 'h' }`,
        JSON.stringify({ password: 'Kw1x" Kw2x', host: 'h' }),
        JSON.stringify({ Password: 'Kw1x Kw2x' }),
        `-- PARAMETERS: ${JSON.stringify(['password=Kw1x"Kw2x', "host=h password='Kw1x Kw2x'"])}`,
      ]) {
        const masked = maskSecrets(text);
        expect(masked).not.toContain('Kw1x');
        expect(masked).not.toContain('Kw2x');
      }
    });

    it('leaves URLs without a password as they are', () => {
      for (const text of ['postgres://u@h:5432/db', 'postgres://h:5432/db', 'see admin@example.com']) {
        expect(maskSecrets(text)).toBe(text);
      }
    });

    it('leaves ordinary messages that hold URLs, addresses and quotes as they are', () => {
      for (const text of [
        'connect postgres://u@h:5432/db failed for "bob@example.com"',
        'GET http://localhost:3000/health ok; alert ops@example.com or "admin@example.com"',
        'postgres://[::1]:5432/db is down, ask dba@example.com/oncall',
        'postgres://h:5432/db then x@y.com:8080/z',
        JSON.stringify({ url: 'postgres://u@h:5432/db', mail: 'a b@example.com', note: 'say "hi"' }),
        'password authentication failed for user "bob"',
        // MySQL's and MariaDB's refusal says whether a password was sent, not which.
        "Access denied for user 'bob'@'10.0.0.7' (using password: YES)",
        "Access denied for user 'bob'@'localhost' (using password: NO)",
        'cell "c1" at postgres://h:5432/db: 3 rows, owner carol@example.com',
      ]) {
        expect(maskSecrets(text)).toBe(text);
      }
    });

    it('masks only the password of a URL followed by other text on its line', () => {
      expect(maskSecrets('postgres://u:Pi1x@h/db failed for bob@example.com (user "x y@z")')).toBe(
        'postgres://u:***@h/db failed for bob@example.com (user "x y@z")',
      );
      expect(maskSecrets('postgres://u:Pi1x Pi2x@h:5432/db failed for bob@example.com')).toBe(
        'postgres://u:***@h:5432/db failed for bob@example.com',
      );
      expect(maskSecrets('postgres://u:Pi1x@localhost failed; mail bob@example.com')).toBe(
        'postgres://u:***@localhost failed; mail bob@example.com',
      );
      expect(maskSecrets(`["postgres://u:Pi1x\\"Pi2x@h/db","x@y",{"password":"Pi3x Pi4x"}]`)).toBe(
        `["postgres://u:***@h/db","x@y",{"password":"***"}]`,
      );
    });

    // Not a timed test: quadratic or exponential backtracking on these would not finish within
    // the test's limit (Jest's 5 s), where a linear scan takes milliseconds.
    it('finishes on hostile input that makes backtracking patterns blow up', () => {
      const inputs = [
        `${'a'.repeat(1 << 20)}${'postgres://u:'.repeat(1000)}${'@'.repeat(1 << 16)}`,
        `${'postgres://u:'.repeat(80_000)}${'x'.repeat(1 << 20)}`,
        'postgres://u:x '.repeat(80_000),
        `password=${'"x'.repeat(1 << 19)}`,
      ];
      for (const input of inputs) expect(typeof maskSecrets(input)).toBe('string');
    }, 5_000);

    it('in a megabyte of hostile text, without backtracking', () => {
      const n = 1 << 19;
      // Compared by length and ends: a failure shows those rather than a megabyte.
      const expectMasked = (text: string, expected: string): void => {
        const digest = (t: string) => ({ length: t.length, head: t.slice(0, 40), tail: t.slice(-40) });
        expect(digest(maskSecrets(text))).toEqual(digest(expected));
      };
      for (const text of [
        `postgres://u:${'x '.repeat(n)}`,
        `postgres://u:${'\\"'.repeat(n)}`,
        `postgres://u:x ${'"@'.repeat(n)}`,
        `postgres://u:${'1]'.repeat(n)} x@h:1`,
      ]) {
        expectMasked(text, text);
      }
      expectMasked(`postgres://u:${'\\'.repeat(2 * n)}@h:5432/db`, 'postgres://u:***@h:5432/db');
      expectMasked(`postgres://u:${'a@b '.repeat(n / 2)}`, `postgres://u:***@b ${'a@b '.repeat(n / 2 - 1)}`);
      expectMasked(
        `${'postgres://u:1 '.repeat(n / 8)}x@h:5432/db`,
        `${'postgres://u:1 '.repeat(n / 8 - 1)}postgres://u:***@h:5432/db`,
      );
    });

    it('in a query beside a built-in secret reference, or under a percent-encoded name', () => {
      for (const text of [
        'postgres://u@h/db?password=env:X&password=Qh1x',
        'postgres://u@h/db?password=file:/run/s&sslmode=require&password=Qh1x',
        'postgres://u@h/db?pass%77ord=Qh1x',
        'postgres://u@h/db?sslmode=require&%70assword=Qh1x#frag',
        'mysql://u@h/db?PASS%57ORD=Qh1x',
      ]) {
        expect(maskSecrets(text)).not.toContain('Qh1x');
      }
      expect(maskSecrets('postgres://u@h/db?password=env:X&password=Qh1x')).toBe('postgres://u@h/db?password=env:X&password=***');
      expect(maskSecrets('postgres://u@h/db?pass%77ord=env:X&ssl=true')).toBe('postgres://u@h/db?pass%77ord=env:X&ssl=true');
    });
  });

  describe('masks every password that parseConnectionUrl accepts', () => {
    const url = (password: string): string => `postgres://app:${password}@db.example:5432/cell_7`;
    /** The five texts a connection URL turns up in: alone, a message, JSON, inspect output, a TypeORM log line. */
    const forms: Array<[string, (url: string) => string]> = [
      ['alone', (u) => u],
      ['in a sentence', (u) => `error: failed connecting ${u}: connect ECONNREFUSED`],
      ['in JSON', (u) => JSON.stringify({ cell: 'c7', databaseConnection: u })],
      ['in inspect output', (u) => inspect({ parameters: ['5f0c-uuid', u] })],
      [
        'in a TypeORM log line',
        (u) => `query: INSERT INTO "x" VALUES ($1, $2) -- PARAMETERS: ${JSON.stringify(['n', u])}`,
      ],
    ];

    /**
     * The substrings of `secrets` (of length 4, as written raw, percent-encoded, JSON- or
     * inspect-escaped) that `masked` still shows and that the masked URL's own text does not.
     */
    function leaks(secrets: string[], masked: string): string[] {
      const context =
        forms.map(([, wrap]) => wrap(url('***'))).join(' ') + ` "${url('***')}" \`${url('***')}\``;
      const shown = new Set<string>();
      for (const written of secrets.flatMap((secret) => [secret, encodeURIComponent(secret)])) {
        for (const variant of [
          written,
          JSON.stringify(written).slice(1, -1),
          inspect(written).slice(1, -1),
        ]) {
          const chars = [...variant];
          for (let i = 0; i + 4 <= chars.length; i++) {
            const window = chars.slice(i, i + 4).join('');
            if (masked.includes(window) && !context.includes(window)) shown.add(window);
          }
        }
      }
      return [...shown];
    }

    /** The password parseConnectionUrl reads from the URL holding `written`, or undefined when it refuses it. */
    function passwordRead(written: string): string | undefined {
      try {
        return parseConnectionUrl(url(written), 'the property').password;
      } catch {
        return undefined;
      }
    }

    /** Checks `written` (a raw password) and its percent-encoding in every form. */
    function expectMasked(written: string, password: string): void {
      for (const inUrl of [written, encodeURIComponent(written)]) {
        for (const [form, wrap] of forms) {
          const masked = maskSecrets(wrap(url(inUrl)));
          const shown = leaks([written, password], masked);
          expect({ form, inUrl, masked, shown }).toEqual({ form, inUrl, masked, shown: [] });
          expect(masked).toContain('***@db.example:5432/cell_7');
        }
      }
    }

    it.each([
      ['ends in a backslash', 'hunter2\\'],
      ['holds ] and a space', 'ab]c d'],
      ['holds ] and a "', 'ab]c"d'],
      ['holds " and @', 'QeqVk€4tNR[ @="UZ'],
    ])('when it %s', (_what, password) => {
      expect(passwordRead(password)).toBe(password);
      expectMasked(password, password);
    });

    it('from a hostile alphabet, in every form (property)', () => {
      const hostile = [
        ...' !"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~',
        ...'aZ09',
        'é',
        '€',
        'ß',
        '密',
        '😀',
        '🔑',
        '\u00a0',
        '\u2028',
      ];
      const password = fc
        .array(
          fc.oneof(
            { arbitrary: fc.constantFrom(...hostile), weight: 3 },
            { arbitrary: fc.constantFrom(...'Qkx7'), weight: 2 },
          ),
          {
            minLength: 1,
            maxLength: 24,
          },
        )
        .map((chars) => chars.join(''));
      let checked = 0;
      fc.assert(
        fc.property(password, (p) => {
          // A URL the parser refuses (a malformed %-escape) or reads otherwise (a raw / ? # ends its
          // authority, so the password is what comes before) proves nothing here.
          const read = passwordRead(p);
          if (read === undefined || read !== decodeURIComponent(p)) return;
          checked++;
          expectMasked(p, read);
        }),
        { numRuns: 2000, seed: 0x5ec7e75 },
      );
      // Most generated passwords are ones the parser accepts: the property is not vacuous.
      expect(checked).toBeGreaterThan(1000);
    });
  });

  it('masks passwords in any text', () => {
    expect(maskSecrets(`connect postgres://u:${SENTINEL}@h:5432/db and password=${SENTINEL} now`)).toBe(
      'connect postgres://u:***@h:5432/db and password=*** now',
    );
    expect(redactUrl(withPassword('postgres://u:p@h/db', SENTINEL))).toBe('postgres://u:***@h/db');
  });
});
