// Page-cache advice for buffered device files (src/native/pagecache.c): start
// reading the pages a coming write covers only in part, so that the write finds
// them cached instead of reading them inside its pwrite, on the event loop
// (FileDevice.prefetchWrite, docs/ARCHITECTURE.md "Warming an entry's pages before it is applied").
//
// Invariants: advice is a hint and never fails an IO: without the native module
// (not built: no compiler, not Linux) or with TESSERA_PAGE_ADVICE=0 nothing is
// advised; a refused call is counted, not thrown. Only pages covered in part are
// advised: reading a page the write replaces whole would be wasted IO.
import { createRequire } from 'node:module';

/** The kernel's page size for the page cache (4 KiB on the machines we run on). */
export const PAGE_BYTES = 4096;

interface NativePageCache {
  willNeed(fd: number, offsetBytes: number, lengthBytes: number): number;
}

function loadNative(): NativePageCache | null {
  if (process.env.TESSERA_PAGE_ADVICE === '0') return null;
  try {
    // dist/src/io/node/page-cache.js -> dist/native/pagecache.node (scripts/build-native.mjs)
    const m = createRequire(import.meta.url)('../../../native/pagecache.node') as Partial<NativePageCache>;
    return typeof m.willNeed === 'function' ? (m as NativePageCache) : null;
  } catch {
    return null;
  }
}

/** posix_fadvise(fd, offset, length, POSIX_FADV_WILLNEED): 0 or an errno. */
export type WillNeed = (fd: number, offsetBytes: number, lengthBytes: number) => number;

const native = loadNative();
const nativeWillNeed: WillNeed | null = native !== null ? (fd, offsetBytes, lengthBytes) => native.willNeed(fd, offsetBytes, lengthBytes) : null;

/** Whether advice reaches the kernel in this process. */
export const pageAdviceAvailable = native !== null;

export interface PageAdviceCounters {
  /** posix_fadvise calls made. */
  calls: number;
  /** Calls the kernel refused (an errno): the write will read inline, as without advice. */
  errors: number;
}

/**
 * Advise the pages that the write [offsetBytes, offsetBytes + lengthBytes) covers
 * only in part: at most its first and its last page, in one call when they are
 * adjacent. Returns the number of calls made (0 when the write covers whole pages
 * or advice is unavailable). willNeed is the kernel's by default (tests pass their own).
 */
export function adviseWritePages(fd: number, offsetBytes: number, lengthBytes: number, counters: PageAdviceCounters, willNeed: WillNeed | null = nativeWillNeed): number {
  // A hint must never throw (the OSD gives it mid-pass): a range no write could have is advised nothing.
  if (willNeed === null || !(Number.isSafeInteger(offsetBytes) && offsetBytes >= 0 && Number.isSafeInteger(lengthBytes) && lengthBytes > 0 && Number.isSafeInteger(offsetBytes + lengthBytes))) return 0;
  if (!(Number.isInteger(fd) && fd >= 0 && fd <= 0x7fffffff)) return 0;
  const end = offsetBytes + lengthBytes;
  const headPage = Math.floor(offsetBytes / PAGE_BYTES);
  const tailPage = Math.floor((end - 1) / PAGE_BYTES);
  const headPartial = offsetBytes % PAGE_BYTES !== 0 || (headPage === tailPage && end % PAGE_BYTES !== 0);
  const tailPartial = end % PAGE_BYTES !== 0 && tailPage !== headPage;
  if (headPartial && tailPartial && tailPage === headPage + 1) return advise(willNeed, fd, headPage, 2, counters);
  let calls = 0;
  if (headPartial) calls += advise(willNeed, fd, headPage, 1, counters);
  if (tailPartial) calls += advise(willNeed, fd, tailPage, 1, counters);
  return calls;
}

function advise(willNeed: WillNeed, fd: number, page: number, pages: number, counters: PageAdviceCounters): number {
  counters.calls++;
  if (willNeed(fd, page * PAGE_BYTES, pages * PAGE_BYTES) !== 0) counters.errors++;
  return 1;
}
