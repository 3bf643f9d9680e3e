"""Compile every kernel for sm_80, sm_86, sm_89 and sm_90 without a GPU (``python -m cod_fast.kernels --compile-check``).

``triton.compile(ASTSource(fn, signature, constexprs), target=GPUTarget("cuda", arch, 32))``
runs the whole NVIDIA pipeline (TTIR -> TTGIR -> LLVM -> PTX -> ptxas -> cubin) on the CPU, so it
rejects what a GPU build would reject (e.g. a tl.dot smaller than 16). The interpreter never
compiles, so this is the only GPU-side check a GPU-less CI gets.

Each entry of ``configs()`` is one representative specialisation of one kernel: every dtype,
head dims 64/72 and the chunked 512 channel head, every mask type, every constexpr flag that
changes the code. Jobs run in a process pool (2 workers by default) with a fresh Triton cache so
that every run really compiles.
"""

from __future__ import annotations

import argparse
import importlib
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from . import _SPECS, KERNELS

#: Datacenter Ampere (A100) and Hopper (H100/H200), and the consumer parts users also decode on:
#: Ampere GA10x (RTX 30xx, A10, sm_86) and Ada (RTX 40xx, L4, sm_89). No kernel uses a Hopper-only
#: instruction without a fallback; this check is what proves it without those GPUs.
ARCHS = (80, 86, 89, 90)
#: Largest dynamic shared memory per block (opt-in): A100 163 KiB, H100 227 KiB, GA10x/Ada 99 KiB.
SHARED_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: 232448}
_PTR = {"fp16": "*fp16", "bf16": "*bf16", "fp32": "*fp32"}
_DOT = {"fp16": "tf32", "bf16": "tf32", "fp32": "ieee"}


@dataclass(frozen=True)
class Config:
    """One kernel specialisation: where the jit function lives, its signature and constexprs."""

    kernel: str                 # registry-style family name, for the report
    label: str                  # human-readable specialisation
    module: str                 # module under cod_fast.kernels
    fn: str                     # @triton.jit function name in that module
    signature: dict[str, str]   # every argument -> "*fp16" / "i32" / "fp32" / "constexpr"
    constexprs: dict[str, object] = field(default_factory=dict)
    num_warps: int = 4


def _sig(ptrs: dict[str, str], ints: list[str], floats: list[str], consts: dict[str, object],
         order: list[str]) -> tuple[dict[str, str], dict[str, object]]:
    """Signature in the jit function's argument order from typed groups of names."""
    types: dict[str, str] = dict(ptrs)
    types.update({n: "i32" for n in ints})
    types.update({n: "fp32" for n in floats})
    types.update({n: "constexpr" for n in consts})
    missing = [n for n in order if n not in types]
    if missing:
        raise KeyError(f"no type for arguments {missing}")
    return {n: types[n] for n in order}, dict(consts)


def _arg_names(module: str, fn: str) -> list[str]:
    return list(getattr(importlib.import_module(f"cod_fast.kernels.{module}"), fn).arg_names)


