import { CellsError } from '../errors';

/**
 * A request header the request context is built from (`x-request-id`, `x-project-id`) was sent
 * twice, or holds a comma or a control character: a proxy that merged or forwarded it cannot be
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
