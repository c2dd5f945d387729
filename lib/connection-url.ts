import { BadConnectionUrlError } from './errors';
import { parseSecretReference, type SecretReference } from './secret-reference';

/**
 * The database engines a cell (or the API database) may run on, as TypeORM's `type` names them:
 * `postgres://` and `postgresql://` URLs are `'postgres'`, `mysql://` is `'mysql'` and `mariadb://`
 * is `'mariadb'` (both on TypeORM's MySQL driver with the `mysql2` package).
 */
export type Engine = 'postgres' | 'mysql' | 'mariadb';

/** The engine of each URL scheme typeorm-cells reads. */
const ENGINE_OF_SCHEME: Readonly<Record<string, Engine>> = {
  'postgres:': 'postgres',
  'postgresql:': 'postgres',
  'mysql:': 'mysql',
  'mariadb:': 'mariadb',
};

/**
 * The TLS modes of `sslmode` / `ssl-mode` / `ssl` (libpq's, the MySQL client's, and booleans; any
 * case): `off` connects in plain text, `encrypt` with TLS without verifying the certificate,
 * `verify` with a verified one. As node-postgres does, `allow` and `prefer` (`PREFERRED`) encrypt
 * and never fall back to plain text.
 */
const SSL_MODES: Readonly<Record<string, 'off' | 'encrypt' | 'verify'>> = {
  disable: 'off',
  disabled: 'off',
  false: 'off',
  '0': 'off',
  allow: 'encrypt',
  prefer: 'encrypt',
  preferred: 'encrypt',
  require: 'encrypt',
  required: 'encrypt',
  true: 'encrypt',
  '1': 'encrypt',
  'verify-ca': 'verify',
  'verify-full': 'verify',
  verify_ca: 'verify',
  verify_identity: 'verify',
};

/** The query parameters that set the TLS mode: one of them at most. */
const TLS_PARAMETERS: ReadonlySet<string> = new Set(['sslmode', 'ssl-mode', 'ssl']);

/** The port each engine's server listens on by default. */
const DEFAULT_PORT: Readonly<Record<Engine, number>> = { postgres: 5432, mysql: 3306, mariadb: 3306 };
/** The user a URL without one connects as (each engine's superuser, as its own clients default to). */
const DEFAULT_USER: Readonly<Record<Engine, string>> = { postgres: 'postgres', mysql: 'root', mariadb: 'root' };

/** The parts of a connection URL that a TypeORM DataSource needs. */
export interface ConnectionParts {
  /** TypeORM's `type`, from the URL's scheme. */
  type: Engine;
  host: string;
  port: number;
  username: string;
  password: string | undefined;
  /**
   * From `?password=<kind>:<reference>`: where the password is kept, resolved when the DataSource
   * opens (secret-reference.ts). Never given with `password`.
   */
  passwordRef?: SecretReference;
  database: string;
  ssl: boolean | { rejectUnauthorized: boolean } | undefined;
  /** PostgreSQL: from `?application_name=`: what the server shows in `pg_stat_activity.application_name`. */
  applicationName?: string;
  /** MySQL/MariaDB: from `?charset=`: the connection's character set and collation (mysql2's `charset`). */
  charset?: string;
}

/**
 * The query parameters a connection URL may carry, per engine (libpq's names for PostgreSQL;
 * `ssl-mode` is the MySQL client's). Any other is refused rather than silently dropped: a URL that
 * works with psql or mysql must not quietly mean something else here.
 */
const URL_PARAMETERS: Readonly<Record<Engine, ReadonlySet<string>>> = {
  postgres: new Set(['sslmode', 'ssl', 'application_name', 'password']),
  mysql: new Set(['sslmode', 'ssl-mode', 'ssl', 'charset', 'password']),
  mariadb: new Set(['sslmode', 'ssl-mode', 'ssl', 'charset', 'password']),
};

