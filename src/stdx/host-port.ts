// "host:port" and "[ipv6]:port" addresses, as config files, flags and the cluster
// map spell them. One parser for monitors, OSD peers and gateways, so an address
// accepted in one place is accepted everywhere. Pure.
import { TesseraError } from './errors.js';

const HOST_PORT = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/;

/** Parts of "host:port" or "[ipv6]:port"; ERR_INVALID naming `what` otherwise. */
export function parseHostPort(address: string, what = 'address'): { host: string; port: number } {
  const m = HOST_PORT.exec(address);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 1 && port <= 0xffff)) throw new TesseraError('ERR_INVALID', `bad ${what} ${JSON.stringify(address)}: want host:port`);
  return { host: m[1] ?? m[2], port };
}