def configs() -> list[Config]:
    """Every (kernel, specialisation) compiled by the check."""
    out: list[Config] = []

    def add(kernel, label, module, fn, ptrs, ints, floats, consts, num_warps=4):
        sig, ce = _sig(ptrs, ints, floats, consts, _arg_names(module, fn))
        out.append(Config(kernel, label, module, fn, sig, ce, num_warps))

    for dt in ("fp16", "bf16", "fp32"):
        p = _PTR[dt]
        # --- rms_norm_modulate: PixNerDiT hidden 1152 (modulate, fused residual) and Nerf 64.
        rms_ptrs = {n: p for n in ("x_ptr", "res_ptr", "gate_ptr", "shift_ptr", "scale_ptr",
                                   "out_ptr", "xout_ptr")}
        rms_ptrs["w_ptr"] = "*fp32"
        rms_ints = ["M", "C", "T", "stride_x", "stride_res", "stride_out", "stride_xout",
                    "stride_gb", "stride_gt", "stride_sb", "stride_st", "stride_cb", "stride_ct"]
        for label, mod, res, gate, bm, bc in (("C1152,mod", True, False, False, 2, 2048),
                                              ("C1152,res+gate+mod", True, True, True, 2, 2048),
                                              ("C64,res(nerf)", False, True, False, 64, 64)):
            add("rms_norm_modulate", f"{dt},{label}", "rms_norm_modulate", "_rms_norm_modulate_kernel",
                rms_ptrs, rms_ints, ["eps"],
                {"HAS_MOD": mod, "HAS_RES": res, "HAS_GATE": gate, "BLOCK_M": bm, "BLOCK_C": bc},
                num_warps=4 if bm * bc < 4096 else 8)
        # --- qk_norm_rope: head dim 72 (padded 128) and 64.
        for d, bd in ((72, 128), (64, 64)):
            add("qk_norm_rope", f"{dt},D{d}", "qk_norm_rope", "_qk_norm_rope_kernel",
                {"qkv_ptr": p, "qw_ptr": "*fp32", "kw_ptr": "*fp32", "freqs_ptr": "*fp32",
                 "q_out_ptr": p, "k_out_ptr": p},
                ["R", "N", "H", "D", "s_b", "s_n", "s_three", "s_h", "so_b", "so_h", "so_n", "s_fn"],
                ["eps"], {"BLOCK_R": 2048 // bd, "BLOCK_D": bd}, num_warps=4)
        # --- attention: D 72 (padded 128), D 64, condition codec D 512 in 64-chunks.
        att_ints = [f"s{t}_{a}" for t in "qkvo" for a in "bhnd"] + ["H", "NQ", "NK", "D"]
        for label, bdk, ndk, bdv, tail, bn, nw in (("D72=64+16", 64, 1, 64, 16, 32, 8),
                                                   ("D64", 64, 1, 64, 0, 64, 4),
                                                   ("D512(chunked)", 64, 8, 64, 0, 32, 4)):
            add("attention", f"{dt},{label}", "attention", "_attention_fwd_kernel",
                {"q_ptr": p, "k_ptr": p, "v_ptr": p, "o_ptr": p}, att_ints, ["qk_scale"],
                {"BLOCK_M": 64, "BLOCK_N": bn, "BLOCK_DK": bdk, "NUM_DK": ndk, "BLOCK_DV": bdv,
                 "TAIL": tail, "DOT_PRECISION": _DOT[dt]}, num_warps=nw)
        # --- swiglu
        add("swiglu", dt, "swiglu", "_swiglu_kernel", {"a_ptr": p, "b_ptr": p, "out_ptr": p},
            ["M", "F", "stride_a", "stride_b", "stride_out"], [], {"BLOCK_M": 4, "BLOCK_F": 1024})
        # --- group_norm: both layouts, stats and apply (affine + SiLU).
        for cl in (False, True):
            lay = "NHWC" if cl else "NCHW"
            add("group_norm", f"{dt},{lay},stats", "group_norm", "_gn_stats_kernel",
                {"x_ptr": p, "part_ptr": "*fp32"}, ["G", "Cg", "HW", "E", "slice_len", "s_n", "s_c", "s_p"],
                [], {"SPLIT": 16, "CHANNELS_LAST": cl, "BLOCK": 1024})
            add("group_norm", f"{dt},{lay},apply+silu", "group_norm", "_gn_apply_kernel",
                {"x_ptr": p, "part_ptr": "*fp32", "w_ptr": "*fp32", "b_ptr": "*fp32", "out_ptr": p},
                ["G", "Cg", "HW", "E", "slice_len", "s_n", "s_c", "s_p"], ["eps"],
                {"SPLIT": 16, "CHANNELS_LAST": cl, "HAS_AFFINE": True, "APPLY_SILU": True, "BLOCK": 1024})
        # --- layer_norm2d_modulate: plain modulate and fused gated residual.
        for label, res in (("mod", False), ("res+gate+mod", True)):
            add("layer_norm2d_modulate", f"{dt},{label}", "layer_norm2d_modulate", "_ln2d_modulate_kernel",
                {n: p for n in ("x_ptr", "res_ptr", "gate_ptr", "shift_ptr", "scale_ptr", "out_ptr", "xout_ptr")},
                ["C", "HW"], ["eps"],
                {"HAS_MOD": True, "HAS_RES": res, "BLOCK_C": 64, "BLOCK_P": 64})

    # --- masked_conv: every mask type in fp16, raster A in fp32 and bf16 (5x5, 192 -> 384 ch).
    from .masked_conv import _tap_bits, conv_mask  # local: optional dependency (Triton)

    conv_ints = ["CI", "CO", "H", "W", "sx_n", "sx_c", "sx_h", "sx_w", "sw_o", "sw_i", "sw_h", "sw_w"]
    jobs = [("fp16", m) for m in ("A", "B", "checkerboard_A", "checkerboard_B")] + [("fp32", "A"), ("bf16", "A")]
    for dt, mask in jobs:
        p = _PTR[dt]
        add("masked_conv2d", f"{dt},{mask},5x5", "masked_conv", "_masked_conv2d_kernel",
            {"x_ptr": p, "w_ptr": p, "b_ptr": p, "out_ptr": p}, conv_ints, [],
            {"HAS_BIAS": True, "TAPS": _tap_bits(conv_mask(mask, 5, 5)), "KH": 5, "KW": 5,
             "BLOCK_CO": 64, "BLOCK_CI": 32, "BLOCK_P": 64, "DOT_PRECISION": _DOT[dt]})

    # --- int_entropy_params: SODEC fixed-point layer (3x3, with and without upsampling), index.
    for k, up in ((3, 1), (3, 2)):
        add("int_conv_requant", f"int,{k}x{k},up{up}", "int_entropy_params", "_int_conv_requant_kernel",
            {"x_ptr": "*i32", "w_ptr": "*i32", "b_ptr": "*i64", "m_ptr": "*i64", "s_ptr": "*i64",
             "out_ptr": "*i32"}, ["CI", "CO", "H", "W", "HI", "WI", "LO", "HI_CLAMP"], [],
            {"K": k, "UP": up, "BLOCK_CO": 32, "BLOCK_P": 128})
    add("int_scale_index", "int", "int_entropy_params", "_scale_index_kernel",
        {"s_ptr": "*i32", "t_ptr": "*i64", "out_ptr": "*i32"}, ["NUMEL", "NT"], [], {"BLOCK": 1024})
    return out


def compile_for(fn, signature: dict[str, str], constexprs: dict[str, object], arch: int,
                num_warps: int = 4) -> str:
    """Compile one jit function for ``sm_<arch>`` on the CPU; returns a short detail string.

    Raises whatever Triton raises when the GPU pipeline rejects the kernel.
    """
    import triton  # local: optional dependency (Triton)
    from triton.backends.compiler import GPUTarget  # local: optional dependency (Triton)

    src = triton.compiler.ASTSource(fn, signature, constexprs)
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})
    if not compiled.asm.get("cubin"):
        raise RuntimeError("no cubin produced")
    shared = compiled.metadata.shared
    # ptxas accepts any static size; the launch would fail with OutOfResources past the opt-in limit.
    if shared > SHARED_LIMIT[arch]:
        raise RuntimeError(f"needs {shared} B shared memory, sm_{arch} allows {SHARED_LIMIT[arch]} B")
    return f"shared={shared}B"


