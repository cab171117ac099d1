// Parsing and formatting of byte sizes for the CLI and config ("1T", "512M", "4096").
// Binary units (K = 1024). Sizes are JS numbers: safe up to 8 PiB (2^53 bytes).
import { TesseraError } from './errors.js';

const UNITS: Record<string, number> = {
  '': 1,
  B: 1,
  K: 2 ** 10,
  M: 2 ** 20,
  G: 2 ** 30,
  T: 2 ** 40,
  P: 2 ** 50,
};

export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?)(?:i?B)?\s*$/i.exec(text);
  if (!m) throw new TesseraError('ERR_INVALID', `bad size "${text}": use a number with an optional unit K, M, G, T or P (e.g. 10G)`);
  const unit = UNITS[m[2].toUpperCase()];
  const bytes = Math.round(Number(m[1]) * unit);
  if (!Number.isSafeInteger(bytes)) throw new TesseraError('ERR_INVALID', `size "${text}" is too large`);
  return bytes;
}

export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${bytes} B` : `${v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${units[i]}`;
}
