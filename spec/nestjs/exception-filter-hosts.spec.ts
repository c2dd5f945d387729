import 'reflect-metadata';
import { ExecutionContextHost } from '@nestjs/core/helpers/execution-context-host';
import { isObservable, lastValueFrom, type Observable } from 'rxjs';
import { NoContextError, UnknownInstanceError } from '../../lib';
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

  // Nest's gateways ignore what a filter returns (WsExceptionsHandler stops at a matching filter):
  // the filter tells the client, as BaseWsExceptionFilter does ('exception' event), or the error
  // vanished, no event, no log, and a client waiting for an acknowledgement waited for ever.
  it('emits an exception event with the code and the masked message to a gateway (ws) client', () => {
    const emitted: unknown[][] = [];
    const client = { emit: (...args: unknown[]) => emitted.push(args) };
    const host = new ExecutionContextHost([client, { id: 1 }, 'servers.get']);
    host.setType('ws');
    const failure = new UnknownInstanceError('0f8fad5b-d9cb-469f-a165-70867728950e');
    filter.catch(failure, host);
    expect(emitted).toEqual([['exception', { status: 'error', code: 'CELLS_UNKNOWN_INSTANCE', message: failure.message }]]);
  });

  it('tells a gateway client no more than HTTP does of an error answered 500 (a server bug)', () => {
    const emitted: unknown[][] = [];
    const client = { emit: (...args: unknown[]) => emitted.push(args) };
    const host = new ExecutionContextHost([client, { id: 1 }, 'servers.get']);
    host.setType('ws');
    filter.catch(new NoContextError(), host);
    expect(emitted).toEqual([['exception', { status: 'error', code: 'INTERNAL', message: 'Internal server error.' }]]);
  });

  it.each(['graphql'])('hands the typed error back to a %s handler rather than write an HTTP answer', (type) => {
    const host = new ExecutionContextHost([{}, {}, {}, {}]);
    host.setType(type);
    expect(filter.catch(error, host)).toBe(error);
  });
});