def _compile_one(job: tuple[int, int]) -> tuple[int, int, bool, float, str]:
    """Compile configs()[index] for one arch; returns (index, arch, ok, seconds, detail)."""
    index, arch = job
    cfg = configs()[index]
    fn = getattr(importlib.import_module(f"cod_fast.kernels.{cfg.module}"), cfg.fn)
    t0 = time.perf_counter()
    try:
        ok, detail = True, compile_for(fn, cfg.signature, cfg.constexprs, arch, cfg.num_warps)
    except Exception as exc:  # report every failure, keep compiling the rest
        lines = str(exc).strip().splitlines()
        ok, detail = False, f"{type(exc).__name__}: {lines[-1] if lines else ''}"
    return index, arch, ok, time.perf_counter() - t0, detail


def run(only: list[str] | None = None, jobs: int = 2, archs: tuple[int, ...] = ARCHS) -> int:
    """Compile the selected kernels; print one line per (kernel, config, arch); 0 iff all compiled."""
    cfgs = configs()
    selected = [i for i, c in enumerate(cfgs) if not only or c.kernel in only]
    if not selected:
        print(f"no kernel matches {only}; known: {sorted({c.kernel for c in cfgs})}", file=sys.stderr)
        return 2
    work = [(i, a) for i in selected for a in archs]
    t0 = time.perf_counter()
    failures = 0
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        for index, arch, ok, secs, detail in pool.map(_compile_one, work):
            c = cfgs[index]
            failures += not ok
            print(f"{'OK  ' if ok else 'FAIL'} {c.kernel:<22} {c.label:<26} sm_{arch}  {secs:6.2f}s  {detail}",
                  flush=True)
    # Workers are joined when the pool closes, so their CPU time (ptxas included) is counted here.
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"{len(work) - failures}/{len(work)} compiled in {time.perf_counter() - t0:.1f}s wall, "
          f"{usage.ru_utime + usage.ru_stime:.1f}s CPU "
          f"({len(selected)} configs x {len(archs)} archs, {jobs} workers)")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m cod_fast.kernels``."""
    parser = argparse.ArgumentParser(prog="python -m cod_fast.kernels")
    parser.add_argument("--compile-check", action="store_true",
                        help="compile every kernel for sm_80, sm_86, sm_89 and sm_90 (no GPU needed)")
    parser.add_argument("--only", action="append", metavar="KERNEL",
                        help="restrict to one kernel family (repeatable)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel compile processes (default 2)")
    parser.add_argument("--list", action="store_true", help="list the kernel registry")
    args = parser.parse_args(argv)
    if args.list:
        for name in KERNELS:
            print(f"{name:<38} {_SPECS[name][3]}")
        return 0
    if not args.compile_check:
        parser.print_help()
        return 2
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        # The interpreter replaces @triton.jit functions at decoration time: re-exec without it.
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        argv_full = [sys.executable, "-m", "cod_fast.kernels", *(sys.argv[1:] if argv is None else argv)]
        os.execve(sys.executable, argv_full, env)
    with tempfile.TemporaryDirectory(prefix="cod_fast_triton_cache_") as cache:
        # A fresh cache: every run compiles for real (a cache hit would skip ptxas).
        os.environ["TRITON_CACHE_DIR"] = cache
        return run(args.only, args.jobs)
