"""Helpers shared by the bench scripts: machine description, A/B-alternated timing rounds, reports.

The scripts run as ``python bench/<script>.py``; each puts this folder on ``sys.path`` and imports
this module by its plain name (``import bench_common``).
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

Run = Callable[[], torch.Tensor]


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``'s first "model name"; ``platform`` where that is missing)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_averages() -> str:
    """The 1, 5 and 15 minute load averages as "a.aa b.bb c.cc" ("n/a" where the OS has none)."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def machine_line() -> str:
    """One line for a report's head: torch version, torch threads, CPU model, 1-minute load."""
    return (f"torch {torch.__version__}  threads={torch.get_num_threads()}  cpu={cpu_name()}  "
            f"load={os.getloadavg()[0]:.1f}")


def run_selected(args: argparse.Namespace, targets: Mapping[str, Callable[[argparse.Namespace], None]]) -> None:
    """Call ``targets[name](args)`` for every target when ``args.only`` is None, else for that one
    only, in the mapping's order; then print the 1-minute load at the end of the run."""
    for name, bench in targets.items():
        if args.only in (None, name):
            bench(args)
    print(f"load at end={os.getloadavg()[0]:.1f}")


def alternate(runs: Mapping[str, Run], repeat: int) -> tuple[dict[str, list[float]], dict[str, torch.Tensor]]:
    """One warm call of each contender, then ``repeat`` rounds calling each once, in turn (A/B/A/B),
    so that all see the same machine load. Returns ({name: wall seconds per round}, {name: the
    warm call's output})."""
    outs = {name: fn() for name, fn in runs.items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times, outs


def errors(got: torch.Tensor, ref: torch.Tensor) -> str:
    """Max abs difference and relative L2 error of ``got`` against ``ref`` (any shapes that
    broadcast, computed in float64), as one line."""
    d = (got.double() - ref.double())
    rel = float(d.norm() / ref.double().norm().clamp_min(1e-30))
    return f"max|d| {float(d.abs().max()):.3g}  relL2 {rel:.3g}"


def report(title: str, times: Mapping[str, list[float]], outs: Mapping[str, torch.Tensor],
           extra: Callable[[torch.Tensor, torch.Tensor], str] | None = None) -> None:
    """Print ``title`` and a line per contender: median and per-round seconds, speedup against the
    contender named "reference", and (for the others) ``errors`` plus ``extra(out, ref_out)``."""
    ref_t = statistics.median(times["reference"])
    print(title)
    for name, ts in times.items():
        med = statistics.median(ts)
        line = (f"  {name:<10} median {med:7.3f} s  (runs {', '.join(f'{t:.3f}' for t in ts)})  "
                f"speedup {ref_t / med:5.2f}x")
        if name != "reference":
            line += "  " + errors(outs[name], outs["reference"])
            if extra is not None:
                line += "  " + extra(outs[name], outs["reference"])
        print(line)


def gaussian_case(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The rANS benchmarks' data: (symbols int32 [n], scales float32 [n]), N(0, sigma) rounded with
    sigma log-uniform in [0.11, 256] (CompressAI's scale range), from a seeded torch generator."""
    gen = torch.Generator().manual_seed(seed)
    scales = torch.exp(torch.empty(n).uniform_(math.log(0.11), math.log(256.0), generator=gen))
    return torch.round(torch.randn(n, generator=gen) * scales).to(torch.int32), scales


def add_kodak_stream_args(ap: argparse.ArgumentParser, repeat: int) -> None:
    """The options of the benchmarks that decode default-model streams of Kodak images: --kodak,
    --images, --quality, --repeat (default ``repeat``)."""
    ap.add_argument("--kodak", default="/work/shared/data/kodak")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--quality", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=repeat)


def kodak_streams(args: argparse.Namespace) -> tuple[Any, list[bytes]]:
    """(the bundled default codec, its streams of the first ``args.images`` Kodak PNGs at
    ``args.quality``); SystemExit when the folder holds no PNG."""
    import cod_fast

    files = sorted(Path(args.kodak).glob("*.png"))[: args.images]
    if not files:
        raise SystemExit(f"no PNG images under {args.kodak}")
    codec = cod_fast.load_model()
    return codec, [codec.encode(f, quality=args.quality) for f in files]


#: How to get the default model's release-2 files, which cod_fast 0.2.0 no longer ships.
RELEASE2_HELP = ("folder of the default model's release-2 files (default.json, default.safetensors, "
                 "default_int.safetensors: cod_fast 0.1.0's cod_fast/weights, e.g. `mkdir r2 && git archive "
                 "9877f23 cod_fast/weights | tar -x -C r2 --strip-components=2`)")


def release2_codecs(weights_dir: Path) -> tuple[Any, Any]:
    """(release 1, release 2) ``DefaultCodec``s of a release-2 weights folder: the same float
    weights; release 1 codes y with the float32 hyper synthesis' table indexes and means, release 2
    with its fixed-point integers. Both registered (``cod_fast.decode`` finds them)."""
    from safetensors.torch import load_file

    from cod_fast import registry
    from cod_fast.codecs.default import DefaultCodec, default_fingerprint, load_default_codec_from
    from cod_fast.models.default import default_model_info

    r2 = load_default_codec_from(weights_dir)
    if r2.release != 2:
        raise SystemExit(f"{weights_dir}: release {r2.release}, not release 2 ({RELEASE2_HELP})")
    stored = load_file(str(Path(weights_dir) / "default.safetensors"))
    r1 = DefaultCodec(r2.net, default_fingerprint(default_model_info(Path(weights_dir))["config"], stored))
    r1._lock = r2._lock  # they share the model
    registry.register(r1)
    return r1, r2
