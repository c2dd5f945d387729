import { fork } from 'node:child_process';
import { Agent, get } from 'node:http';
import { join } from 'node:path';

export { listen, type Listening } from '../dev/listen';

/** A keep-alive HTTP client of one connection, so timed requests never pay for a TCP handshake. */
export function keepAliveAgent(): Agent {
  return new Agent({ keepAlive: true, maxSockets: 1 });
}

/**
 * GETs `path` on the loopback `port` and resolves with the body once it is complete.
 * @throws Error when the status is not 200.
 */
export function getOk(agent: Agent, port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    get({ host: '127.0.0.1', port, path, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () =>
        res.statusCode === 200
          ? resolve(body)
          : reject(new Error(`GET ${path}: ${res.statusCode} ${body.slice(0, 200)}`)),
      );
      res.on('error', reject);
    }).on('error', reject);
  });
}

/** What bench/support-http-server.ts serves: the example app, or the same route without routing. */
export type ServerSpec =
  | { kind: 'routed'; apiUrl: string; poolSize: number }
  | {
      kind: 'unrouted';
      url: string;
      poolSize: number;
      cell: { uuid: string; name: string };
      /** Run each request in a bare `AsyncLocalStorage.run`, to show what the context alone costs. */
      asyncContext: boolean;
    };

/** Counters of a child app server since it started. */
export interface ServerCounters {
  /** CPU time of its process, in microseconds (user + system). */
  cpuMicros: number;
  /** API-database lookups its mapping cache ran (misses and TTL refreshes); 0 without routing. */
  mappingLoads: number;
  /** Background refreshes of mappings past their TTL (none on a request's path); 0 without routing. */
  mappingRefreshes: number;
}

/** An app server in a child process; `stop()` closes its databases and waits for it to exit. */
export interface ChildServer {
  port: number;
  counters(): Promise<ServerCounters>;
  stop(): Promise<void>;
}

/**
 * Starts an app server in its own Node process, so the load generator does not share its event
 * loop. With `BENCH_CPU_PROF=<dir>` set, the child writes a V8 CPU profile there when it stops.
 */
export function startChildServer(spec: ServerSpec): Promise<ChildServer> {
  const profileDir = process.env['BENCH_CPU_PROF'];
  const child = fork(join(__dirname, 'support-http-server.js'), [], {
    execArgv: profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return new Promise((resolve, reject) => {
    child.once('exit', (code) =>
      reject(new Error(`the ${spec.kind} app server exited (${code}) before listening`)),
    );
    child.once('message', (message: { port?: number; error?: string }) => {
      if (message.port === undefined) {
        child.kill();
        reject(new Error(`the ${spec.kind} app server failed: ${message.error ?? 'no port'}`));
        return;
      }
      resolve({
        port: message.port,
        counters: () =>
          new Promise((answer) => {
            child.once('message', answer);
            child.send('counters');
          }),
        async stop() {
          if (child.connected) child.disconnect();
          await exited;
        },
      });
    });
    child.send(spec);
  });
}
