import 'reflect-metadata';
import { ExecutionContextHost } from '@nestjs/core/helpers/execution-context-host';
import { isObservable, lastValueFrom, type Observable } from 'rxjs';
import { UnknownInstanceError } from '../../lib';
import { CellsExceptionFilter } from '../../lib/nestjs';

// CellsExceptionFilter registered as an APP_FILTER also sees errors of handlers that are not HTTP
// (a microservice's message pattern, a GraphQL resolver, a gateway): it answered only HTTP and threw
// `TypeError: raw.setHeader is not a function` there, hiding the library's typed error.
describe('CellsExceptionFilter outside HTTP', () => {
  const filter = new CellsExceptionFilter();
  const error = new UnknownInstanceError('0f8fad5b-d9cb-469f-a165-70867728950e');

  it('gives a microservice (rpc) handler an Observable that fails with the typed error', async () => {
    const host = new ExecutionContextHost([{ pattern: 'servers.get' }, {}]);
    host.setType('rpc');
    const result: unknown = filter.catch(error, host);
    expect(isObservable(result)).toBe(true);
    await expect(lastValueFrom(result as Observable<unknown>)).rejects.toBe(error);
  });

  it.each(['graphql', 'ws'])('hands the typed error back to a %s handler rather than write an HTTP answer', (type) => {
    const host = new ExecutionContextHost([{}, {}, {}, {}]);
    host.setType(type);
    expect(filter.catch(error, host)).toBe(error);
  });
});
