import type * as OtelApi from '@opentelemetry/api';
import type {
  Attributes,
  Context,
  Counter,
  Exception,
  Histogram,
  Link,
  Span,
  SpanAttributes,
  SpanAttributeValue,
  SpanContext,
  SpanOptions,
  SpanStatus,
  TimeInput,
  Tracer,
} from '@opentelemetry/api';

/*
 * Guards around the tracer, spans and instruments an SDK gives: a span processor, an instrument or
 * an exporter run synchronously inside them, and one that throws must never change what a routed
 * call returns or throws (a committed write reported failed), nor make it throw synchronously.
 * Each failure is swallowed; the first one is reported through the API's `diag` logger.
 */

let reported = false;

/** Reports the first failure of the SDK (later ones are swallowed silently). @internal */
export function reportSdkFailure(otel: typeof OtelApi | undefined, error: unknown): void {
  if (reported) return;
  reported = true;
  try {
    const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    otel?.diag.warn(
      `typeorm-cells: the OpenTelemetry SDK threw; telemetry calls that throw are ignored from now on (${message.slice(0, 200)})`,
    );
  } catch {
    // A diag logger that throws too: nothing more to do.
  }
}

/** What typeorm-cells uses of a Tracer, guarded. @internal */
export interface GuardedTracer {
  startSpan(name: string, options?: SpanOptions, context?: Context): Span;
}

/** `tracer`, whose `startSpan` never throws (an invalid, non-recording span instead) and whose spans never throw. @internal */
export function guardTracer(tracer: Tracer, otel: typeof OtelApi): GuardedTracer {
  return {
    startSpan(name, options, context) {
      try {
        return new GuardedSpan(tracer.startSpan(name, options, context), otel);
      } catch (error) {
        reportSdkFailure(otel, error);
        return otel.trace.wrapSpanContext(otel.INVALID_SPAN_CONTEXT);
      }
    },
  };
}

/** A span whose every method swallows what the SDK throws. */
class GuardedSpan implements Span {
  constructor(
    private readonly span: Span,
    private readonly otel: typeof OtelApi,
  ) {}

  private guard(call: () => unknown): void {
    try {
      call();
    } catch (error) {
      reportSdkFailure(this.otel, error);
    }
  }

  spanContext(): SpanContext {
    try {
      return this.span.spanContext();
    } catch (error) {
      reportSdkFailure(this.otel, error);
      return this.otel.INVALID_SPAN_CONTEXT;
    }
  }
  setAttribute(key: string, value: SpanAttributeValue): this {
    this.guard(() => this.span.setAttribute(key, value));
    return this;
  }
  setAttributes(attributes: SpanAttributes): this {
    this.guard(() => this.span.setAttributes(attributes));
    return this;
  }
  addEvent(
    name: string,
    attributesOrStartTime?: SpanAttributes | TimeInput,
    startTime?: TimeInput,
  ): this {
    this.guard(() => this.span.addEvent(name, attributesOrStartTime, startTime));
    return this;
  }
  addLink(link: Link): this {
    this.guard(() => this.span.addLink(link));
    return this;
  }
  addLinks(links: Link[]): this {
    this.guard(() => this.span.addLinks(links));
    return this;
  }
  setStatus(status: SpanStatus): this {
    this.guard(() => this.span.setStatus(status));
    return this;
  }
  updateName(name: string): this {
    this.guard(() => this.span.updateName(name));
    return this;
  }
  end(endTime?: TimeInput): void {
    this.guard(() => this.span.end(endTime));
  }
  isRecording(): boolean {
    try {
      return this.span.isRecording();
    } catch (error) {
      reportSdkFailure(this.otel, error);
      return false;
    }
  }
  recordException(exception: Exception, time?: TimeInput): void {
    this.guard(() => this.span.recordException(exception, time));
  }
}

/** `counter`, whose `add` never throws. @internal */
export function guardCounter(counter: Counter, otel: typeof OtelApi): Pick<Counter, 'add'> {
  return {
    add(value: number, attributes?: Attributes, context?: Context) {
      try {
        counter.add(value, attributes, context);
      } catch (error) {
        reportSdkFailure(otel, error);
      }
    },
  };
}

/** `histogram`, whose `record` never throws. @internal */
export function guardHistogram(
  histogram: Histogram,
  otel: typeof OtelApi,
): Pick<Histogram, 'record'> {
  return {
    record(value: number, attributes?: Attributes, context?: Context) {
      try {
        histogram.record(value, attributes, context);
      } catch (error) {
        reportSdkFailure(otel, error);
      }
    },
  };
}
