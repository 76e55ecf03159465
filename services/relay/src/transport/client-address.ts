/**
 * The client's address behind a proxy we trust (RELAY_TRUSTED_PROXIES).
 *
 * Behind an Ingress every WebSocket peer arrives from the ingress
 * controller's address, so the per-address limits (connections, failed
 * handshakes, durable budgets) would count all of them as one. A proxy we
 * trust says who connected to it in `X-Forwarded-For`; one we do not trust
 * could say anything, so its header is ignored.
 *
 * The client is the rightmost address of the header that is not itself a
 * trusted proxy, read from the right only while the hop that wrote it is
 * trusted (each proxy appends the address it saw): the standard reading,
 * because everything left of the first untrusted hop was written by someone
 * who could lie. A malformed entry stops the walk at the hop that wrote it,
 * so garbage never becomes an address. At most MAX_HOPS entries are read.
 *
 * Raw TCP has no headers: a TCP LoadBalancer keeps client addresses
 * (`externalTrafficPolicy: Local`, docs/deploy.md#client-addresses).
 */
import { BlockList, isIP } from 'node:net';
import { unmapped } from '../ip-address.js';

/** Entries of one header read at most, from the right; more proxies than this in a row is not a real path. */
const MAX_HOPS = 16;

export class TrustedProxiesError extends Error {}

export class TrustedProxies {
  readonly #list = new BlockList();
  readonly size: number;

  /** `list`: comma-separated IPs and CIDRs (`10.0.0.0/8`, `fd00::/8`, `127.0.0.1`); empty trusts nobody. */
  constructor(list: string) {
    const entries = list
      .split(',')
      .map((e) => e.trim())
      .filter((e) => e !== '');
    for (const entry of entries) {
      const [address = '', prefix, extra] = entry.split('/');
      const family = isIP(address);
      if (family === 0 || extra !== undefined) {
        throw new TrustedProxiesError(`RELAY_TRUSTED_PROXIES: "${entry}" is not an IP address or CIDR`);
      }
      const type = family === 4 ? 'ipv4' : 'ipv6';
      if (prefix === undefined) {
        this.#list.addAddress(address, type);
        continue;
      }
      const bits = /^[0-9]{1,3}$/.test(prefix) ? Number(prefix) : -1;
      if (bits < 0 || bits > (family === 4 ? 32 : 128)) {
        throw new TrustedProxiesError(`RELAY_TRUSTED_PROXIES: "${entry}" has a prefix length out of range`);
      }
      this.#list.addSubnet(address, bits, type);
    }
    this.size = entries.length;
  }

  /** Whether `address` (as a socket or uWS reports it, IPv4-mapped or not) is a trusted proxy. */
  trusts(address: string): boolean {
    if (this.size === 0) return false;
    const plain = unmapped(address);
    const family = isIP(plain);
    if (family === 0) return false;
    return this.#list.check(plain, family === 4 ? 'ipv4' : 'ipv6');
  }

  /** The client's address: `peer` itself unless a trusted proxy told us better in `forwardedFor`. */
  clientAddress(peer: string, forwardedFor: string): string {
    if (forwardedFor === '' || !this.trusts(peer)) return peer;
    const hops = forwardedFor.split(',');
    let client = peer;
    for (let i = hops.length - 1, read = 0; i >= 0 && read < MAX_HOPS; i--, read++) {
      if (!this.trusts(client)) break;
      const hop = unmapped(hops[i]!.trim());
      if (isIP(hop) === 0) break;
      client = hop;
    }
    return client;
  }
}
