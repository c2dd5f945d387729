import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';

/** One request an OTLP/HTTP exporter made. */
export interface OtlpRequest {
  method: string | undefined;
  url: string | undefined;
  headers: IncomingHttpHeaders;
  /** The body as text (JSON for @opentelemetry/exporter-trace-otlp-http). */
  body: string;
}

/** A stand-in OpenTelemetry collector: records every request and answers 200 `{}`. */
export interface OtlpCollector {
  /** `http://127.0.0.1:<port>`, the value for OTEL_EXPORTER_OTLP_ENDPOINT. */
  endpoint: string;
  received: OtlpRequest[];
  close(): Promise<void>;
}

/** Starts an OtlpCollector on a free loopback port. */
export async function startOtlpCollector(): Promise<OtlpCollector> {
  const received: OtlpRequest[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      received.push({
        method: req.method,
        url: req.url,
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      });
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    received,
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
