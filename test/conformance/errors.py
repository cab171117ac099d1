# Error-path checks for test/conformance/errors.test.ts, run under nbdsh
# (libnbd's Python shell). ERRORS_CHECK names one check; each prints
# "OK <check>: ..." and exits 0, or raises/exits 1 with what went wrong.
#
# libnbd normally refuses out-of-bounds and misaligned requests itself; the
# checks clear STRICT_BOUNDS / STRICT_ALIGN so that those requests reach the
# server and we see the server's answer (proto.md "Error values").
#
# Environment: ERRORS_CHECK, ERRORS_URI (an export), ERRORS_BAD_URI (an export
# that does not exist), ERRORS_SECONDS and ERRORS_SEED (for "steady"),
# ERRORS_NODE/ERRORS_BIN/ERRORS_DATA_DIR (to run the tessera CLI).
import errno
import os
import random
import subprocess
import sys
import time

import nbd

CHECK = os.environ["ERRORS_CHECK"]
URI = os.environ["ERRORS_URI"]


def connect(request_block_size=True, strict_off=0):
    h = nbd.NBD()
    h.set_request_block_size(request_block_size)
    h.connect_uri(URI)
    h.set_strict_mode(h.get_strict_mode() & ~strict_off)
    return h


def expect_errno(what, want, fn):
    try:
        fn()
    except nbd.Error as ex:
        if ex.errnum != want:
            raise SystemExit(f"{what}: expected {errno.errorcode[want]}, got errnum {ex.errnum} "
                             f"({errno.errorcode.get(ex.errnum, '?')}): {ex}")
        return
    raise SystemExit(f"{what}: expected {errno.errorcode[want]}, but the request succeeded")


def check_past_end():
    h = connect(strict_off=nbd.STRICT_BOUNDS)
    size = h.get_size()
    sentinel = bytes([0x5A]) * 512
    h.pwrite(sentinel, size - 512)
    # proto.md "Error values": EINVAL for reads (and trims) beyond the end, ENOSPC for writes.
    expect_errno("read at the end", errno.EINVAL, lambda: h.pread(512, size))
    expect_errno("read straddling the end", errno.EINVAL, lambda: h.pread(1024, size - 512))
    expect_errno("read at offset 2^63", errno.EINVAL, lambda: h.pread(512, 1 << 63))
    expect_errno("write at the end", errno.ENOSPC, lambda: h.pwrite(b"\x01" * 512, size))
    expect_errno("write straddling the end", errno.ENOSPC, lambda: h.pwrite(b"\x02" * 1024, size - 512))
    expect_errno("write_zeroes straddling the end", errno.ENOSPC, lambda: h.zero(1024, size - 512))
    expect_errno("trim straddling the end", errno.EINVAL, lambda: h.trim(1024, size - 512))
    # A rejected request changes nothing, and the connection still works.
    got = h.pread(512, size - 512)
    if got != sentinel:
        raise SystemExit(f"the last sector changed after rejected requests: {got[:16].hex()}")
    h.flush()
    h.shutdown()
    print(f"OK {CHECK}: EINVAL for reads/trims and ENOSPC for writes past {size}")


def check_misaligned():
    # libnbd asks for block size constraints by default: the server may hold us to 512.
    h = connect(request_block_size=True, strict_off=nbd.STRICT_ALIGN)
    if h.get_block_size(nbd.SIZE_MINIMUM) != 512:
        raise SystemExit(f"minimum block size {h.get_block_size(nbd.SIZE_MINIMUM)}")
    before = h.pread(4096, 0)
    expect_errno("read of 100 bytes at 1", errno.EINVAL, lambda: h.pread(100, 1))
    expect_errno("read of 512 bytes at 100", errno.EINVAL, lambda: h.pread(512, 100))
    expect_errno("write of 512 bytes at 100", errno.EINVAL, lambda: h.pwrite(b"\xee" * 512, 100))
    expect_errno("write of 100 bytes at 0", errno.EINVAL, lambda: h.pwrite(b"\xee" * 100, 0))
    expect_errno("write_zeroes of 100 bytes at 512", errno.EINVAL, lambda: h.zero(100, 512))
    expect_errno("trim of 512 bytes at 1", errno.EINVAL, lambda: h.trim(512, 1))
    after = h.pread(4096, 0)
    if after != before:
        raise SystemExit("data changed after rejected misaligned requests")
    h.pwrite(b"\x33" * 512, 512)
    if h.pread(512, 512) != b"\x33" * 512:
        raise SystemExit("aligned write after rejected requests did not land")
    h.shutdown()
    print(f"OK {CHECK}: misaligned requests get EINVAL once block sizes were agreed")


