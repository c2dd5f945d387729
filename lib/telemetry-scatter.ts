import type { Context, Span } from '@opentelemetry/api';
import { parentContext, type Telemetry } from './telemetry';
import { recordError } from './telemetry-attributes';

/** The outcome of one cell of a scatter-gather, as `typeorm_cells.outcome` names it. */
export type CellOutcome = 'ok' | 'raised' | 'did-not-respond';

const OUTCOMES: Record<CellOutcome, { 'typeorm_cells.outcome': CellOutcome }> = {
  ok: Object.freeze({ 'typeorm_cells.outcome': 'ok' }),
  raised: Object.freeze({ 'typeorm_cells.outcome': 'raised' }),
  'did-not-respond': Object.freeze({ 'typeorm_cells.outcome': 'did-not-respond' }),
};

/**
 * The telemetry of one scatter-gather: a `typeorm_cells.scatter_gather` span with one child
 * `typeorm_cells.scatter_gather.cell` per cell (the active span while the cell's work runs, so its
 * routed calls are its children), each ending with its `typeorm_cells.outcome`; the gather's
 * duration and each cell's outcome as metrics. Made only when telemetry is on. @internal
 */
export class GatherTelemetry {
  private readonly started = performance.now();
  private readonly span: Span | undefined;
  private readonly context: Context | undefined;
  private readonly cells = new Map<string, Span | undefined>();
  private readonly ended = new Set<string>();

  constructor(
    private readonly telemetry: Telemetry,
    cellCount: number,
  ) {
    const otel = telemetry.api!;
    const parent = parentContext(otel);
    this.span = telemetry.tracer?.startSpan(
      'typeorm_cells.scatter_gather',
      { kind: otel.SpanKind.INTERNAL, attributes: { 'typeorm_cells.scatter_gather.cells': cellCount } },
      parent,
    );
    if (this.span !== undefined) this.context = otel.trace.setSpan(parent, this.span);
  }

  /** Runs `fn`, the work of cell `uuid`, in its child span. */
  run<T>(uuid: string, fn: () => Promise<T>): Promise<T> {
    const span = this.startCell(uuid);
    if (span === undefined) return fn();
    const otel = this.telemetry.api!;
    return otel.context.with(otel.trace.setSpan(this.context!, span), fn);
  }

  private startCell(uuid: string): Span | undefined {
    const span = this.telemetry.tracer?.startSpan(
      'typeorm_cells.scatter_gather.cell',
      { kind: this.telemetry.api!.SpanKind.INTERNAL, attributes: { 'typeorm_cells.cell.uuid': uuid } },
      this.context,
    );
    this.cells.set(uuid, span);
    return span;
  }

  /** Ends cell `uuid`'s span with its outcome (once; later calls do nothing). */
  cellDone(uuid: string, name: string | null, outcome: CellOutcome, error?: unknown): void {
    if (this.ended.has(uuid)) return;
    this.ended.add(uuid);
    const span = this.cells.has(uuid) ? this.cells.get(uuid) : this.startCell(uuid);
    if (span !== undefined) {
      if (name !== null) span.setAttribute('typeorm_cells.cell.name', name);
      span.setAttributes(OUTCOMES[outcome]);
      if (outcome === 'raised') recordError(span, error);
      span.end();
    }
    this.telemetry.instruments?.scatterOutcomes.add(1, OUTCOMES[outcome]);
  }

  /** Ends the gather: every cell not done yet did not respond (or was aborted with `error`). */
  end(uuids: Iterable<string>, names: ReadonlyMap<string, string | null>, error?: unknown): void {
    for (const uuid of uuids) this.cellDone(uuid, names.get(uuid) ?? null, 'did-not-respond');
    if (this.span !== undefined) {
      if (error !== undefined) recordError(this.span, error);
      this.span.end();
    }
    this.telemetry.instruments?.scatterDuration.record((performance.now() - this.started) / 1000);
  }
}
