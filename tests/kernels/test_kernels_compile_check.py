"""The GPU compile check runs without a GPU: it compiles a real kernel and rejects a bad one."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


def _ptxas_available() -> bool:
    import triton

    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    return bundled.exists() or shutil.which("ptxas") is not None or "TRITON_PTXAS_PATH" in os.environ


pytestmark = pytest.mark.skipif(not _ptxas_available(), reason="ptxas (Triton's NVIDIA backend) missing")


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}


def test_compile_check_cli_compiles_swiglu():
    # TRITON_INTERPRET=1 on purpose: the CLI must re-exec itself without it.
    env = dict(_env(), TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-m", "cod_fast.kernels", "--compile-check", "--only", "swiglu"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("OK")]
    # 3 dtypes x 4 archs (datacenter sm_80/sm_90, consumer sm_86/sm_89), one line each.
    assert len(lines) == 12, proc.stdout
    assert all(any(f"sm_{arch}" in ln for ln in lines) for arch in (80, 86, 89, 90))


def test_compile_check_rejects_what_the_gpu_rejects(tmp_path):
    # An 8x8 tl.dot runs in the interpreter but the NVIDIA pipeline refuses it (needs >= 16).
    (tmp_path / "tiny_kernels.py").write_text(textwrap.dedent('''
        import triton
        import triton.language as tl

        @triton.jit
        def dot_kernel(a_ptr, out_ptr, N: tl.constexpr):
            r = tl.arange(0, N)
            a = tl.load(a_ptr + r[:, None] * N + r[None, :])
            tl.store(out_ptr + r[:, None] * N + r[None, :], tl.dot(a, a))
    '''))
    script = textwrap.dedent('''
        import sys
        from tiny_kernels import dot_kernel
        from cod_fast.kernels._compile_check import compile_for
        sig = {"a_ptr": "*fp16", "out_ptr": "*fp32", "N": "constexpr"}
        print("good", compile_for(dot_kernel, sig, {"N": 16}, 80))
        try:
            compile_for(dot_kernel, sig, {"N": 8}, 80)
        except Exception as exc:
            print("rejected", type(exc).__name__)
            sys.exit(0)
        sys.exit(3)
    ''')
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "good shared=" in proc.stdout and "rejected" in proc.stdout