def check_unaligned_allowed():
    # Without NBD_INFO_BLOCK_SIZE in NBD_OPT_GO the client made no promise: byte-granular IO must work.
    h = connect(request_block_size=False, strict_off=nbd.STRICT_ALIGN)
    h.pwrite(b"\x00" * 8192, 8192)
    h.pwrite(b"abc", 8192 + 4095)  # straddles a 4 KiB block boundary
    h.pwrite(b"Z", 8192 + 1)
    got = h.pread(8192, 8192)
    want = bytearray(8192)
    want[4095:4098] = b"abc"
    want[1] = ord("Z")
    if got != bytes(want):
        raise SystemExit(f"byte-granular writes read back wrong: {got[:8].hex()} ... {got[4090:4100].hex()}")
    if h.pread(3, 8192 + 4095) != b"abc":
        raise SystemExit("byte-granular read is wrong")
    h.shutdown()
    print(f"OK {CHECK}: byte-granular requests served without block size constraints")


def check_unknown_export():
    bad = os.environ["ERRORS_BAD_URI"]
    h = nbd.NBD()
    try:
        h.connect_uri(bad)
    except nbd.Error as ex:
        print(f"OK {CHECK}: connecting to {bad} failed: {ex}")
        return
    raise SystemExit(f"connecting to {bad} succeeded")


def check_steady():
    """A well-behaved client: write, read back and flush its own blocks for ERRORS_SECONDS; any error fails."""
    seconds = float(os.environ["ERRORS_SECONDS"])
    seed = int(os.environ["ERRORS_SEED"])
    rng = random.Random(seed)
    h = connect()
    print("STEADY CONNECTED", flush=True)
    base = 32 * 1024 * 1024
    ops = 0
    deadline = time.time() + seconds
    while time.time() < deadline:
        off = base + rng.randrange(0, 1024) * 4096
        data = rng.randbytes(4096 * rng.randint(1, 16))
        h.pwrite(data, off)
        if h.pread(len(data), off) != data:
            raise SystemExit(f"steady client: read-back mismatch at {off} after {ops} ops")
        ops += 1
        if ops % 50 == 0:
            h.flush()
    h.shutdown()
    print(f"OK {CHECK}: {ops} write+read pairs, all verified")


def tessera(*args):
    """Runs the tessera CLI against the test's daemon (ERRORS_NODE, ERRORS_BIN, ERRORS_DATA_DIR)."""
    cmd = [os.environ["ERRORS_NODE"], os.environ["ERRORS_BIN"], *args, "--data-dir", os.environ["ERRORS_DATA_DIR"]]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}): {r.stdout}{r.stderr}")


def check_resize_while_connected():
    """A live connection sees the new size at once: IO past a shrunken end fails; after a grow it reads zeros."""
    h = connect(strict_off=nbd.STRICT_BOUNDS)
    mib = 1024 * 1024
    h.pwrite(b"\x6b" * 4096, 12 * mib)
    h.flush()
    tessera("volume", "resize", "resizeme", "--size", "8M", "--discard-data")
    expect_errno("write past the new end", errno.ENOSPC, lambda: h.pwrite(b"\x01" * 4096, 12 * mib))
    expect_errno("read past the new end", errno.EINVAL, lambda: h.pread(4096, 12 * mib))
    tessera("volume", "resize", "resizeme", "--size", "16M")
    got = h.pread(4096, 12 * mib)
    if got != bytes(4096):
        raise SystemExit(f"after shrink+grow, data cut off by the shrink reappeared: {got[:16].hex()}")
    h.shutdown()
    print(f"OK {CHECK}: shrink and grow take effect on a live connection; no stale data after regrow")


def check_deleted_while_connected():
    """IO on a deleted volume fails with ESHUTDOWN (proto.md: the server is going away for this export),
    and a new volume of the same name is not reachable through the old connection."""
    h = connect()
    h.pwrite(b"\x42" * 4096, 0)
    tessera("volume", "delete", "deleteme", "--yes")
    expect_errno("read after delete", errno.ESHUTDOWN, lambda: h.pread(4096, 0))
    tessera("volume", "create", "deleteme", "--size", "16M")
    expect_errno("read after re-create, old connection", errno.ESHUTDOWN, lambda: h.pread(4096, 0))
    h2 = connect()
    if h2.pread(4096, 0) != bytes(4096):
        raise SystemExit("a re-created volume shows the deleted volume's data")
    h2.shutdown()
    print(f"OK {CHECK}: ESHUTDOWN after delete; the re-created volume is new and empty")


{
    "resize_while_connected": check_resize_while_connected,
    "deleted_while_connected": check_deleted_while_connected,
    "past_end": check_past_end,
    "misaligned": check_misaligned,
    "unaligned_allowed": check_unaligned_allowed,
    "unknown_export": check_unknown_export,
    "steady": check_steady,
}[CHECK]()
