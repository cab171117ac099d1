# fsx-style random workload for one NBD export, run under nbdsh (libnbd's Python
# shell) by test/conformance/fsx.test.ts; modelled on Ceph's/xfstests' fsx.
#
# Every operation is applied both to the export and to an in-memory mirror
# (bytearray); every read, and a whole-volume read at checkpoints and at the end,
# is compared with the mirror. Operations: read, write (some with FUA),
# trim, write_zeroes with each combination of NO_HOLE and FAST_ZERO, flush,
# cache, and block_status (a range the server calls NBD_STATE_ZERO must be zeros
# in the mirror). Offsets and lengths are byte-granular, 512-aligned or
# 4 KiB-aligned, up to 1 MiB, biased towards the end of the volume and towards
# 4 MiB object boundaries, where off-by-one bugs live. A quarter of the steps
# send one request at a time (classic fsx); the others send a batch of up to
# BATCH_MAX requests at once (libnbd aio), never overlapping when either side
# changes data, often back to back inside one 4 KiB block, so the server runs
# them concurrently and may reply out of order (proto.md "Transmission").
#
# Tessera promises more than proto.md here: trimmed ranges read as zeros
# (proto.md lets them read as anything), so the mirror zeros them.
#
# Byte-granular requests are legal only because this client does not ask for
# block size constraints (set_request_block_size(False)); libnbd's own
# alignment check is switched off (STRICT_ALIGN) so they reach the server.
#
# Parameters (environment): FSX_URI, FSX_SEED, FSX_OPS, FSX_PHASE (seeds the
# phase's sequence), FSX_MIRROR (file: loaded if present, saved at the end so
# the next phase continues from it), FSX_SIZE (expected export size; the mirror
# is truncated or zero-extended to it, which is what a resize must do).
# Exit status 0 only if there were 0 mismatches; on a mismatch it prints the
# seed, the failing operation and the last operations, and exits 1.
import os
import random
import sys
import time

import nbd

URI = os.environ["FSX_URI"]
SEED = int(os.environ["FSX_SEED"])
OPS = int(os.environ["FSX_OPS"])
PHASE = int(os.environ.get("FSX_PHASE", "1"))
MIRROR_PATH = os.environ["FSX_MIRROR"]
EXPECT_SIZE = int(os.environ["FSX_SIZE"])

OBJECT_BYTES = 4 * 1024 * 1024
LEN_MAX = 1024 * 1024
READ_CHUNK = 16 * 1024 * 1024
CHECKPOINT_EVERY = 10_000
HISTORY = 40

rng = random.Random(SEED * 1_000_003 + PHASE)
history = []
counts = {}


def log_op(desc):
    history.append(desc)
    if len(history) > HISTORY:
        del history[0]


def fail(msg):
    print("last operations (oldest first):", flush=True)
    for line in history:
        print("  " + line, flush=True)
    # Last, so that it is in the tail a test failure quotes.
    print(f"FSX FAILURE (phase {PHASE}, TESSERA_SEED={SEED}): {msg}", flush=True)
    sys.exit(1)


def connect():
    h = nbd.NBD()
    h.set_request_block_size(False)
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.connect_uri(URI)
    h.set_strict_mode(h.get_strict_mode() & ~nbd.STRICT_ALIGN)
    return h


def first_diff(a, b):
    n = min(len(a), len(b))
    step = 4096
    i = 0
    while i < n and a[i:i + step] == b[i:i + step]:
        i += step
    while i < n and a[i] == b[i]:
        i += 1
    return i


def check_equal(what, off, got, mirror):
    want = bytes(mirror[off:off + len(got)])
    if got != want:
        d = first_diff(got, want)
        ndiff = sum(1 for x, y in zip(got, want) if x != y)
        fail(f"{what}: mismatch at volume offset {off + d} (byte {d} of the {len(got)}-byte range at {off}); "
             f"{ndiff} bytes differ; got {got[d:d + 16].hex()} want {want[d:d + 16].hex()}")


