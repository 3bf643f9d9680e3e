"""Fuzz the container parser beyond the unit tests: random streams, truncations, byte edits.

Usage: .venv/bin/python tools/fuzz_container.py [--seconds 60] [--seed 0]

Every input must either parse or raise cod_fast.BitstreamError; anything else (another
exception, a crash) is printed with the input in hex and the exit code is 1.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cod_fast.bitstream import (  # noqa: E402
    Container,
    DecodeParams,
    SectionType,
    pack_indices_section,
    read_container,
    unpack_indices_section,
    write_container,
)
from cod_fast.errors import BitstreamError  # noqa: E402


def _valid(rng: random.Random) -> bytes:
    rows, cols, bits = rng.randint(1, 6), rng.randint(1, 6), rng.choice([4, 8])
    packed = bytes(rng.randrange(256) for _ in range((rows * cols * bits + 7) // 8))
    if (rows * cols * bits) % 8:  # zero the padding bits, as the packer does
        packed = packed[:-1] + bytes([packed[-1] & (0xFF << (8 - (rows * cols * bits) % 8)) & 0xFF])
    sections = {SectionType.INDICES: pack_indices_section(packed, bits, rows, cols)}
    if rng.random() < 0.7:
        sections[SectionType.DECODE_PARAMS] = DecodeParams("adam2", rng.randint(1, 50), 3.0, rng.randrange(2**64)).to_bytes()
    return write_container(Container(codec_id=rng.randint(1, 3), fingerprint=rng.randbytes(16),
                                     height=rng.randint(1, 5000), width=rng.randint(1, 5000),
                                     sections=sections))


def _mutate(rng: random.Random, data: bytes) -> bytes:
    kind = rng.randrange(4)
    b = bytearray(data)
    if kind == 0:
        return bytes(b[: rng.randrange(len(b))])
    if kind == 1:
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif kind == 2:
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    else:
        b += rng.randbytes(rng.randint(1, 16))
    return bytes(b)


def _check(data: bytes) -> bool:
    try:
        c = read_container(data)
        for tag, payload in c.sections.items():
            if tag == SectionType.INDICES:
                unpack_indices_section(payload)
            elif tag == SectionType.DECODE_PARAMS:
                DecodeParams.from_bytes(payload)
    except BitstreamError:
        pass
    except Exception as exc:  # the fuzzer's purpose: report anything else
        print(f"UNEXPECTED {type(exc).__name__}: {exc}\n  input: {data.hex()}")
        return False
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    end, n, bad = time.monotonic() + args.seconds, 0, 0
    while time.monotonic() < end:
        valid = _valid(rng)
        r = rng.random()
        data = rng.randbytes(rng.randint(0, 120)) if r < 0.1 else _mutate(rng, valid)
        if r > 0.95:
            data = valid
        bad += not _check(data)
        n += 1
    print(f"{n} inputs, {bad} unexpected outcomes")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
