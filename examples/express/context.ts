import type { RequestHandler } from 'express';
import { RequestContext, runWithContext, type ReadDeleted } from '../../lib';
import { HttpError } from './errors';

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
/** `x-project-id`: 1-255 letters, digits, `.`, `_`, `:` or `-` (keystone ids and names fit). */
const PROJECT_ID = /^[A-Za-z0-9._:-]{1,255}$/;
/** Project of requests that send no `x-project-id`, so the example works with bare `curl`. */
export const DEFAULT_PROJECT = 'demo';

/**
 * Builds the request's RequestContext from its headers and runs the rest of the request inside it.
 *
 * - `x-request-id`: kept when it is 1-128 of `[A-Za-z0-9._:-]`, else a random id; echoed back.
 * - `x-project-id`: the project (default `demo`): 1-255 of `[A-Za-z0-9._:-]`, else 400.
 * - `x-roles`: a comma-separated list; `admin` makes the request an admin one.
 * - `?read_deleted=no|yes|only`: how soft-deleted servers are read; other values are 400 and
 *   anything but `no` is 403 for non-admins.
 *
 * `next()` runs inside `runWithContext`, so every handler and middleware after this one, and every
 * promise they create, sees the context (Express 5 awaits async handlers in that same chain).
 * Middleware that calls `next` from an event (a body parser) must bind it with `bindContext`.
 */
export function requestContext(): RequestHandler {
  return (req, res, next) => {
    const requestIdHeader = req.get('x-request-id');
    const requestId = requestIdHeader !== undefined && REQUEST_ID.test(requestIdHeader) ? requestIdHeader : undefined;
    const projectId = req.get('x-project-id') ?? DEFAULT_PROJECT;
    // Checked before the context takes it (RequestContext refuses it too), so the 400 names the header.
    const badProject = !PROJECT_ID.test(projectId);
    const roles = (req.get('x-roles') ?? '').split(',').map((role) => role.trim().toLowerCase());
    const ctx = new RequestContext({
      projectId: badProject ? null : projectId,
      isAdmin: roles.includes('admin'),
      ...(requestId ? { requestId } : {}),
    });
    res.setHeader('x-request-id', ctx.requestId);
    runWithContext(ctx, () => {
      if (badProject) {
        next(new HttpError('BAD_PROJECT_ID', 'x-project-id must be 1-255 characters from A-Z, a-z, 0-9 and . _ : - (as in a keystone project id).'));
        return;
      }
      const readDeleted = readDeletedOf(req.query['read_deleted']);
      if (readDeleted instanceof HttpError) {
        next(readDeleted);
        return;
      }
      if (readDeleted !== 'no' && !ctx.isAdmin) {
        next(new HttpError('FORBIDDEN', `read_deleted=${readDeleted} is for admins only (send x-roles: admin).`));
        return;
      }
      ctx.readDeleted = readDeleted;
      next();
    });
  };
}

function readDeletedOf(value: unknown): ReadDeleted | HttpError {
  if (value === undefined) return 'no';
  if (value === 'no' || value === 'yes' || value === 'only') return value;
  return new HttpError('BAD_READ_DELETED', `read_deleted must be 'no', 'yes' or 'only'.`);
}
