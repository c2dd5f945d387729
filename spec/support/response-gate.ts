import { createServer, type Server, type Socket } from 'node:net';
import { connectUpstream, viaLoopbackPort } from './forwarder';

/**
 * Which connections a gate acts on: those whose startup message names the gate's application
 * (application_name), or all the others.
 */
export type GatedConnections = 'named' | 'others';

/**
 * A TCP forwarder in front of a PostgreSQL server that can hold the server's data, to order a
 * query's result against a notification deterministically. Each kind of connection (see
 * GatedConnections) has its own gate; while it is closed, queries reach the server and run, and
 * what the server sends back (results, notifications) waits here.
 */
export interface ResponseGate {
  /** `url` with its host and port replaced by the gate's. */
  url(url: string): string;
  /** Holds server data on `which` connections from now on. */
  close(which: GatedConnections): void;
  /** Delivers what `which` connections were held and lets their data through until the next close. */
  open(which: GatedConnections): void;
  /** Bytes held on `which` connections so far (delivered or not). */
  heldBytes(which: GatedConnections): number;
  /** Closes every connection and stops listening. */
  stop(): Promise<void>;
}

/** Starts a gate, open, on a free loopback port in front of `target`'s host and port. */
export async function startResponseGate(target: string, application: string): Promise<ResponseGate> {
  const sockets = new Set<Socket>();
  const gates = {
    named: { closed: false, held: [] as Array<() => void>, bytes: 0 },
    others: { closed: false, held: [] as Array<() => void>, bytes: 0 },
  };
  const server: Server = createServer((client) => {
    const upstream = connectUpstream(client, target, sockets);
    let gate: (typeof gates)[GatedConnections] | undefined;
    client.on('data', (chunk: Buffer) => {
      // The first chunk is the startup message, which carries application_name.
      gate ??= chunk.includes(Buffer.from(`application_name\0${application}\0`)) ? gates.named : gates.others;
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (gate === undefined || !gate.closed) {
        client.write(chunk);
        return;
      }
      gate.bytes += chunk.length;
      gate.held.push(() => client.write(chunk));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const listenPort = (server.address() as { port: number }).port;
  return {
    url: (url) => viaLoopbackPort(url, listenPort),
    close(which) {
      gates[which].closed = true;
    },
    open(which) {
      gates[which].closed = false;
      for (const deliver of gates[which].held.splice(0)) deliver();
    },
    heldBytes(which) {
      return gates[which].bytes;
    },
    async stop() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
