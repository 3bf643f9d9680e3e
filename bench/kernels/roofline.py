"""Paper roofline of each fused kernel against the unfused torch sequence it replaces.

For every kernel at a realistic CoD shape this counts the DRAM bytes each torch op of the official
sequence reads and writes (activations bf16/fp16 = 2 bytes, fp32 temporaries = 4 bytes, weights and
tables as stored) and the FLOPs, then the fused kernel's bytes and FLOPs, and prints the time each
would take at peak memory bandwidth / peak tensor throughput on an H100 SXM and an A100 SXM
(max of the two bounds; launch overheads not included, the launch count is printed instead).
Nothing here runs a kernel: it is the GPU gain stated on paper, to check later with
``triton.testing.do_bench``.

    .venv/bin/python bench/kernels/roofline.py
"""

from __future__ import annotations

from dataclasses import dataclass

# Peak figures: (bytes/s HBM, dense fp16/bf16 tensor FLOP/s).
GPUS = {"H100": (3.35e12, 989e12), "A100": (2.039e12, 312e12)}
A = 2   # bytes per activation element (bf16/fp16)
F32 = 4


@dataclass
class Op:
    """One kernel launch: bytes read, bytes written, FLOPs."""

    name: str
    read: float
    write: float
    flops: float = 0.0

    @property
    def bytes(self) -> float:
        return self.read + self.write


def _time_us(ops: list[Op], gpu: str) -> float:
    bw, peak = GPUS[gpu]
    # Each launch is bounded by its own bytes or FLOPs; a sequence is the sum of its launches.
    return sum(max(o.bytes / bw, o.flops / peak) for o in ops) * 1e6


def rms_official(E: float, C: int, rows: float) -> list[Op]:
    """Official RMSNorm (fp32 upcast, pow, mean, rsqrt, mul, downcast, weight mul -> fp32)."""
    return [
        Op("x.to(fp32)", A * E, F32 * E),
        Op("pow(2)", F32 * E, F32 * E, E),
        Op("mean(-1)", F32 * E, F32 * rows, E),
        Op("+eps, rsqrt", 2 * F32 * rows, 2 * F32 * rows, 2 * rows),
        Op("x * rstd", F32 * E + F32 * rows, F32 * E, E),
        Op(".to(dtype)", F32 * E, A * E),
        Op("weight * h (-> fp32)", A * E + F32 * C, F32 * E, E),
    ]


def modulate_official(E: float, C: int, elem: int) -> list[Op]:
    """x * (1 + scale) + shift with per-batch scale/shift ([B, 1, C])."""
    return [
        Op("1 + scale", A * C, A * C, C),
        Op("x * (1+scale)", elem * E + A * C, elem * E, E),
        Op("+ shift", elem * E + A * C, elem * E, E),
    ]


