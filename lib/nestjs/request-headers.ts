import { IncomingMessage } from 'node:http';
import { InvalidHeaderError } from './errors';

/** The request headers `CellsContextMiddleware` builds the request context from (lower case). Each may be sent once. */
export const CELLS_CONTEXT_HEADERS = {
  /** The request id, kept as the context's `requestId` and echoed in the response; a random id when absent. */
  requestId: 'x-request-id',
  /** The project of the caller, the context's `projectId`; `null` when absent. */
  projectId: 'x-project-id',
  /**
   * Comma-separated roles; `admin` makes the context an admin one (`isAdmin`). Trusted as sent:
   * only a proxy that authenticates the caller and overwrites what the client sent may set it.
   */
  roles: 'x-roles',
} as const;

/** The role in `x-roles` that makes a request an admin one. */
export const ADMIN_ROLE = 'admin';

// A comma is how Node joins a header sent twice ("a, b"); control characters have no place in an id.
// eslint-disable-next-line no-control-regex
const FORBIDDEN = /[,\u0000-\u001f\u007f]/;

/**
 * The Node request under an adapter's request: Fastify's `request.raw`, or Express's request itself
 * (and what middie hands a Nest middleware under Fastify).
 * @internal
 */
export function rawRequest(request: unknown): IncomingMessage | undefined {
  if (request instanceof IncomingMessage) return request;
  const raw = (request as { raw?: unknown } | null | undefined)?.raw;
  return raw instanceof IncomingMessage ? raw : undefined;
}

/**
 * The one value of header `name` (lower case), or `undefined` when absent.
 * @throws InvalidHeaderError when it was sent more than once (counted in `rawHeaders`, since Node
 * joins repeated headers with ", ") or holds a comma or a control character.
 * @internal
 */
export function singleHeader(request: IncomingMessage, name: string): string | undefined {
  const value = onceHeader(request, name);
  if (value !== undefined && FORBIDDEN.test(value)) throw new InvalidHeaderError(name, 'holds a comma or a control character');
  return value;
}

/**
 * The value of header `name` (lower case) sent at most once, or `undefined` when absent.
 * @throws InvalidHeaderError when it was sent more than once (counted in `rawHeaders`).
 */
function onceHeader(request: IncomingMessage, name: string): string | undefined {
  let count = 0;
  const raw = request.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i]!.length === name.length && raw[i]!.toLowerCase() === name) count++;
  }
  if (count === 0) return undefined;
  if (count > 1) throw new InvalidHeaderError(name, `was sent ${count} times`);
  const value = request.headers[name];
  if (typeof value !== 'string') throw new InvalidHeaderError(name, 'was sent more than once');
  return value;
}

/**
 * The roles of the `x-roles` header, trimmed and lower-cased: one header holding comma-separated
 * roles. Sent twice, it is refused: Node would join the two ("user, admin"), so a client could add
 * a role to what the proxy set.
 * @throws InvalidHeaderError when the header was sent more than once.
 * @internal
 */
export function rolesOf(request: IncomingMessage): string[] {
  return (onceHeader(request, CELLS_CONTEXT_HEADERS.roles) ?? '')
    .split(',')
    .map((role) => role.trim().toLowerCase())
    .filter((role) => role !== '');
}
