"""Random-mutation fuzzing of cod_fast.entropy through its Python API (run by hand).

    .venv/bin/python tools/fuzz_rans.py --seconds 60 [--seed 1]

Each case draws random tables (CdfTables.from_counts), random symbols (some escaped), encodes them
in both formats, checks the round trip, then decodes mutated copies of the streams (bit flips,
byte writes, truncation, insertion, extreme 32-bit fields) and random byte strings. A decoder may
return symbols or raise BitstreamError; anything else (another exception, a crash, a wrong round
trip) stops the run with the failing case. The native counterparts are csrc/rans/fuzz/fuzz_rans.cpp
(libFuzzer or standalone) and tools/asan.sh.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from cod_fast.entropy import BitstreamError, CdfTables


def random_case(rng: np.random.Generator):
    n_tables = int(rng.integers(1, 5))
    counts = [rng.integers(0, 40, size=int(rng.integers(1, 30))) for _ in range(n_tables)]
    for c in counts:
        if c.sum() == 0:
            c[0] = 1
    offsets = rng.integers(-50, 50, size=n_tables)
    tables = CdfTables.from_counts(counts, offsets)
    n = int(rng.integers(0, 400))
    idx = rng.integers(0, n_tables, size=n).astype(np.int32)
    sym = np.empty(n, dtype=np.int32)
    for i, t in enumerate(idx):
        if rng.random() < 0.05:
            sym[i] = offsets[t] + int(rng.integers(-(2**29), 2**29))
        else:
            sym[i] = offsets[t] + int(rng.choice(np.flatnonzero(counts[t])))
    return tables, sym, idx


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        op = int(rng.integers(6))
        if not b:
            b = bytearray(rng.integers(0, 256, size=int(rng.integers(0, 64)), dtype=np.uint8).tobytes())
            continue
        pos = int(rng.integers(len(b)))
        if op == 0:
            b[pos] ^= 1 << int(rng.integers(8))
        elif op == 1:
            b[pos] = int(rng.integers(256))
        elif op == 2:
            del b[pos:]
        elif op == 3:
            b.insert(pos, int(rng.integers(256)))
        elif op == 4 and len(b) >= 4:
            pos = min(pos, len(b) - 4)
            b[pos : pos + 4] = int(rng.choice([0, 1, 2**31, 2**32 - 1, 8, 4])).to_bytes(4, "little")
        else:
            b[pos:pos] = bytes(b[: int(rng.integers(1, 16))])  # splice a copy of the header
    return bytes(b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    t0, cases, decodes, raised = time.monotonic(), 0, 0, 0
    while time.monotonic() - t0 < args.seconds:
        tables, sym, idx = random_case(rng)
        threads = int(rng.integers(1, 4))
        fast = tables.encode(sym, idx, threads=threads, segment_symbols=int(rng.integers(1, 200)))
        compat = tables.compat_encode(sym, idx)
        if not np.array_equal(tables.decode(fast, idx, threads=threads).numpy(), sym):
            raise SystemExit(f"fast round trip failed (seed {args.seed}, case {cases})")
        if not np.array_equal(tables.compat_decode(compat, idx), sym):
            raise SystemExit(f"compat round trip failed (seed {args.seed}, case {cases})")
        cases += 1
        for data, decode in ((fast, tables.decode), (compat, tables.compat_decode)):
            for _ in range(8):
                bad = mutate(data, rng) if rng.random() < 0.95 else rng.bytes(int(rng.integers(0, 100)))
                decodes += 1
                try:
                    decode(bad, idx)
                except BitstreamError:
                    raised += 1
    print(f"fuzz_rans: {cases} round trips and {decodes} mutated decodes ran clean "
          f"({raised} raised BitstreamError) in {args.seconds:.0f} s, seed {args.seed}")


if __name__ == "__main__":
    main()
