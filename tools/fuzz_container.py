"""Fuzz the container parser beyond the unit tests: random streams, truncations, byte edits;
with ``--codecs``, the codec-level decoders too.

Usage: .venv/bin/python tools/fuzz_container.py [--seconds 60] [--seed 0] [--codecs]

Container mode: every input must either parse or raise cod_fast.BitstreamError.

Codec mode (``--codecs``): a valid small stream of every codec (the default model, sodec-tiny and
its checkerboard variant, tiny seeded pixel CoD (decoded with 1 sampler step), one-step CoD,
CoD-Lite and DiffC (steps replayed, no final denoising)) is mutated -- raw byte edits and
truncations, section payload edits re-serialised with valid CRCs, forged image sizes, swapped
codec ids, dropped and foreign sections -- and decoded under ``max_memory=--max-memory``; every
input must decode or raise a cod_fast error (``CodFastError``: BitstreamError, LimitExceededError,
ModelMismatchError, AllocationError). The time is shared equally among the codecs.

Anything else (another exception, a crash) is printed with the input in hex and the exit code is 1.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
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


# ------------------------------------------------------------------------------------------------
# codec-level decoding
# ------------------------------------------------------------------------------------------------

def _codec_targets() -> list[tuple[str, object, bytes, object]]:
    """(name, codec, valid stream, decode function) for every codec, tiny seeded models."""
    import copy

    import torch

    from cod_fast.codecs.diffc import DiffCCodec
    from cod_fast.loading import load_model

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tiny_models import TINY_LITE, TINY_ONE_STEP, TINY_PIXEL, official_checkpoint

    def img(h: int, w: int) -> torch.Tensor:
        return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(h * w))

    out: list[tuple[str, object, bytes, object]] = []
    d = load_model()
    out.append(("default", d, d.encode(img(40, 52)), lambda c, b, mm: c.decode(b, max_memory=mm)))
    for name in ("sodec-tiny", "sodec-tiny-checkerboard"):
        c = load_model(name)
        out.append((name, c, c.encode(img(40, 52)), lambda c, b, mm: c.decode(b, max_memory=mm)))
    pix = load_model(copy.deepcopy(TINY_PIXEL), official_checkpoint(TINY_PIXEL, 1))
    out.append(("cod-pixel", pix, pix.encode(img(40, 52), steps=2),
                lambda c, b, mm: c.decode(b, steps=1, max_memory=mm)))
    for name, cfg in (("cod-one-step", TINY_ONE_STEP), ("cod-lite", TINY_LITE)):
        c = load_model(copy.deepcopy(cfg), official_checkpoint(cfg, 2))
        out.append((name, c, c.encode(img(40, 52)), lambda c, b, mm: c.decode(b, max_memory=mm)))
    dc = DiffCCodec(pix, backend="cpp")
    out.append(("diffc", dc, dc.encode(img(32, 32), steps=3, seed=5),
                lambda c, b, mm: c.decode_trace(b, denoise=False, max_memory=mm)))
    return out


def _mutate_codec_stream(rng: random.Random, data: bytes) -> bytes:
    """A structure-aware mutation of a valid container (see the module docstring)."""
    from dataclasses import replace

    from cod_fast.bitstream import MAX_IMAGE_SIDE

    kind = rng.randrange(6)
    if kind == 0:
        return _mutate(rng, data)  # raw: mostly CRC / header errors
    c = read_container(data)
    sections = dict(c.sections)
    if kind in (1, 2) and sections:  # a section's payload, re-serialised with valid CRCs
        tag = rng.choice(sorted(sections))
        p = bytearray(sections[tag])
        op = rng.randrange(4)
        if op == 0 and p:
            for _ in range(rng.randint(1, 3)):
                p[rng.randrange(len(p))] ^= 1 << rng.randrange(8)
        elif op == 1 and p:
            for _ in range(rng.randint(1, 3)):
                p[rng.randrange(len(p))] = rng.choice([0, 0xFF, rng.randrange(256)])
        elif op == 2:
            p = p[: rng.randrange(len(p) + 1)]
        else:
            p += rng.randbytes(rng.randint(1, 32))
        sections[tag] = bytes(p)
        return write_container(replace(c, sections=sections))
    if kind == 3:  # forged image size, sections unchanged
        def side(v: int) -> int:
            return rng.choice([1, v + rng.randint(-40, 40), rng.randint(1, 4096), MAX_IMAGE_SIDE])

        h, w = max(1, side(c.height)), max(1, side(c.width))
        return write_container(replace(c, height=min(h, MAX_IMAGE_SIDE), width=min(w, MAX_IMAGE_SIDE)))
    if kind == 4:  # another codec id
        return write_container(replace(c, codec_id=rng.randint(0, 10)))
    if sections and rng.random() < 0.5:  # a section dropped
        sections.pop(rng.choice(sorted(sections)))
    else:  # a foreign section added
        sections[rng.randint(1, 30)] = rng.randbytes(rng.randint(0, 24))
    try:
        return write_container(replace(c, sections=sections))
    except ValueError:
        return data


def _check_codec(name: str, codec: object, decode: object, data: bytes, max_memory: int,
                 outcomes: Counter | None = None) -> bool:
    from cod_fast.errors import CodFastError

    try:
        decode(codec, data, max_memory)  # type: ignore[operator]
        if outcomes is not None:
            outcomes["decoded"] += 1
    except CodFastError as exc:
        if outcomes is not None:
            outcomes[type(exc).__name__] += 1
    except Exception as exc:  # noqa: BLE001  (the fuzzer's purpose: report anything else)
        print(f"UNEXPECTED [{name}] {type(exc).__name__}: {exc}\n  input: {data[:4096].hex()}")
        return False
    return True


def fuzz_codecs(seconds: float, seed: int, max_memory: str = "512M") -> tuple[int, int]:
    """Mutated streams of every codec through its decoder for ``seconds`` in all: (inputs, unexpected)."""
    from cod_fast.memory import parse_bytes

    mm = parse_bytes(max_memory)
    rng = random.Random(seed)
    targets = _codec_targets()
    n = bad = 0
    for name, codec, valid, decode in targets:
        end = time.monotonic() + seconds / len(targets)
        k = 0
        outcomes: Counter = Counter()
        bad += not _check_codec(name, codec, decode, valid, mm)
        while time.monotonic() < end:
            try:
                data = _mutate_codec_stream(rng, valid)
            except (BitstreamError, ValueError):  # a mutation write_container itself refuses
                continue
            bad += not _check_codec(name, codec, decode, data, mm, outcomes)
            k += 1
        print(f"{name}: {k} mutated streams: " + ", ".join(f"{v} {key}" for key, v in outcomes.most_common()))
        n += k + 1
    return n, bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--codecs", action="store_true", help="fuzz the codec-level decoders instead of the parser")
    ap.add_argument("--max-memory", default="512M", help="decode budget in codec mode (default 512M)")
    args = ap.parse_args()
    if args.codecs:
        n, bad = fuzz_codecs(args.seconds, args.seed, args.max_memory)
        print(f"{n} inputs, {bad} unexpected outcomes")
        return 1 if bad else 0
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