def cases() -> list[tuple[str, str, list[Op], list[Op]]]:
    """(kernel, shape, unfused ops, fused ops)."""
    out = []
    # PixNerDiT at 512x512: B=1, N=1024 tokens, hidden 1152, 16 heads x 72.
    B, N, C, H, D = 1, 1024, 1152, 16, 72
    E = B * N * C
    unf = rms_official(E, C, B * N) + modulate_official(E, C, F32)
    out.append(("rms_norm_modulate", "[1,1024,1152]", unf,
                [Op("fused", A * E + F32 * C + 2 * A * C, A * E, 6 * E)]))
    unf = [Op("gate * y", A * E + A * C, A * E, E), Op("x + ...", 2 * A * E, A * E, E)] + unf
    out.append(("gated_res+rms_norm_modulate", "[1,1024,1152]", unf,
                [Op("fused", 2 * A * E + 3 * A * C + F32 * C, 2 * A * E, 8 * E)]))

    Eh = B * N * H * D  # elements of q (or k)
    per = rms_official(Eh, D, B * N * H) + [
        Op("complex * freqs", F32 * Eh + 8 * N * D // 2, F32 * Eh, 3 * Eh),
        Op("stack(real, imag)", F32 * Eh, F32 * Eh),
        Op("type_as", F32 * Eh, A * Eh),
    ]
    unf = per + per + [Op("k.transpose.contiguous", A * Eh, A * Eh)]
    out.append(("qk_norm_rope", "qkv [1,1024,3,16,72]", unf,
                [Op("fused", 2 * A * Eh + 8 * N * D // 2 * 2 + 2 * F32 * D, 2 * A * Eh, 2 * 10 * Eh)]))

    flops = 4 * B * H * N * N * D
    sdpa = Op("SDPA (flash)", 3 * A * Eh, A * Eh, flops)
    unf = [Op("v.transpose.contiguous", A * Eh, A * Eh), sdpa,
           Op("out.transpose.reshape", A * Eh, A * Eh)]
    pad = 80 / 72  # head dim 72 held as 64 + 16 register tiles (head_split)
    out.append(("attention (D=72)", "[1,16,1024,72]", unf,
                [Op("fused (64+16 tiles)", 3 * A * Eh, A * Eh, flops * pad)]))

    # Condition codec AttnBlock at the 16x16 grid, 512 channels.
    c, n = 512, 256
    unf = [Op("bmm q^T k", 2 * A * c * n, A * n * n, 2 * n * n * c),
           Op("* c^-0.5", A * n * n, A * n * n, n * n),
           Op("softmax", A * n * n, A * n * n, 5 * n * n),
           Op("permute+bmm v w", A * c * n + A * n * n, A * c * n, 2 * n * n * c)]
    # q.k recomputed once per 64-channel output slice: 8 x the q.k FLOPs.
    out.append(("spatial_attention", "[1,512,16,16]", unf,
                [Op("fused (q.k x8 slices)", 3 * A * c * n, A * c * n,
                    8 * 2 * n * n * c + 2 * n * n * c)]))

    Ef = 1024 * 3072
    out.append(("swiglu", "[1024,3072]",
                [Op("silu(a)", A * Ef, A * Ef, 4 * Ef), Op("* b", 2 * A * Ef, A * Ef, Ef)],
                [Op("fused", 2 * A * Ef, A * Ef, 5 * Ef)]))

    # Condition codec encoder, first stage at 512x512 input (conv_in stride 2): 128 x 256 x 256.
    Eg = 128 * 256 * 256
    out.append(("group_norm+silu", "[1,128,256,256] G=32",
                [Op("F.group_norm (stats pass)", A * Eg, 0, 3 * Eg),
                 Op("F.group_norm (apply pass)", A * Eg, A * Eg, 4 * Eg),
                 Op("silu", A * Eg, A * Eg, 4 * Eg)],
                [Op("stats", A * Eg, 0, 3 * Eg), Op("apply+silu", A * Eg, A * Eg, 8 * Eg)]))

    # CoD-Lite at 720x480: 45 x 30 tokens, hidden 384.
    El = 384 * 30 * 45
    ln = [Op("permute.contiguous (in layer_norm)", A * El, A * El),
          Op("layer_norm", A * El, A * El, 5 * El)]
    unf = ln + [Op("* (1+scale) [strided]", A * El, A * El, El), Op("+ shift", A * El, A * El, El)]
    out.append(("layer_norm2d_modulate", "[1,384,30,45]", unf,
                [Op("fused", A * El, A * El, 7 * El)]))
    unf = [Op("gate * x", A * El, A * El, El), Op("inp + ...", 2 * A * El, A * El, El)] + unf
    out.append(("gated_res+layer_norm2d_mod", "[1,384,30,45]", unf,
                [Op("fused", 2 * A * El, 2 * A * El, 9 * El)]))

    # mbt2018 context model: 192 -> 384 channels, 5x5 type A, 32 x 48 latent (512 x 768 image).
    ci, co, hw = 192, 384, 32 * 48
    wbytes = co * ci * 25 * F32
    unf = [Op("weight.data * mask (every forward)", 2 * wbytes, wbytes, co * ci * 25),
           Op("conv2d 5x5", A * ci * hw + wbytes, A * co * hw, 2 * co * ci * 25 * hw)]
    out.append(("masked_conv2d (A, 5x5)", "192->384 @32x48", unf,
                [Op("fused (12 of 25 taps)", A * ci * hw + wbytes * 12 / 25, A * co * hw,
                    2 * co * ci * 12 * hw)]))
    return out


def main() -> None:
    hdr = (f"{'kernel':<28} {'shape':<22} {'launches':>8} {'MB unfused':>10} {'MB fused':>9} "
           f"{'GFLOP unf':>9} {'GFLOP fus':>9} {'H100 us unf':>11} {'H100 us fus':>11} "
           f"{'A100 us unf':>11} {'A100 us fus':>11} {'gain H100':>9}")
    print(hdr)
    print("-" * len(hdr))
    for name, shape, unf, fus in cases():
        mb_u, mb_f = sum(o.bytes for o in unf) / 1e6, sum(o.bytes for o in fus) / 1e6
        gf_u, gf_f = sum(o.flops for o in unf) / 1e9, sum(o.flops for o in fus) / 1e9
        hu, hf = _time_us(unf, "H100"), _time_us(fus, "H100")
        au, af = _time_us(unf, "A100"), _time_us(fus, "A100")
        print(f"{name:<28} {shape:<22} {len(unf):>4}->{len(fus):<3} {mb_u:>10.2f} {mb_f:>9.2f} "
              f"{gf_u:>9.3f} {gf_f:>9.3f} {hu:>11.2f} {hf:>11.2f} {au:>11.2f} {af:>11.2f} {hu / hf:>8.2f}x")


if __name__ == "__main__":
    main()
