/**
 * IP address text as peers' sockets and uWS report it: IPv6 read into its
 * groups, and IPv4-mapped IPv6 turned back into IPv4, for the per-address
 * limits (budgets.ts) and the trusted proxies (transport/client-address.ts).
 */
import { isIP } from 'node:net';

/** The eight 16-bit groups of an IPv6 address (`isIP` said 6); undefined if it cannot be read. */
export function ipv6Groups(address: string): number[] | undefined {
  let text = address.split('%')[0]!.toLowerCase();
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two hex groups.
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, v4.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const head = halves[0] === '' ? [] : halves[0]!.split(':');
  const tail = halves.length === 2 && halves[1] !== '' ? halves[1]!.split(':') : [];
  const missing = 8 - head.length - tail.length;
  if (missing < 0 || (halves.length === 1 && missing !== 0)) return undefined;
  const groups = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill('0'), ...tail].map((g) =>
    Number.parseInt(g, 16),
  );
  return groups.length === 8 && groups.every((g) => Number.isInteger(g) && g >= 0 && g <= 0xffff) ? groups : undefined;
}

/**
 * An IPv4-mapped IPv6 address as plain IPv4 (`::ffff:1.2.3.4`, and uWS's long
 * form `0000:0000:0000:0000:0000:ffff:0102:0304`); anything else unchanged.
 */
export function unmapped(address: string): string {
  if (isIP(address) !== 6) return address;
  const groups = ipv6Groups(address);
  if (groups === undefined || !groups.slice(0, 5).every((g) => g === 0) || groups[5] !== 0xffff) return address;
  const [hi, lo] = [groups[6]!, groups[7]!];
  return `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
}
