import { BadConnectionUrlError } from './errors';

/** The parts of a PostgreSQL connection URL that a TypeORM DataSource needs. */
export interface ConnectionParts {
  host: string;
  port: number;
  username: string;
  password: string | undefined;
  database: string;
  ssl: boolean | { rejectUnauthorized: boolean } | undefined;
}

/**
 * `scheme://user:` and what follows up to whitespace or an unescaped double quote (the end of a
 * JSON string). The password runs to the last `@` in that stretch, not the first: a password may
 * hold a raw `@`, `:` or `/`. Bounded repetitions keep it linear on hostile input.
 */
const URL_USERINFO = /\b([a-z][a-z0-9+.-]{0,31}:\/\/[^:/\s"]{0,512}:)((?:\\.|[^\s"\\])*)/gi;
/** `password=...` (libpq keywords), `password: '...'` (inspect) and `"password":"..."` (JSON). */
const KEYWORD_PASSWORD = /(\bpassword["']?\s*[:=]\s*)("(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|[^\s,;}]+)/gi;
/** The database engines typeorm-cells supports, as its errors name them. */
export const SUPPORTED_ENGINES =
  "typeorm-cells supports PostgreSQL only: a postgres:// or postgresql:// URL, or TypeORM options of type 'postgres'";

/** Longest connection URL accepted; real ones, query parameters included, are far shorter. */
const MAX_URL_LENGTH = 8192;
// eslint-disable-next-line no-control-regex -- control characters are exactly what it matches
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f]/;

/**
 * Replaces every password found in `text` (URL user-info, `password=` keywords, `password:` fields)
 * with `***`. Applied to every message, log line and CLI output that could carry a connection
 * string. Passwords may hold `@`, `:`, `/`, percent-escapes and any unicode; a raw space or double
 * quote ends a URL in free text, so a password holding one must be percent-encoded (as the URL
 * parser does) to be masked here. When unsure where a password ends, it masks more, never less.
 */
export function maskSecrets(text: string): string {
  return text
    .replace(URL_USERINFO, (match, prefix: string, rest: string) => {
      const at = rest.lastIndexOf('@');
      // No '@': `scheme://host:port/...`, no password.
      return at < 0 ? match : `${prefix}***${rest.slice(at)}`;
    })
    .replace(KEYWORD_PASSWORD, (_match, key: string, value: string) =>
      value.startsWith('"') || value.startsWith("'") ? `${key}${value[0]}***${value[0]}` : `${key}***`,
    );
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
 * Parses a `postgres://` or `postgresql://` URL into DataSource connection options.
 * @param url the connection URL; it is never copied into an error message.
 * @param cellLabel how errors name the cell (uuid or name).
 * @throws BadConnectionUrlError when the URL is empty, longer than 8192 characters, has control
 * characters, is unparsable, is not PostgreSQL or has no database.
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
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
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
  const port = parsed.port === '' ? 5432 : Number(parsed.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new BadConnectionUrlError(cellLabel, 'its port is out of range');
  }
  const sslmode = parsed.searchParams.get('sslmode') ?? parsed.searchParams.get('ssl');
  let ssl: ConnectionParts['ssl'];
  if (sslmode === 'verify-full' || sslmode === 'verify-ca') ssl = true;
  else if (sslmode === 'require' || sslmode === 'true' || sslmode === 'prefer') ssl = { rejectUnauthorized: false };
  return {
    host: parsed.hostname.replace(/^\[(.*)\]$/, '$1'),
    port,
    username: safeDecode(parsed.username, cellLabel) || 'postgres',
    password: parsed.password === '' ? undefined : safeDecode(parsed.password, cellLabel),
    database,
    ssl,
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
