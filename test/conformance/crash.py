# Crash-consistency client for test/conformance/crash.test.ts, run under nbdsh
# (libnbd's Python shell). Two modes (CRASH_MODE):
#
# write:  forever, in numbered batches: up to BATCH concurrent 4 KiB requests to
#         distinct blocks of the first BLOCKS blocks (most write a pattern unique
#         to (round, batch, block), some write zeroes or trim one block, a few
#         trim a whole 4 MiB object so that it is freed and later reallocated),
#         wait for all, then
#         NBD_CMD_FLUSH and print "FLUSHED <batch>". The test kills the daemon
#         (kill -9) at a random moment; the writer then stops on the first error.
#         The sequence of batches is a pure function of (seed, round), so the
#         verifier can recompute what each batch did.
# verify: after the restart, read the whole volume and check every 4 KiB block:
#         - a block whose last operation in a flushed batch (<= LAST_FLUSHED) is
#           known must hold exactly that (proto.md "NBD_CMD_FLUSH": every write
#           completed before the flush was sent is on permanent storage), or the
#           result of the one batch that may have been in flight (LAST_FLUSHED+1);
#         - anything else is a failure: garbage (neither zeros nor a valid
#           pattern), a pattern for another block (misdirected), or an older
#           version (a lost flushed write).
#         The state observed is saved (CRASH_STATE) as the baseline of the next round.
#
# Environment: CRASH_URI, CRASH_SEED, CRASH_ROUND, CRASH_BLOCKS, CRASH_BATCH,
# CRASH_STATE (JSON file), CRASH_LAST_FLUSHED (verify; -1 if none).
import hashlib
import json
import os
import random
import struct
import sys

import nbd

BLOCK = 4096
OBJECT_BLOCKS = 1024  # 4 MiB objects
MAGIC = b"TSCRASH1"
HEADER = struct.Struct("<8sIIII")  # magic, round, batch, block, seed

MODE = os.environ["CRASH_MODE"]
URI = os.environ["CRASH_URI"]
SEED = int(os.environ["CRASH_SEED"]) & 0xFFFFFFFF
ROUND = int(os.environ["CRASH_ROUND"])
BLOCKS = int(os.environ["CRASH_BLOCKS"])
BATCH = int(os.environ["CRASH_BATCH"])
STATE = os.environ["CRASH_STATE"]


def pattern(rnd, batch, block):
    head = HEADER.pack(MAGIC, rnd, batch, block, SEED)
    return head + hashlib.shake_128(head).digest(BLOCK - HEADER.size)