def pick_range(size):
    r = rng.random()
    if r < 0.65:
        n = rng.randint(1, 4096)
    elif r < 0.92:
        n = rng.randint(1, 65536)
    elif r < 0.985:
        n = rng.randint(1, 262144)
    else:
        n = rng.randint(1, LEN_MAX)
    n = min(n, size)
    a = rng.random()
    align = 1 if a < 0.5 else (512 if a < 0.85 else 4096)
    w = rng.random()
    if w < 0.10:
        off = size - n - rng.randint(0, 8192)  # near the end
    elif w < 0.20:
        obj = rng.randrange(0, max(1, size // OBJECT_BYTES + 1))
        off = obj * OBJECT_BYTES - rng.randint(0, n) + rng.randint(-600, 600)  # across an object boundary
    else:
        off = rng.randint(0, size - n)
    off = max(0, min(off, size - n))
    if align > 1:
        off -= off % align
        n = max(align, n - n % align)
        if off + n > size:
            off = max(0, size - n)
            off -= off % align
        if n > size:
            n = size - size % align
    return off, n


def verify_all(h, mirror, what):
    size = len(mirror)
    pos = 0
    while pos < size:
        n = min(READ_CHUNK, size - pos)
        check_equal(what, pos, h.pread(n, pos), mirror)
        pos += n


OP_WEIGHTS = [
    ("read", 30), ("write", 35), ("trim", 8), ("zero", 10), ("flush", 4),
    ("block_status", 5), ("cache", 1), ("reconnect", 0.05),
]
OP_NAMES = [o[0] for o in OP_WEIGHTS]
OP_W = [o[1] for o in OP_WEIGHTS]
MUTATIONS = ("write", "trim", "zero")
RANGED = ("read", "write", "trim", "zero", "block_status", "cache")
BATCH_MAX = 16


def flag_names(flags):
    parts = [x for x, b in (("NO_HOLE", nbd.CMD_FLAG_NO_HOLE), ("FAST_ZERO", nbd.CMD_FLAG_FAST_ZERO), ("FUA", nbd.CMD_FLAG_FUA)) if flags & b]
    return "|".join(parts) or "0"


def conflicts(batch, op, off, n):
    """Two requests of one batch may not overlap if either changes data (their order is undefined)."""
    for b in batch:
        if b["name"] not in RANGED:
            continue
        if b["off"] < off + n and off < b["off"] + b["n"]:
            if op in MUTATIONS or b["name"] in MUTATIONS:
                return True
    return False


def plan_batch(i, size):
    """Up to BATCH_MAX operations that may run concurrently; adjacent ranges (sharing a 4 KiB block) on purpose."""
    k = 1 if rng.random() < 0.25 else rng.randint(2, BATCH_MAX)
    batch = []
    while len(batch) < k and i + len(batch) < OPS:
        op = rng.choices(OP_NAMES, OP_W)[0]
        if op == "reconnect":
            if batch:
                continue
            return [{"name": op, "i": i}]
        entry = {"name": op, "i": i + len(batch)}
        if op in RANGED:
            for _ in range(6):
                off, n = pick_range(size)
                if batch and rng.random() < 0.3:
                    # right after the previous range: concurrent sub-block writes to one stored block
                    prev = batch[-1]
                    if prev["name"] in RANGED:
                        off = min(prev["off"] + prev["n"] + rng.randint(0, 64), size - n)
                if not conflicts(batch, op, off, n):
                    break
            else:
                continue
            entry["off"], entry["n"] = off, n
        if op == "write":
            entry["data"] = rng.randbytes(entry["n"])
            entry["flags"] = nbd.CMD_FLAG_FUA if rng.random() < 0.08 else 0
        elif op == "zero":
            entry["flags"] = rng.choice([0, nbd.CMD_FLAG_NO_HOLE, nbd.CMD_FLAG_FAST_ZERO, nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FAST_ZERO])
        batch.append(entry)
    return batch


def describe_op(e):
    name = e["name"]
    if name in RANGED:
        extra = f" flags {flag_names(e['flags'])}" if e.get("flags") else ""
        return f"#{e['i']} {name} {e['off']}+{e['n']}{extra}"
    return f"#{e['i']} {name}"


def check_extents(e, size, mirror):
    off, n = e["off"], e["n"]
    if not e["extents"]:
        fail(f"op {describe_op(e)}: no base:allocation extents returned")
    for (start, entries) in e["extents"]:
        if start != off:
            fail(f"op {describe_op(e)}: extents start at {start}")
        pos = start
        for k in range(0, len(entries), 2):
            length, flags = entries[k], entries[k + 1]
            if length <= 0:
                fail(f"op {describe_op(e)}: extent of length {length}")
            end = min(pos + length, size)
            if flags & nbd.STATE_ZERO and mirror.count(0, pos, end) != end - pos:
                nz = next(j for j in range(pos, end) if mirror[j] != 0)
                fail(f"op {describe_op(e)}: extent {pos}+{length} flagged zero (flags {flags}) "
                     f"but byte {nz} is {mirror[nz]:#x} in the mirror")
            pos += length


def run_batch(h, batch, size, mirror):
    """Submits every request of the batch, waits for all, then checks and applies them in order."""
    for e in batch:
        log_op(describe_op(e) + (f" (batch of {len(batch)})" if len(batch) > 1 else ""))
        name = e["name"]
        if name == "read":
            e["buf"] = nbd.Buffer(e["n"])
            e["cookie"] = h.aio_pread(e["buf"], e["off"])
        elif name == "write":
            e["buf"] = nbd.Buffer.from_bytearray(bytearray(e["data"]))
            e["cookie"] = h.aio_pwrite(e["buf"], e["off"], flags=e["flags"])
        elif name == "trim":
            e["cookie"] = h.aio_trim(e["n"], e["off"])
        elif name == "zero":
            e["cookie"] = h.aio_zero(e["n"], e["off"], flags=e["flags"])
        elif name == "flush":
            e["cookie"] = h.aio_flush()
        elif name == "cache":
            e["cookie"] = h.aio_cache(e["n"], e["off"])
        elif name == "block_status":
            e["extents"] = []

            def cb(metacontext, offset, entries, err, e=e):
                if metacontext == nbd.CONTEXT_BASE_ALLOCATION:
                    e["extents"].append((offset, list(entries)))
                return 0

            e["cookie"] = h.aio_block_status(e["n"], e["off"], cb)
    while h.aio_in_flight() > 0:
        h.poll(-1)
    for e in batch:
        name = e["name"]
        counts[name] = counts.get(name, 0) + 1
        try:
            h.aio_command_completed(e["cookie"])
        except nbd.Error as ex:
            # proto.md "NBD_CMD_FLAG_FAST_ZERO": a server may refuse with ENOTSUP, leaving the range untouched.
            if name == "zero" and e["flags"] & nbd.CMD_FLAG_FAST_ZERO and ex.errnum == 95:
                counts["fast_zero_refused"] = counts.get("fast_zero_refused", 0) + 1
                e["refused"] = True
                continue
            fail(f"op {describe_op(e)} failed: {ex}")
    for e in batch:
        name = e["name"]
        if name == "write":
            mirror[e["off"]:e["off"] + e["n"]] = e["data"]
        elif name in ("trim", "zero") and not e.get("refused"):
            mirror[e["off"]:e["off"] + e["n"]] = bytes(e["n"])
    for e in batch:
        if e["name"] == "read":
            check_equal(f"op {describe_op(e)}", e["off"], bytes(e["buf"].to_bytearray()), mirror)
        elif e["name"] == "block_status":
            check_extents(e, size, mirror)


def main():
    h = connect()
    size = h.get_size()
    if size != EXPECT_SIZE:
        fail(f"export size is {size}, expected {EXPECT_SIZE}")
    if PHASE > 1 and os.path.exists(MIRROR_PATH):
        with open(MIRROR_PATH, "rb") as f:
            mirror = bytearray(f.read())
    else:
        mirror = bytearray(size)
    if len(mirror) > size:
        del mirror[size:]  # shrink: the data past the new end is gone
    elif len(mirror) < size:
        mirror.extend(bytes(size - len(mirror)))  # grow: the new range must read as zeros
    log_op(f"phase {PHASE} start: size {size}")
    # The whole volume must match the mirror before we start (resize semantics).
    verify_all(h, mirror, "initial whole-volume check")

    t0 = time.time()
    i = 0
    next_checkpoint = CHECKPOINT_EVERY
    batches = 0
    while i < OPS:
        batch = plan_batch(i, size)
        if not batch:
            continue
        batches += 1
        if batch[0]["name"] == "reconnect":
            log_op(f"#{i} reconnect")
            counts["reconnect"] = counts.get("reconnect", 0) + 1
            h.shutdown()
            h = connect()
            i += 1
            continue
        run_batch(h, batch, size, mirror)
        i += len(batch)
        if i >= next_checkpoint:
            verify_all(h, mirror, f"checkpoint after op #{i}")
            next_checkpoint += CHECKPOINT_EVERY
    h.flush()
    verify_all(h, mirror, "final whole-volume check")
    # A fresh connection sees the same (another client's view, after flush).
    h.shutdown()
    h = connect()
    verify_all(h, mirror, "final whole-volume check on a new connection")
    h.shutdown()
    with open(MIRROR_PATH + ".tmp", "wb") as f:
        f.write(mirror)
    os.replace(MIRROR_PATH + ".tmp", MIRROR_PATH)
    dt = time.time() - t0
    summary = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    print(f"FSX OK phase {PHASE}: {i} ops in {batches} batches (up to {BATCH_MAX} concurrent), 0 mismatches, "
          f"size {size}, {dt:.1f} s ({i / max(dt, 1e-6):.0f} ops/s); {summary}", flush=True)


main()
