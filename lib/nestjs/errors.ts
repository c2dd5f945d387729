import { CellsError } from '../errors';

/**
 * A request header the request context is built from (`x-request-id`, `x-project-id`, `x-roles`)
 * was sent twice, or an id holds a comma or a control character: a proxy that merged or forwarded it cannot be
 * trusted to have passed one value. Answered with 400 by `CellsExceptionFilter`.
 */
export class InvalidHeaderError extends CellsError {
  readonly code = 'CELLS_INVALID_HEADER';
  /**
   * @param header the header's lower-case name.
   * @param reason what is wrong with it, without its value.
   */
  constructor(
    readonly header: string,
    reason: string,
  ) {
    super(`The ${header} header ${reason}. Send it once, as one value without commas or control characters.`);
  }
}

/**
 * `@TargetCell(param)` / `@TargetInstanceCell(param)` names a route parameter its route does not
 * have: a bug of the application, not of the request, so `CellsExceptionFilter` answers 500 (and
 * logs this message).
 */
export class MissingRouteParameterError extends CellsError {
  readonly code = 'CELLS_MISSING_ROUTE_PARAMETER';
  /**
   * @param param the parameter the decorator names.
   * @param handler the handler, `Controller.method`.
   */
  constructor(
    readonly param: string,
    handler: string,
  ) {
    super(`The route of ${handler} has no parameter '${param}' to target a cell by: name one of its route parameters in @TargetCell / @TargetInstanceCell.`);
  }
}
