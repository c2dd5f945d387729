import { createHash, createHmac } from 'node:crypto';
import { LRUCache } from 'lru-cache';

/**
 * SCRAM-SHA-256 (RFC 5802, RFC 7677; PostgreSQL's default password authentication) makes the client
 * derive its key from the password with PBKDF2, 4096 rounds of HMAC-SHA-256 by default: about 2 ms
 * of CPU for every new connection, and it is the same result each time for one role on one server
 * (the salt and round count are the role's, fixed until its password changes). A fleet opens
 * connections all the time (cold cells, evictions, pools refilling), so node-postgres' derivation is
 * remembered here, as SCRAM itself allows (RFC 5802 §5: a client may cache the salted password for later authentication to the same service):
 * - keyed by an HMAC of the password under the salt and round count, so no key holds the password;
 *   a changed password or salt derives anew;
 * - bounded (lru-cache); concurrent connections of one role share one derivation; a failed one is
 *   not kept;
 * - in memory only: never logged, printed or written anywhere.
 * The per-connection HMACs and hash of SCRAM are computed with node:crypto instead of WebCrypto
 * (same results, a fraction of the time).
 * The server still checks a fresh proof for every connection (nonces differ each time), so
 * authentication is as strong as before. @internal
 */

/** What is used of node-postgres' SCRAM helpers (`pg/lib/crypto/utils`, an exported subpath of pg 8). */
interface PgCryptoUtils {
  deriveKey(password: string, salt: Uint8Array, iterations: number): Promise<ArrayBuffer>;
  hmacSha256(key: ArrayBuffer | Uint8Array, message: string): Promise<ArrayBuffer>;
  sha256(data: ArrayBuffer | Uint8Array): Promise<ArrayBuffer>;
}

/** The bytes of `buffer` as an ArrayBuffer of their own, as WebCrypto returns them. */
function ownArrayBuffer(buffer: Buffer): ArrayBuffer {
  return buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength) as ArrayBuffer;
}

function bytes(data: ArrayBuffer | Uint8Array): Uint8Array {
  return data instanceof Uint8Array ? data : new Uint8Array(data);
}

/** Salted passwords remembered: one per role and server in use is enough. */
const MAX_REMEMBERED = 1_000;

let installed = false;

/**
 * Makes node-postgres remember salted passwords (see above). Idempotent; with a pg that lacks the
 * helper (a future major), nothing changes.
 * @internal
 */
export function rememberScramKeys(): void {
  if (installed) return;
  installed = true;
  let utils: PgCryptoUtils;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    utils = require('pg/lib/crypto/utils') as PgCryptoUtils;
  } catch {
    return;
  }
  const derive = utils.deriveKey;
  if (typeof derive !== 'function') return;
  const remembered = new LRUCache<string, Promise<ArrayBuffer>>({ max: MAX_REMEMBERED });
  utils.deriveKey = (password, salt, iterations) => {
    const key = createHmac('sha256', salt).update(`${iterations}:`).update(password).digest('base64');
    let derived = remembered.get(key);
    if (derived === undefined) {
      derived = derive.call(utils, password, salt, iterations);
      remembered.set(key, derived);
      derived.catch(() => {
        if (remembered.get(key) === derived) remembered.delete(key);
      });
    }
    // A copy each time: the caller owns what it gets.
    return derived.then((bits) => bits.slice(0));
  };
  // The HMACs and the hash of each authentication: node:crypto computes them in microseconds where
  // WebCrypto's importKey + sign take about 0.6 ms per connection. Same results (RFC 2104, FIPS 180-4).
  if (typeof utils.hmacSha256 === 'function' && typeof utils.sha256 === 'function') {
    utils.hmacSha256 = (key, message) =>
      Promise.resolve(ownArrayBuffer(createHmac('sha256', bytes(key)).update(message).digest()));
    utils.sha256 = (data) => Promise.resolve(ownArrayBuffer(createHash('sha256').update(bytes(data)).digest()));
  }
}
