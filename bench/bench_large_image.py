"""Peak memory and time of the default model on a large image (issue 17 item 2), CPU.

Builds a 3072x2048 (6.3 MP) image by bicubic upscaling of a Kodak image, then runs encode and
decode each in a fresh subprocess (``/usr/bin/time``-style peak RSS from ``getrusage``, which
counts the ~0.7 GB of ``import torch`` too) and prints one line per phase. ``--compare STREAM``
also checks the stream bytes against a stream written earlier (e.g. by the previous code), and
``--compare-pixels PT`` the decoded pixels against a saved uint8 tensor (``torch.save``).

    PYTHONPATH=. python bench/bench_large_image.py [--kodak /work/shared/data/kodak/kodim01.png]
        [--size 3072x2048] [--threads 2] [--quality 3] [--workdir /tmp/bench_large]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

_PHASE = r"""
import json, resource, sys, time
import cod_fast
import torch
torch.set_num_threads(int(sys.argv[4]))
from cod_fast.codecs.default import load_default_codec
phase, img, stream, _, quality = sys.argv[1:6]
codec = load_default_codec()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t = time.perf_counter()
if phase == "encode":
    data = codec.encode(img, quality=float(quality))
    open(stream, "wb").write(data)
    extra = {"bytes": len(data)}
else:
    out = codec.decode(open(stream, "rb").read())
    torch.save(out, img)
    extra = {"shape": list(out.shape)}
dt = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"phase": phase, "cod_fast": cod_fast.__file__, "seconds": round(dt, 2), "peak_rss_mb": round(peak / 2**20),
                  "rss_before_mb": round(base / 2**20), **extra}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kodak", default="/work/shared/data/kodak/kodim01.png")
    ap.add_argument("--size", default="3072x2048")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quality", type=float, default=3.0)
    ap.add_argument("--workdir", default="/tmp/bench_large")
    ap.add_argument("--peer", default=None,
                    help="also run a peer source tree (e.g. /work/main, the previous code) in the same run, first")
    ap.add_argument("--compare", default=None, help="stream to compare the new stream's bytes with")
    ap.add_argument("--compare-pixels", default=None, help="torch.save'd uint8 pixels to compare the decode with")
    args = ap.parse_args()
    from PIL import Image  # local: import time

    w, h = (int(v) for v in args.size.split("x"))
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    png = work / f"large_{w}x{h}.png"
    if not png.exists():
        Image.open(args.kodak).convert("RGB").resize((w, h), Image.BICUBIC).save(png)
    stream, pixels = work / "large.codf", work / "large_dec.pt"
    print(f"image {png} ({w}x{h}, {w * h / 1e6:.1f} MP), threads {args.threads}, load {os.getloadavg()[0]:.1f}")
    trees = [("this tree", Path(__file__).resolve().parents[1], stream, pixels)]
    if args.peer:
        trees.insert(0, ("peer " + args.peer, Path(args.peer), work / "peer.codf", work / "peer_dec.pt"))
    for name, tree, st, px in trees:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        for phase, target in (("encode", png), ("decode", px)):
            r = subprocess.run([sys.executable, "-c", _PHASE, phase, str(target), str(st), str(args.threads),
                                str(args.quality)], capture_output=True, text=True, env=env, check=False,
                               cwd=str(tree))  # `python -c` puts the cwd first on sys.path
            if r.returncode:
                sys.exit(f"{name} {phase} failed:\n{r.stderr[-3000:]}")
            row = json.loads(r.stdout.strip().splitlines()[-1])
            print(name, json.dumps(row), f"(load after: {os.getloadavg()[0]:.1f})")
    if args.peer:
        args.compare = args.compare or str(work / "peer.codf")
        args.compare_pixels = args.compare_pixels or str(work / "peer_dec.pt")
    if args.compare:
        print("stream bytes equal to", args.compare, ":", stream.read_bytes() == Path(args.compare).read_bytes())
    if args.compare_pixels:
        import torch  # local: import time

        a, b = torch.load(pixels), torch.load(args.compare_pixels)
        d = (a.int() - b.int()).abs()
        print("pixels equal to", args.compare_pixels, ":", bool(torch.equal(a, b)),
              f"(max |diff| {int(d.max())}, {int((d > 0).sum())} differing values)")


if __name__ == "__main__":
    main()
