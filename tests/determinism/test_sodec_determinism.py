"""SODEC across execution conditions (issue 13 item 3): its entropy parameters come from the
integer spec, so the streams are byte-identical and the decoded integers identical at torch
threads 1, 2 and the core count, with every entropy backend (reference, C++, Triton in its CPU
interpreter here), and in a fresh process (the named model derives its integer state at load)."""
from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import det_codecs as D
import pytest

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("sodec-tiny", "sodec-tiny-checkerboard")


@pytest.fixture(scope="module")
def codecs():
    return {n: D.build(n) for n in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_threads_and_backends_write_and_read_identically(codecs, name: str) -> None:
    codec, img = codecs[name], D.image(40, 72, 1)  # 40x72: padded to the stride
    cases = list(itertools.product(D.THREADS, D.backends(name)))
    streams = {}
    for t, b in cases:
        with D.torch_threads(t):
            streams[(t, b)] = D.encode(name, codec, img, b)
    assert len(set(streams.values())) == 1, {k: D.digest(v) for k, v in streams.items()}
    data = streams[cases[0]]
    ints = {}
    for t, b in cases:
        with D.torch_threads(t):
            ints[(t, b)] = D.decoded_integers(name, codec, data, b)
    assert len(set(ints.values())) == 1, {k: D.digest(v) for k, v in ints.items()}


_FRESH = """
import sys, torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
import det_codecs as D
for name in {names!r}:
    c = D.build(name)
    print(name, c.fingerprint_hex)
    data = bytes.fromhex(open({path!r} + name).read())
    ints = D.decoded_integers(name, c, data, {backend!r})
    print(name, D.digest(ints))
"""


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_fresh_one_thread_process_loads_the_same_model_and_integers(codecs, tmp_path: Path, backend: str) -> None:
    """A new process at one torch thread (what a DataLoader worker or ``OMP_NUM_THREADS=1`` gets)
    derives the named models' integer state at load: same fingerprints, and (with the reference
    backend, or Triton's CPU interpreter) the same decoded integers as this process."""
    if backend == "triton":
        pytest.importorskip("triton")
    want = []
    for name in NAMES:
        data = D.encode(name, codecs[name], D.image(32, 32, 2))
        (tmp_path / name).write_text(data.hex())
        want += [f"{name} {codecs[name].fingerprint_hex}",
                 f"{name} {D.digest(D.decoded_integers(name, codecs[name], data))}"]
    code = _FRESH.format(tests=str(Path(__file__).parent), names=NAMES, path=str(tmp_path) + "/", backend=backend)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TRITON_INTERPRET": "1"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                       check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split("\n")[:-1] == want
