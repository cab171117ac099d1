/*
 * Page-cache advice for buffered device files: willNeed(fd, offset, length)
 * asks the kernel to start reading a byte range into the page cache
 * (posix_fadvise POSIX_FADV_WILLNEED) and returns at once; the read completes
 * in the background.
 *
 * Why: a buffered write that covers a 4 KiB page only in part needs that page's
 * old bytes, and when the page is not cached the kernel reads it from the disk
 * inside the pwrite (ext4_block_write_begin), on the OSD's event loop. Every
 * stored block (4,096 data + 512 trailer bytes) covers pages in part. The OSD
 * knows a write's target when the raft entry is appended, a WAL flush and a
 * network round trip before it applies the entry: advice given then turns the
 * synchronous read into one that overlaps the wait (io/node/page-cache.ts).
 * Node has no binding for posix_fadvise or readahead(2).
 *
 * Invariants: arguments are checked (fd an integer in [0, INT_MAX], integer
 * offset >= 0 and length > 0 below 2^53) before the call; off_t is 64 bits
 * (checked at compile time), so no offset is truncated; the call does not wait
 * for the data (the kernel may still wait to submit the read, e.g. on a full
 * device queue); returns 0 or the errno posix_fadvise gave; nothing is kept
 * between calls.
 */
#define _GNU_SOURCE
#define _FILE_OFFSET_BITS 64
#include <node_api.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <sys/types.h>

_Static_assert(sizeof(off_t) == 8, "off_t must be 64 bits");

#define MAX_SAFE_INTEGER 9007199254740991.0

static int integral(double v, double max) {
  return isfinite(v) && v == floor(v) && v >= 0 && v <= max;
}

static napi_value will_need(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  double fd, offset, length;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 3 ||
      napi_get_value_double(env, argv[0], &fd) != napi_ok || napi_get_value_double(env, argv[1], &offset) != napi_ok ||
      napi_get_value_double(env, argv[2], &length) != napi_ok || !integral(fd, INT_MAX) ||
      !integral(offset, MAX_SAFE_INTEGER) || !integral(length, MAX_SAFE_INTEGER) || length == 0) {
    napi_throw_range_error(env, "ERR_INVALID", "willNeed(fd, offset, length): integer fd in [0, INT_MAX], integer offset >= 0, integer length > 0");
    return NULL;
  }
  int rc = posix_fadvise((int)fd, (off_t)offset, (off_t)length, POSIX_FADV_WILLNEED);
  napi_value out;
  napi_create_int32(env, rc, &out);
  return out;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "willNeed", NAPI_AUTO_LENGTH, will_need, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "willNeed", fn) != napi_ok) return NULL;
  return exports;
}