def plans(rnd):
    """Yields, per batch, a list of (first_block, block_count, kind) over distinct blocks.

    kind: 'W' pattern write, 'Z' write zeroes, 'T' trim of one block, or 'O' trim of
    a whole object (OBJECT_BLOCKS blocks: the engine frees it, and a later write
    reallocates a chunk, perhaps one that held other data before the crash).
    """
    rng = random.Random(SEED * 1_000_003 + rnd)
    objects = max(1, BLOCKS // OBJECT_BLOCKS)
    while True:
        n = rng.randint(1, BATCH)
        plan = []
        taken_obj = None
        if rng.random() < 0.03:
            taken_obj = rng.randrange(objects)
            plan.append((taken_obj * OBJECT_BLOCKS, OBJECT_BLOCKS, "O"))
        chosen = {}
        while len(chosen) < n:
            b = rng.randrange(BLOCKS)
            if b in chosen or (taken_obj is not None and b // OBJECT_BLOCKS == taken_obj):
                continue
            r = rng.random()
            chosen[b] = "W" if r < 0.85 else ("Z" if r < 0.95 else "T")
        plan.extend((b, 1, k) for b, k in sorted(chosen.items()))
        yield plan


def result_of(kind, rnd, batch):
    """What a block holds after an operation: 'Z' for zeros, or [round, batch] for a pattern."""
    return "Z" if kind in ("Z", "T", "O") else [rnd, batch]


def write_mode():
    h = nbd.NBD()
    h.connect_uri(URI)
    batch = 0
    try:
        for plan in plans(ROUND):
            bufs = []
            cookies = []
            for (block, count, kind) in plan:
                off = block * BLOCK
                if kind == "W":
                    buf = nbd.Buffer.from_bytearray(bytearray(pattern(ROUND, batch, block)))
                    bufs.append(buf)
                    cookies.append(h.aio_pwrite(buf, off))
                elif kind == "Z":
                    cookies.append(h.aio_zero(count * BLOCK, off))
                else:
                    cookies.append(h.aio_trim(count * BLOCK, off))
            while h.aio_in_flight() > 0:
                h.poll(-1)
            for c in cookies:
                h.aio_command_completed(c)
            h.flush()
            print(f"FLUSHED {batch}", flush=True)
            batch += 1
    except nbd.Error as ex:
        print(f"WRITER STOPPED in batch {batch}: {ex}", flush=True)
        sys.exit(0)


def classify(data, block):
    if data.count(0) == BLOCK:
        return "Z", None
    magic, rnd, batch, blk, seed = HEADER.unpack_from(data)
    if magic != MAGIC or seed != SEED:
        return None, f"garbage (first bytes {data[:32].hex()})"
    if data != pattern(rnd, batch, blk):
        return None, f"torn or corrupt pattern (round {rnd} batch {batch} block {blk})"
    if blk != block:
        return None, f"misdirected: holds the pattern of block {blk} (round {rnd} batch {batch})"
    return [rnd, batch], None


def verify_mode():
    last_flushed = int(os.environ["CRASH_LAST_FLUSHED"])
    if os.path.exists(STATE):
        with open(STATE) as f:
            baseline = json.load(f)
    else:
        baseline = ["Z"] * BLOCKS
    durable = list(baseline)
    maybe = {}
    gen = plans(ROUND)
    for batch in range(last_flushed + 2):
        plan = next(gen)
        for (first, count, kind) in plan:
            for block in range(first, first + count):
                if batch <= last_flushed:
                    durable[block] = result_of(kind, ROUND, batch)
                else:
                    maybe[block] = result_of(kind, ROUND, batch)

    h = nbd.NBD()
    h.connect_uri(URI)
    size = h.get_size()
    observed = []
    failures = []
    counts = {"flushed_exact": 0, "inflight_batch": 0, "zero_untouched": 0, "outside_zero": 0}
    chunk = 1024 * 1024
    for pos in range(0, size, chunk):
        data = h.pread(min(chunk, size - pos), pos)
        for k in range(0, len(data), BLOCK):
            block = (pos + k) // BLOCK
            got, why = classify(data[k:k + BLOCK], block)
            if why is not None:
                failures.append(f"block {block}: {why}")
                got = "?"
            if block >= BLOCKS:
                if got != "Z":
                    failures.append(f"block {block} outside the written region is not zero: {got}")
                counts["outside_zero"] += 1
                continue
            observed.append(got)
            if got == "?":
                continue
            if got == durable[block]:
                counts["flushed_exact" if durable[block] != baseline[block] else "zero_untouched"] += 1
            elif block in maybe and got == maybe[block]:
                counts["inflight_batch"] += 1
            else:
                failures.append(f"block {block}: holds {got}, expected {durable[block]} (durable after flush of batch {last_flushed})"
                                + (f" or {maybe[block]} (in-flight batch {last_flushed + 1})" if block in maybe else ""))
    if failures:
        print(f"CRASH VERIFY FAILED round {ROUND} (TESSERA_SEED={SEED}, last flushed batch {last_flushed}): {len(failures)} bad blocks", flush=True)
        for line in failures[:40]:
            print("  " + line, flush=True)
        sys.exit(1)
    with open(STATE + ".tmp", "w") as f:
        json.dump(observed, f)
    os.replace(STATE + ".tmp", STATE)
    changed = sum(1 for b in range(BLOCKS) if durable[b] != baseline[b])
    print(f"CRASH VERIFY OK round {ROUND}: batches 0..{last_flushed} flushed, {changed} blocks changed by them all read back exactly; "
          + " ".join(f"{k}={v}" for k, v in counts.items()), flush=True)


if MODE == "write":
    write_mode()
elif MODE == "verify":
    verify_mode()
else:
    raise SystemExit(f"unknown CRASH_MODE {MODE}")
