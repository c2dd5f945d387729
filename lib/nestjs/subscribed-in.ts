import { Observable, type Subscriber } from 'rxjs';

/**
 * The handler's observable `source()`, subscribed inside `enter` (which runs its argument in a
 * request context, an OpenTelemetry context...): what a handler's observable starts only when
 * subscribed (the interval of an `@Sse()` stream, a `delay`, a deferred query) then runs in that
 * context too, where Nest would subscribe to it from wherever its own pipeline resumed.
 * @internal
 */
export function subscribedIn<T>(enter: <R>(fn: () => R) => R, source: () => Observable<T>): Observable<T> {
  return new Observable<T>((subscriber: Subscriber<T>) => enter(() => source().subscribe(subscriber)));
}
