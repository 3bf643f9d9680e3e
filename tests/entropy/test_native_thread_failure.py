"""No native abort when worker threads cannot be created (issue 14, item 2 / reproducer 3).

In a subprocess whose address space is capped a little above what it already maps, asking the
native pools for 2000 threads makes thread creation fail part-way. Before the shared pool
(csrc/common/parallel.hpp) the unjoined threads ended the process in std::terminate (exit 134);
now every entry point (rANS, rcc, SODEC's integer conv) raises a Python exception, the pool is joined, and the next call with a
sane thread count works.
"""
import os
import subprocess
import sys
import textwrap

import pytest

from cod_fast import _ext

pytestmark = pytest.mark.skipif(_ext.cpu_ext() is None, reason="cod_fast._C is not built")

SCRIPT = textwrap.dedent(
    """
    import resource
    import numpy as np
    import torch
    from cod_fast._ext import require_cpu_ext
    from cod_fast.entropy import GaussianConditionalTables

    ext = require_cpu_ext()
    t = GaussianConditionalTables()
    n = 2000
    idx = t.build_indexes(torch.ones(n))
    zeros = torch.zeros(n, dtype=torch.int32)
    stream = t.encode(zeros, idx, threads=1, segment_symbols=1)
    ones32, ones64 = np.ones(n, np.int32), np.ones(n, np.int64)
    calls = [
        ("rans_encode", lambda: t.encode(zeros, idx, threads=n, segment_symbols=1)),
        ("rans_decode", lambda: t.decode(stream, idx, threads=n)),
        ("rcc_encode", lambda: ext.rcc.encode(np.zeros(n, np.float32), ones32, ones64, 1, 0, n, "auto")),
        ("rcc_decode", lambda: ext.rcc.decode(np.zeros(n, np.int64), n, ones32, ones64, 1, 0, n)),
        # 64 panels x 32 channel blocks = 2048 tasks for 2000 threads.
        ("sodec_conv", lambda: ext.sodec.conv_requant(
            np.zeros((1, 1, 64, 64), np.int32), np.ones((128, 1, 1, 1), np.int32),
            np.zeros(128, np.int64), np.ones(128, np.int64), np.ones(128, np.int64), 1, 0, 32767, n)),
    ]
    # Cap the address space at what is mapped now + 1 GiB: 2000 thread stacks cannot fit.
    vm = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
    limit = vm + (1 << 30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    for name, fn in calls:
        try:
            fn()
            print(name, "no-exception")
        except Exception as e:
            print(name, "raised", type(e).__name__, str(e).replace(chr(10), " "))
    # The pools were joined: normal calls still work and give the right answer.
    ok = torch.equal(t.decode(t.encode(zeros, idx, threads=2, segment_symbols=7), idx, threads=2), zeros)
    print("after", "ok" if ok else "wrong")
    """
)


def test_thread_creation_failure_raises_instead_of_aborting():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], check=False, capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    for name in ("rans_encode", "rans_decode", "rcc_encode", "rcc_decode", "sodec_conv"):
        assert lines[name].startswith("raised RuntimeError could not start worker thread"), lines
    assert lines["after"] == "ok"
