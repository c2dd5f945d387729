import { createServer, connect, type Server, type Socket } from 'node:net';

/** A TCP forwarder in front of a database server, to take a database away without touching it. */
export interface Forwarder {
  /** `url` with its host and port replaced by the forwarder's. */
  url(url: string): string;
  /**
   * An outage: drops every forwarded connection and stops listening, so new connections are
   * refused (ECONNREFUSED) until `restore()`.
   */
  cut(): Promise<void>;
  /** Listens again on the same port. */
  restore(): Promise<void>;
  /**
   * A hung network: stops forwarding data either way on every connection, which stay open (a
   * server that stops answering, without SIGSTOP) until `flow()`.
   */
  stall(): void;
  /** Forwards again what `stall()` held, and everything after it. */
  flow(): void;
  /** Cuts and leaves it cut. */
  close(): Promise<void>;
}

/**
 * Opens the upstream connection of an accepted `client` to `target`'s host and port; both are
 * tracked in `sockets` until closed, and either closing closes the other.
 */
export function connectUpstream(client: Socket, target: string, sockets: Set<Socket>): Socket {
  const { hostname, port } = new URL(target);
  const upstream = connect(Number(port || 5432), hostname.replace(/^\[(.*)\]$/, '$1'));
  for (const socket of [client, upstream]) {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => {
      sockets.delete(socket);
      client.destroy();
      upstream.destroy();
    });
  }
  return upstream;
}

/** `url` with its host and port replaced by the loopback interface and `port`. */
export function viaLoopbackPort(url: string, port: number): string {
  const parsed = new URL(url);
  parsed.hostname = '127.0.0.1';
  parsed.port = String(port);
  return parsed.toString();
}

/** Starts forwarding a free loopback port to `target`'s host and port. */
export async function startForwarder(target: string): Promise<Forwarder> {
  const sockets = new Set<Socket>();
  const pairs = new Set<[Socket, Socket]>();
  let stalled = false;
  let server: Server | undefined;
  let listenPort = 0;
  const forward = ([client, upstream]: [Socket, Socket]): void => {
    client.pipe(upstream);
    upstream.pipe(client);
  };
  const hold = ([client, upstream]: [Socket, Socket]): void => {
    client.unpipe(upstream);
    upstream.unpipe(client);
    client.pause();
    upstream.pause();
  };
  const listen = async (): Promise<void> => {
    const next = createServer((client) => {
      const pair: [Socket, Socket] = [client, connectUpstream(client, target, sockets)];
      pairs.add(pair);
      client.once('close', () => pairs.delete(pair));
      if (stalled) hold(pair);
      else forward(pair);
    });
    await new Promise<void>((resolve, reject) => {
      next.once('error', reject);
      next.listen(listenPort, '127.0.0.1', () => resolve());
    });
    listenPort = (next.address() as { port: number }).port;
    server = next;
  };
  const cut = async (): Promise<void> => {
    const current = server;
    server = undefined;
    for (const socket of sockets) socket.destroy();
    if (current) await new Promise<void>((resolve) => current.close(() => resolve()));
  };
  await listen();
  return {
    url: (url) => viaLoopbackPort(url, listenPort),
    cut,
    restore: listen,
    close: cut,
    stall() {
      stalled = true;
      for (const pair of pairs) hold(pair);
    },
    flow() {
      stalled = false;
      for (const pair of pairs) forward(pair);
    },
  };
}
