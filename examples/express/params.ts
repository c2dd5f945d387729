import { MAX_SERVER_NAME } from './entities/Server';
import { HttpError, type AppErrorCode } from './errors';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Default and largest page size of `GET /servers`. */
export const DEFAULT_LIMIT = 25;
export const MAX_LIMIT = 1000;

/** The lowercase uuid in `value`. @throws HttpError 400 (`code`) when it is not one. */
export function uuidParam(value: unknown, what: string, code: AppErrorCode = 'BAD_UUID'): string {
  if (typeof value !== 'string' || !UUID.test(value)) throw new HttpError(code, `${what} must be a uuid.`);
  return value.toLowerCase();
}

/** `?limit`: an integer from 1 to 1000, default 25. @throws HttpError 400. */
export function limitParam(value: unknown): number {
  if (value === undefined) return DEFAULT_LIMIT;
  const limit = typeof value === 'string' && /^\d{1,7}$/.test(value) ? Number(value) : NaN;
  if (!(limit >= 1 && limit <= MAX_LIMIT)) {
    throw new HttpError('BAD_LIMIT', `limit must be an integer from 1 to ${MAX_LIMIT}.`);
  }
  return limit;
}

/** `?marker`: a server uuid, or undefined for the first page. @throws HttpError 400. */
export function markerParam(value: unknown): string | undefined {
  return value === undefined ? undefined : uuidParam(value, 'marker', 'BAD_MARKER');
}

/** `?cell`: a cell name or uuid, or undefined. @throws HttpError 400 when repeated or empty. */
export function cellParam(value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value.trim() === '' || value.length > 255) {
    throw new HttpError('BAD_CELL', 'cell must be one cell name or uuid.');
  }
  return value;
}

/** The `name` of a `POST /servers` body, trimmed. @throws HttpError 400. */
export function serverNameOf(body: unknown): string {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new HttpError('BAD_BODY', 'The body must be a JSON object such as {"name": "web-1"}.');
  }
  const name = (body as { name?: unknown }).name;
  if (typeof name !== 'string' || name.trim() === '') {
    throw new HttpError('BAD_NAME', 'name is required and must be a non-empty string.');
  }
  const trimmed = name.trim();
  if (trimmed.length > MAX_SERVER_NAME) {
    throw new HttpError('BAD_NAME', `name must be at most ${MAX_SERVER_NAME} characters.`);
  }
  // PostgreSQL text cannot hold a NUL byte: the insert would fail as a 500.
  if (trimmed.includes('\u0000')) {
    throw new HttpError('BAD_NAME', 'name must not contain a NUL byte.');
  }
  // A lone surrogate is no character: PostgreSQL would store U+FFFD in its place.
  if (/\p{Cs}/u.test(trimmed)) {
    throw new HttpError('BAD_NAME', 'name must be well-formed Unicode (it holds a lone surrogate).');
  }
  return trimmed;
}
