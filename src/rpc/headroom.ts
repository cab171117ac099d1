// Framing without a second allocation: the message encoders (messages.ts) can
// reserve FRAME_HEADROOM_BYTES at the front of the small head buffer they allocate
// anyway, and frameInHeadroom() writes the 40-byte frame header into that space.
// A 4 KiB write then leaves as [frame header + message head (one allocation),
// data (the caller's buffer)]. Pure: no IO.
//
// Invariants:
// - parts[0] begins with FRAME_HEADROOM_BYTES reserved bytes that are not payload;
//   the payload is parts[0][40..] followed by parts[1..], and its crc32c is chained
//   over them without copying.
// - The headroom is overwritten in place: a parts list is framed and sent once
//   (framing it again for another frame would change bytes still queued to send).
import { assert, fail } from '../stdx/assert.js';
import { crc32c, crc32cRange } from '../stdx/crc32c.js';
import { FRAME_HEADER_BYTES, FRAME_PAYLOAD_BYTES_MAX_DEFAULT, encodeFrame, writeFrameHeader } from './frame.js';
import type { FrameHeader } from './frame.js';

export const FRAME_HEADROOM_BYTES = FRAME_HEADER_BYTES;

/** Payload bytes of parts whose first part carries headroom. */
export function payloadBytesAfterHeadroom(parts: readonly Buffer[]): number {
  let n = parts[0].length - FRAME_HEADROOM_BYTES;
  for (let i = 1; i < parts.length; i++) n += parts[i].length;
  return n;
}

/** Writes the frame header into parts[0]'s headroom; returns the parts, ready for writev. */
export function frameInHeadroom(h: FrameHeader, parts: Buffer[], payloadBytesMax = FRAME_PAYLOAD_BYTES_MAX_DEFAULT): Buffer[] {
  assert(parts.length > 0 && parts[0].length >= FRAME_HEADROOM_BYTES, 'parts[0] has no frame headroom');
  const first = parts[0];
  let payloadBytes = first.length - FRAME_HEADROOM_BYTES;
  let payloadCrc = crc32cRange(first, FRAME_HEADROOM_BYTES, first.length);
  for (let i = 1; i < parts.length; i++) {
    const p = parts[i];
    payloadBytes += p.length;
    payloadCrc = crc32c(p, payloadCrc);
  }
  if (!(payloadBytes <= payloadBytesMax)) fail(`payload of ${payloadBytes} bytes exceeds ${payloadBytesMax}`);
  writeFrameHeader(first, 0, h, payloadBytes, payloadCrc);
  return parts;
}

/** Frames `parts`, in its headroom when `headroom` is true, else with a fresh 40-byte header. */
export function framePayload(h: FrameHeader, parts: readonly Buffer[], headroom: boolean, payloadBytesMax = FRAME_PAYLOAD_BYTES_MAX_DEFAULT): Buffer[] {
  if (headroom) return frameInHeadroom(h, parts as Buffer[], payloadBytesMax);
  return encodeFrame(h, parts, payloadBytesMax);
}
