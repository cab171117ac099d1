// Request-body validation shared by the API's routes: zod schemas in, a 400
// ERR_INVALID naming the bad field out.
import { z } from 'zod';
import { parseSize } from '../stdx/size.js';
import { ApiError } from './errors.js';

export const sizeBody = z.union([z.int().positive('must be a positive number of bytes'), z.string()]).transform((v, ctx) => {
  if (typeof v === 'number') return v;
  try {
    return parseSize(v);
  } catch (err) {
    ctx.issues.push({ code: 'custom', message: (err as Error).message, input: v });
    return z.NEVER;
  }
});
class BodyError extends ApiError {}

export function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  const res = schema.safeParse(body ?? {});
  if (res.success) return res.data;
  const msg = res.error.issues
    .map((i) => {
      if (i.code === 'unrecognized_keys') return `unknown field(s) ${i.keys.map((k) => `"${k}"`).join(', ')}`;
      const field = i.path.join('.');
      return field ? `field "${field}": ${i.message}` : i.message;
    })
    .join('; ');
  throw new BodyError('ERR_INVALID', `bad request body: ${msg}`, 400);
}

