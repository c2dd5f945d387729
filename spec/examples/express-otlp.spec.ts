import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import request from 'supertest';
import { freePort } from '../../dev/free-port';
import { otlpTracesUrlOf } from '../../examples/express/telemetry';
import { eventually, withTimeout } from '../../dev/wait';
import { assertCliBuilt } from '../support/cli';
import { startOtlpCollector } from '../support/otlp-collector';
import { prometheusSeries } from '../support/prometheus-text';

const START = join(__dirname, '..', '..', 'dist', 'examples', 'express', 'start.js');

describe('otlpTracesUrlOf', () => {
  it('is undefined without an endpoint, so no trace leaves the process', () => {
    expect(otlpTracesUrlOf({})).toBeUndefined();
    expect(otlpTracesUrlOf({ OTEL_EXPORTER_OTLP_ENDPOINT: ' ' })).toBeUndefined();
  });

  it('appends /v1/traces to OTEL_EXPORTER_OTLP_ENDPOINT, once', () => {
    expect(otlpTracesUrlOf({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318/' })).toBe(
      'http://c:4318/v1/traces',
    );
  });

  it('takes OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as is, before the general one', () => {
    expect(
      otlpTracesUrlOf({
        OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318',
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://t:4318/custom',
      }),
    ).toBe('http://t:4318/custom');
  });
});

// The OTLP/HTTP exporter loads node:http with a dynamic import(), which Jest's module loader refuses
// (without --experimental-vm-modules), so the export is checked on the built app in plain Node.
describe('npm start with OTEL_EXPORTER_OTLP_ENDPOINT', () => {
  beforeAll(() => assertCliBuilt());

  it('posts the spans of its requests to the collector as OTLP JSON when it stops', async () => {
    const collector = await startOtlpCollector();
    const app = await startExample({
      OTEL_EXPORTER_OTLP_ENDPOINT: collector.endpoint,
      OTEL_SERVICE_NAME: 'otlp-check',
    });
    try {
      expect(app.output()).toContain(`traces:   OTLP/HTTP to ${collector.endpoint}/v1/traces`);
      await request(app.base).get(`/servers/${app.sample}`).expect(200);
      await request(app.base).get(`/servers/${randomUUID()}`).expect(404);
      const metrics = (await request(app.base).get('/metrics').expect(200)).text;
      const byStatus = prometheusSeries(metrics, 'http_server_request_duration_count')
        .filter((c) => c.labels['http_route'] === '/servers/:uuid')
        .map((c) => [c.labels['http_response_status_code'], c.value]);
      expect(byStatus.sort()).toEqual([
        ['200', 1],
        ['404', 1],
      ]);
      expect(metrics).toContain('# TYPE db_client_operation_duration histogram'); // the library's (branch otel)
      expect(await app.stop()).toBe(0);
      expect(collector.received.length).toBeGreaterThan(0);
      for (const post of collector.received) {
        expect(post).toMatchObject({
          method: 'POST',
          url: '/v1/traces',
          headers: { 'content-type': 'application/json' },
        });
      }
      const spansSent = collector.received.flatMap((post) => otlpSpans(post.body));
      const server = spansSent.filter(
        (span) => span.kind === OTLP_SPAN_KIND_SERVER && span.name === 'GET /servers/:uuid',
      );
      expect(server).toHaveLength(2);
      // The library's span of the read (branch otel) travels in the same trace, under the SERVER span.
      const read = spansSent.find((span) => span.name === 'findOneBy servers');
      expect(read?.kind).toBe(OTLP_SPAN_KIND_CLIENT);
      expect(server.map((span) => span.spanId)).toContain(read?.parentSpanId);
      expect(server.map((span) => span.traceId)).toContain(read?.traceId);
      expect(collector.received.map((post) => post.body).join('\n')).toContain('"otlp-check"');
    } finally {
      await app.stop();
      await collector.close();
    }
  }, 90_000);
});

describe('npm start with OTEL_SDK_DISABLED=true', () => {
  beforeAll(() => assertCliBuilt());

  it('has no /metrics route and says traces are off', async () => {
    const app = await startExample({ OTEL_SDK_DISABLED: 'true' });
    try {
      expect(app.output()).toContain('traces:   off (OTEL_SDK_DISABLED)');
      expect(app.output()).not.toContain('/metrics');
      await request(app.base).get(`/servers/${app.sample}`).expect(200);
      const res = await request(app.base).get('/metrics').expect(404);
      expect(res.body).toMatchObject({ error: { code: 'NOT_FOUND' } });
      expect(await app.stop()).toBe(0);
    } finally {
      await app.stop();
    }
  }, 90_000);
});

/** The built example app (`npm start`) in a child process, once it printed its banner. */
interface RunningExample {
  /** `http://127.0.0.1:<port>`. */
  base: string;
  /** The uuid of a seeded server, from the banner. */
  sample: string;
  /** What it printed so far (stdout and stderr). */
  output(): string;
  /** SIGTERM (so it removes its embedded PostgreSQL's data directory), then its exit code; SIGKILL after 30 s. */
  stop(): Promise<number | null>;
}

/** Starts the built example on its own embedded PostgreSQL (no fixed database names on the test server). */
async function startExample(env: NodeJS.ProcessEnv): Promise<RunningExample> {
  const port = await freePort();
  const child = spawn(process.execPath, [START], {
    env: {
      ...process.env,
      PORT: String(port),
      DATABASE_URL: '',
      CELLS_EXAMPLE_MYSQL_URL: '',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => resolve(code)),
  );
  const stop = async () => {
    if (child.exitCode === null) child.kill('SIGTERM');
    return withTimeout(exited, 30_000, 'the example app after SIGTERM').catch((error: unknown) => {
      child.kill('SIGKILL');
      throw error;
    });
  };
  try {
    await eventually(
      () => output.includes('Press Ctrl-C to stop.') || child.exitCode !== null,
      60_000,
    );
    const sample = /\/servers\/([0-9a-f-]{36})/.exec(output)?.[1];
    if (sample === undefined) throw new Error(`the example app did not start:\n${output}`);
    return { base: `http://127.0.0.1:${port}`, sample, output: () => output, stop };
  } catch (error) {
    await stop().catch(() => undefined);
    throw error;
  }
}

/** OTLP's SpanKind values (one more than the API's SpanKind: OTLP has UNSPECIFIED = 0). */
const OTLP_SPAN_KIND_SERVER = 2;
const OTLP_SPAN_KIND_CLIENT = 3;

interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
}

/** The spans of an OTLP/JSON ExportTraceServiceRequest. */
function otlpSpans(body: string): OtlpSpan[] {
  const parsed = JSON.parse(body) as { resourceSpans: { scopeSpans: { spans: OtlpSpan[] }[] }[] };
  return parsed.resourceSpans.flatMap((r) => r.scopeSpans.flatMap((s) => s.spans));
}
