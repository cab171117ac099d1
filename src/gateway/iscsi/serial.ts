// 32-bit serial number arithmetic (RFC 1982) for CmdSN, StatSN and DataSN: the
// counters wrap, so "a is before b" means the forward distance from a to b is
// less than 2^31 (RFC 7143 §4.2.2.? "Command Numbering and Acknowledging").

const HALF = 0x80000000;

/** (a + n) mod 2^32. */
export function snAdd(a: number, n: number): number {
  return (a + n) >>> 0;
}

/** True when a < b in serial arithmetic. */
export function snLt(a: number, b: number): boolean {
  return a !== b && ((b - a) >>> 0) < HALF;
}

/** True when a ≤ b in serial arithmetic. */
export function snLe(a: number, b: number): boolean {
  return a === b || snLt(a, b);
}

/** The later of a and b. */
export function snMax(a: number, b: number): number {
  return snLt(a, b) ? b : a;
}