/** `scheme://user:`: where a URL's password would start. */
const URL_PASSWORD_START = /\b[a-z][a-z0-9+.-]{0,31}:\/\/[^:/\s"]{0,512}:/gi;
/**
 * `password=...` (libpq keywords, also `PGPASSWORD=`), `password: '...'` (inspect) and
 * `"password":"..."` (JSON), and ODBC's and ADO.NET's `Pwd=`; also after `_` (`MYSQL_PWD=`, the
 * MySQL client's variable, `DB_PASSWORD=`). A quoted value runs to its closing quote (backslash
 * escapes kept), an ODBC braced one to its closing `}` (`}}` is one inside it); an unquoted one, as
 * in libpq, to whitespace or `}` (which ends an object), past a `;` (a libpq password may hold one; in a `key=value;` string the rest of it is
 * masked too: more, never less), and a `"` belongs to it unless it closes a JSON string around the
 * keyword.
 */
// MySQL's and MariaDB's `(using password: YES)` (or `NO`) says only whether one was sent: kept.
const KEYWORD_PASSWORD =
  /((?:\b|(?<=_))(?:pg)?(?:password|pwd)["']?\s*[:=]\s*)(?!(?<=\(using password: )(?:YES|NO)\))("(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|\{(?:[^}]|\}\})*\}|(?:\\.|[^\s\\}"]|"(?=[^\s,;}\]"]))+)/gi;
/** What follows a URL's password: `@host:port` or `@host/path` (or `?query`). */
const URL_REST = /^@(?:[^\s"@/?#:[\]]+|\[[0-9a-f:.%]+\])(?::\d{1,5}(?:[/?#]|$)|[/?#])/i;
/** What follows a URL's password, at the least: `@host`. */
const HOST_REST = /^@(?:[^\s"@/?#:[\]]+|\[[0-9a-f:.%]+\])(?:[:/?#]|$)/i;
/** What ends a URL's authority (user-info, host and port): no raw password holds one. */
const AUTHORITY_END = /[/?#]/;
/**
 * A first token after `scheme://name:` that reads as the rest of `host:port` (`5432`) or of an IPv6
 * `[::1]:port` (`:1]:5432`) rather than as a password: only a later `@host:port` or `@host/path`
 * on its line makes it a password.
 */
const HOST_PORT_TOKEN = /^(?:\d{1,5}|[\w:.%-]*\](?::\d{0,5})?)$/;
/** The database engines typeorm-cells supports, as its errors name them. */
export const SUPPORTED_ENGINES =
  "typeorm-cells supports PostgreSQL, MySQL and MariaDB: a postgres://, postgresql://, mysql:// or mariadb:// URL, or TypeORM options of type 'postgres', 'mysql' or 'mariadb'";

/** Longest connection URL accepted; real ones, query parameters included, are far shorter. */
const MAX_URL_LENGTH = 8192;
// eslint-disable-next-line no-control-regex -- control characters are exactly what it matches
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f]/;
/**
 * How far past `scheme://user:` a password with a raw space or quote is looked for: the longest
 * URL accepted, with every character escaped (as JSON and inspect write `"` and `\`).
 */
const MAX_SPACED_PASSWORD = 2 * MAX_URL_LENGTH;

/**
 * Replaces every password found in `text` (URL user-info, `password=` keywords, `password:` fields)
 * with `***`. Applied to every message, log line and CLI output that could carry a connection
 * string. Passwords may hold `@`, `:`, `/`, `\`, brackets, percent-escapes, any unicode, and a raw
 * space or double quote (a URL in free text then runs on to the last `@` of its line that
 * `host:port` or `host/path` follows). A URL's built-in secret reference (`?password=env:NAME`,
 * `&password=file:/path`) is no password and is kept. When unsure where a password ends, it masks more, never
 * less; text holding no URL user-info and no password keyword is returned unchanged. Linear in the
 * length of `text`.
 */
export function maskSecrets(text: string): string {
  let masked = '';
  let from = 0;
  URL_PASSWORD_START.lastIndex = 0;
  for (let match = URL_PASSWORD_START.exec(text); match !== null; match = URL_PASSWORD_START.exec(text)) {
    const start = match.index + match[0].length;
    const { at, scanned } = urlPasswordEnd(text, start);
    if (at >= 0) {
      masked += `${text.slice(from, start)}***`;
      from = at;
    }
    // Linear time: what was scanned is not scanned again for another URL.
    URL_PASSWORD_START.lastIndex = Math.max(at, scanned);
  }
  masked += text.slice(from);
  return maskEncodedQueryPasswords(maskKeywordPasswords(masked));
}

/** Masks the values of `password=` keywords and fields, keeping a URL query's built-in references. */
function maskKeywordPasswords(text: string): string {
  return text.replace(KEYWORD_PASSWORD, (match: string, key: string, value: string, offset: number, whole: string) => {
    const reference = queryReference(key, value, whole[offset - 1]);
    // What follows the reference (`&password=literal`...) is masked in turn.
    if (reference !== undefined) return `${key}${reference}${maskKeywordPasswords(value.slice(reference.length))}`;
    return value.startsWith('"') || value.startsWith("'") ? `${key}${value[0]}***${value[0]}` : `${key}***`;
  });
}

/** A query parameter whose name holds a percent-escape: `?pass%77ord=value`, `&%70assword=...`. */
const ENCODED_QUERY_PARAMETER = /([?&])([^\s=&#"'?]*%[0-9a-f]{2}[^\s=&#"'?]*)=([^\s&#"']*)/gi;

/**
 * Masks the values of query parameters whose names decode to `password` (`?pass%77ord=`): the URL
 * parser decodes names, so parseConnectionUrl reads them as the password parameter.
 */
function maskEncodedQueryPasswords(text: string): string {
  return text.replace(ENCODED_QUERY_PARAMETER, (match: string, before: string, name: string, value: string) => {
    let decoded: string;
    try {
      decoded = decodeURIComponent(name);
    } catch {
      decoded = name;
    }
    if (!/^(?:pg)?password$/i.test(decoded)) return match;
    if (queryReference('password=', value, before) === value) return match;
    return `${before}${name}=***`;
  });
}

/** A built-in secret reference as a URL's query gives it: `env:NAME` or `file:/path`, to `&`, `#` or the end. */
const QUERY_REFERENCE = /^(?:env:[A-Za-z_][A-Za-z0-9_]*|file:\/[^\s&#"'\\]*)(?=[&#]|$)/;

/**
 * The reference of `?password=env:NAME` or `&password=file:/path` (secret-reference.ts), without
 * what follows it: a URL's query names where its password is kept, which is no secret and which
 * operators need to see. Other kinds (`resolveSecret`'s) stay masked: their references are the
 * user's to judge. Undefined for anything else.
 */
function queryReference(key: string, value: string, before: string | undefined): string | undefined {
  if (key !== 'password=' || (before !== '?' && before !== '&')) return undefined;
  return QUERY_REFERENCE.exec(value)?.[0];
}

/**
 * Where the password of a URL whose user-info starts at `start` ends (`at`: the index of the `@`
 * after it, or -1 when the URL has none), and the end of its first token (`scanned`). Text is cut
 * into tokens at whitespace and unescaped double quotes (which end a URL in free text and JSON).
 * A password may hold a raw `@`, space or quote but never a raw `/`, `?` or `#` (they end the
 * authority), so the tokens of its line are read up to the first that holds one of those, another
 * URL, or the line's end. The password runs to the last `@` among them that a `host:port` or
 * `host/path` follows; failing that, to the first token's last `@`; failing that (and unless the
 * first token reads as `port` or `[v6]:port`), to the last `@` that a bare host follows.
 */
function urlPasswordEnd(text: string, start: number): { at: number; scanned: number } {
  const limit = Math.min(text.length, start + MAX_SPACED_PASSWORD);
  const first = nextToken(text, start, text.length);
  const scanned = first.end;
  if (first.lastAt < 0 && AUTHORITY_END.test(first.text)) return { at: -1, scanned };
  const bareHostEnds = first.lastAt < 0 && !HOST_PORT_TOKEN.test(first.text);
  let at = first.lastAt;
  let hostPortFound = false;
  for (let token = first; ; ) {
    if (token.lastAt >= 0) {
      const rest = text.slice(token.lastAt, token.end);
      if (URL_REST.test(rest)) {
        at = token.lastAt;
        hostPortFound = true;
      } else if (bareHostEnds && !hostPortFound && HOST_REST.test(rest)) {
        at = token.lastAt;
      }
    }
    if (AUTHORITY_END.test(token.text) || token.end >= limit || text[token.end] === '\n') break;
    token = nextToken(text, token.end + 1, limit);
    if (token.text.includes('://')) break;
  }
  return { at, scanned };
}

/**
 * The token of `text` from `start` (to whitespace or an unescaped `"`, before `limit`) and its last
 * `@`. Only `\"` and `\\` are escapes (JSON's and inspect's): a lone `\` is a character of its own,
 * so a raw password ending in one still ends at its `@`.
 */
function nextToken(text: string, start: number, limit: number): { end: number; lastAt: number; text: string } {
  let end = start;
  let lastAt = -1;
  while (end < limit) {
    const char = text[end]!;
    if (char === '\\' && (text[end + 1] === '"' || text[end + 1] === '\\')) end += 2;
    else if (char === '"' || /\s/.test(char)) break;
    else {
      if (char === '@') lastAt = end;
      end++;
    }
  }
  end = Math.min(end, limit);
  return { end, lastAt, text: text.slice(start, end) };
}

/**
 * Returns `url` with its password replaced by `***`, for display; an unparsable URL is masked
 * textually instead, so the result is always safe to print.
 */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return maskSecrets(url);
  }
}

/**
 * Parses a `postgres://`, `postgresql://`, `mysql://` or `mariadb://` URL into DataSource
 * connection options; `type` names the engine. Without a port: 5432 (PostgreSQL), 3306 (MySQL,
 * MariaDB); without a user: `postgres` or `root`.
 * @param url the connection URL; it is never copied into an error message.
 * @param cellLabel how errors name the database (`cell 'name' (uuid)`, `the API database`).
 * @throws BadConnectionUrlError when the URL is empty, longer than 8192 characters, has control
 * characters, is unparsable, has another scheme, has no database, or carries a query parameter
 * its engine does not read (PostgreSQL: `sslmode`, `ssl`, `application_name`, `password`; MySQL and
 * MariaDB: `sslmode`, `ssl-mode`, `ssl`, `charset`, `password`), or a `?password=` that is not a
 * secret reference (`env:NAME`, `file:/absolute/path`, `<kind>:<reference>`) or comes with a
 * password after the user name.
 */
export function parseConnectionUrl(url: unknown, cellLabel: string): ConnectionParts {
  if (typeof url !== 'string' || url.trim() === '') {
    throw new BadConnectionUrlError(cellLabel, 'it is empty');
  }
  if (url.length > MAX_URL_LENGTH) {
    throw new BadConnectionUrlError(cellLabel, `it is longer than ${MAX_URL_LENGTH} characters`);
  }
  // The URL parser silently drops tabs and newlines (so 'db\nhost=x' names database 'dbhost=x'),
  // and PostgreSQL cannot store a NUL byte: refuse them rather than use something else.
  if (CONTROL_CHARACTER.test(url)) {
    throw new BadConnectionUrlError(cellLabel, 'it contains a control character (newline, tab, NUL...)');
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new BadConnectionUrlError(cellLabel, 'it cannot be parsed as a URL');
  }
  const type = ENGINE_OF_SCHEME[parsed.protocol];
  if (type === undefined) {
    throw new BadConnectionUrlError(
      cellLabel,
      `scheme '${parsed.protocol.replace(/:$/, '').slice(0, 20)}' is not supported; ${SUPPORTED_ENGINES}`,
    );
  }
  if (!parsed.hostname) throw new BadConnectionUrlError(cellLabel, 'it has no host');
  const database = safeDecode(parsed.pathname.replace(/^\//, ''), cellLabel);
  if (!database || database.includes('/')) {
    throw new BadConnectionUrlError(cellLabel, 'it names no single database in its path');
  }
  const port = parsed.port === '' ? DEFAULT_PORT[type] : Number(parsed.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new BadConnectionUrlError(cellLabel, 'its port is out of range');
  }
  const known = URL_PARAMETERS[type];
  const given = [...parsed.searchParams.keys()];
  // A second value (`?sslmode=require&sslmode=disable`, or `ssl` beside `sslmode`) would be ignored.
  const repeated = given.find((key, index) => given.indexOf(key) !== index);
  if (repeated !== undefined) {
    throw new BadConnectionUrlError(cellLabel, `query parameter '${repeated.slice(0, 40)}' is given more than once`);
  }
  if (given.filter((key) => TLS_PARAMETERS.has(key)).length > 1) {
    throw new BadConnectionUrlError(cellLabel, `it gives its TLS mode more than once (${[...TLS_PARAMETERS].join(', ')})`);
  }
  for (const key of given) {
    if (!known.has(key)) {
      throw new BadConnectionUrlError(
        cellLabel,
        `query parameter '${key.slice(0, 40)}' is not supported; the ones read are ${[...known].join(', ')}` +
          (key === 'user' ? ', and the user goes before the host' : ''),
      );
    }
  }
  const reference = parsed.searchParams.get('password');
  if (reference !== null && parsed.password !== '') {
    throw new BadConnectionUrlError(cellLabel, 'it gives both a password after the user name and a secret reference in its query: keep one');
  }
  const passwordRef = reference === null ? undefined : parseSecretReference(reference, cellLabel);
  const applicationName = parsed.searchParams.get('application_name') ?? undefined;
  const charset = parsed.searchParams.get('charset') ?? undefined;
  const sslmode = (
    parsed.searchParams.get('sslmode') ??
    parsed.searchParams.get('ssl-mode') ??
    parsed.searchParams.get('ssl')
  )?.toLowerCase();
  let ssl: ConnectionParts['ssl'];
  // A value read as something else (a typo: `requird`, `verify_full`) would connect in plain text.
  if (sslmode !== undefined && !Object.hasOwn(SSL_MODES, sslmode)) {
    throw new BadConnectionUrlError(
      cellLabel,
      `its TLS mode '${sslmode.slice(0, 40)}' is not one of ${Object.keys(SSL_MODES).join(', ')}`,
    );
  }
  const tls = sslmode === undefined ? 'off' : SSL_MODES[sslmode];
  // mysql2 takes an object (its default verifies the certificate); pg takes `true`.
  if (tls === 'verify') ssl = type === 'postgres' ? true : { rejectUnauthorized: true };
  else if (tls === 'encrypt') ssl = { rejectUnauthorized: false };
  return {
    type,
    host: parsed.hostname.replace(/^\[(.*)\]$/, '$1'),
    port,
    username: safeDecode(parsed.username, cellLabel) || DEFAULT_USER[type],
    password: parsed.password === '' ? undefined : safeDecode(parsed.password, cellLabel),
    ...(passwordRef === undefined ? {} : { passwordRef }),
    database,
    ssl,
    ...(applicationName === undefined ? {} : { applicationName }),
    ...(charset === undefined ? {} : { charset }),
  };
}

function safeDecode(part: string, cellLabel: string): string {
  let decoded: string;
  try {
    decoded = decodeURIComponent(part);
  } catch {
    throw new BadConnectionUrlError(cellLabel, 'it contains a malformed percent-escape');
  }
  // PostgreSQL sends names and passwords as C strings: a NUL byte would cut them short.
  if (decoded.includes('\u0000')) {
    throw new BadConnectionUrlError(cellLabel, 'it contains a percent-encoded NUL byte (%00)');
  }
  return decoded;
}
