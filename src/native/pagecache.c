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
 * Invariants: arguments are checked (an int fd, integer offset >= 0 and
 * length > 0 below 2^53) before the call; the call never blocks on the read;
 * returns 0 or the errno posix_fadvise gave; nothing is kept between calls.
 */
#define _GNU_SOURCE
#include <node_api.h>
#include <fcntl.h>
#include <math.h>

#define MAX_SAFE_INTEGER 9007199254740991.0

static int integral(double v) {
  return isfinite(v) && v == floor(v) && v >= 0 && v <= MAX_SAFE_INTEGER;
}

static napi_value will_need(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int32_t fd;
  double offset, length;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 3 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_double(env, argv[1], &offset) != napi_ok ||
      napi_get_value_double(env, argv[2], &length) != napi_ok || fd < 0 || !integral(offset) || !integral(length) ||
      length == 0) {
    napi_throw_range_error(env, "ERR_INVALID", "willNeed(fd, offset, length): fd >= 0, integer offset >= 0, integer length > 0");
    return NULL;
  }
  int rc = posix_fadvise(fd, (off_t)offset, (off_t)length, POSIX_FADV_WILLNEED);
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
