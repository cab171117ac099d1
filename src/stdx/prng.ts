// Seeded PRNG (xoshiro128**) for simulations and randomized tests: the same seed
// replays the same run. Never use Math.random() in the core or in tests.

export class Prng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(readonly seed: number) {
    // splitmix32 to spread the seed over the state
    let x = seed >>> 0;
    const next = (): number => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s0 = next();
    this.s1 = next();
    this.s2 = next();
    this.s3 = next();
  }

  /** Uniform 32-bit unsigned integer. */
  u32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = (this.s1 << 9) >>> 0;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    if (n <= 0x100000000) return Math.floor((this.u32() / 0x100000000) * n);
    return Math.floor(this.float() * n);
  }

  /** Uniform float in [0, 1). */
  float(): number {
    return (this.u32() * 0x200000 + (this.u32() >>> 11)) / 2 ** 53;
  }

  chance(p: number): boolean {
    return this.float() < p;
  }

  fill(buf: Uint8Array): void {
    for (let i = 0; i < buf.length; i += 4) {
      const v = this.u32();
      buf[i] = v & 0xff;
      if (i + 1 < buf.length) buf[i + 1] = (v >>> 8) & 0xff;
      if (i + 2 < buf.length) buf[i + 2] = (v >>> 16) & 0xff;
      if (i + 3 < buf.length) buf[i + 3] = (v >>> 24) & 0xff;
    }
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** A seed from the environment (TESSERA_SEED) or the clock, for tests that print it. */
export function seedFromEnv(): number {
  const env = process.env.TESSERA_SEED;
  if (env !== undefined && env !== '') return Number(env) >>> 0;
  return (Date.now() ^ (process.pid << 16)) >>> 0;
}
