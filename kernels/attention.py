"""Non-causal attention forward in the FlashAttention-2 manner (online softmax, no N x N matrix).

Two users in CoD:

* PixNerDiT ``RAttention``: [B, H, N, D] with D = 72 (1152 / 16 heads), SDPA semantics.
  Head dims up to 128 are held in registers as a power-of-two tile plus, when that saves lanes,
  a second power-of-two tail tile (72 = 64 + 16: 80 lanes, where padding to 128 would waste 44%
  of the q·k and p·v work); padded lanes load 0 and add nothing to q·k or to the output.
* The condition codec's ``AttnBlock``: one head whose dim is the channel count (512 ... 1152),
  read straight from the NCHW 1x1-conv outputs. Such a head does not fit in registers, so
  q·k is accumulated over D in chunks of 64 (a loop) and each program owns one 64-wide slice of the output
  channels (grid axis 2); q·k is recomputed per slice, which costs FLOPs but no extra memory.

The accumulator and the softmax statistics are fp32; p is cast to v's dtype for the p·v product
(fp32 inputs keep full IEEE fp32 dots, no TF32).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import check_same_device, check_tensor, dot_precision, next_pow2

__all__ = [
    "attention",
    "attention_reference",
    "spatial_attention",
    "spatial_attention_reference",
]

_LOG2E = 1.4426950408889634
#: Largest head dim handled as a single padded register tile.
MAX_SINGLE_TILE_DIM = 128
#: Chunk of D for q·k and the output slice per program when D > MAX_SINGLE_TILE_DIM.
CHUNK_DIM = 64
#: Upper bound on D accepted by the wrappers.
MAX_HEAD_DIM = 2048


@triton.jit
def _attention_fwd_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr,
    sq_b, sq_h, sq_n, sq_d,
    sk_b, sk_h, sk_n, sk_d,
    sv_b, sv_h, sv_n, sv_d,
    so_b, so_h, so_n, so_d,
    H, NQ, NK, D,
    qk_scale,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_DK: tl.constexpr, NUM_DK: tl.constexpr, BLOCK_DV: tl.constexpr, TAIL: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    pid_dv = tl.program_id(2)
    b = pid_bh // H
    h = pid_bh % H
    q_base = q_ptr + b * sq_b + h * sq_h
    k_base = k_ptr + b * sk_b + h * sk_h
    v_base = v_ptr + b * sv_b + h * sv_h

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_dv = pid_dv * BLOCK_DV + tl.arange(0, BLOCK_DV)
    m_ok = offs_m < NQ
    dv_ok = offs_dv < D

    if NUM_DK == 1:
        # Whole (padded) head in registers, loaded once: columns [0, BLOCK_DK) and, when
        # TAIL > 0, the tail columns [BLOCK_DK, BLOCK_DK + TAIL) as a second tile.
        offs_d = tl.arange(0, BLOCK_DK)
        q = tl.load(q_base + offs_m[:, None] * sq_n + offs_d[None, :] * sq_d,
                    mask=m_ok[:, None] & (offs_d < D)[None, :], other=0.0)
        if TAIL > 0:
            offs_t = BLOCK_DK + tl.arange(0, TAIL)
            q_t = tl.load(q_base + offs_m[:, None] * sq_n + offs_t[None, :] * sq_d,
                          mask=m_ok[:, None] & (offs_t < D)[None, :], other=0.0)
            acc_t = tl.zeros((BLOCK_M, TAIL), tl.float32)

    # Running row max (log2 domain), row sum and output accumulator.
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_DV), tl.float32)

    for start_n in range(0, NK, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_ok = offs_n < NK
        if NUM_DK == 1:
            kt = tl.load(k_base + offs_n[None, :] * sk_n + offs_d[:, None] * sk_d,
                         mask=n_ok[None, :] & (offs_d < D)[:, None], other=0.0)
            s = tl.dot(q, kt, input_precision=DOT_PRECISION)
            if TAIL > 0:
                kt_t = tl.load(k_base + offs_n[None, :] * sk_n + offs_t[:, None] * sk_d,
                               mask=n_ok[None, :] & (offs_t < D)[:, None], other=0.0)
                s = tl.dot(q_t, kt_t, s, input_precision=DOT_PRECISION)
        else:
            s = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
            # A dynamic loop: one chunk's tiles live at a time (unrolling keeps all NUM_DK
            # chunks in shared memory at once, over the limit in fp32).
            for c in range(0, NUM_DK):
                offs_d = c * BLOCK_DK + tl.arange(0, BLOCK_DK)
                d_ok = offs_d < D
                qc = tl.load(q_base + offs_m[:, None] * sq_n + offs_d[None, :] * sq_d,
                             mask=m_ok[:, None] & d_ok[None, :], other=0.0)
                kc = tl.load(k_base + offs_n[None, :] * sk_n + offs_d[:, None] * sk_d,
                             mask=n_ok[None, :] & d_ok[:, None], other=0.0)
                s = tl.dot(qc, kc, s, input_precision=DOT_PRECISION)
        # Keys past NK get -inf; every block holds at least one real key (start_n < NK),
        # so the row max stays finite and alpha = exp2(-inf) = 0 on the first block.
        s = tl.where(n_ok[None, :], s * qk_scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_base + offs_n[:, None] * sv_n + offs_dv[None, :] * sv_d,
                    mask=n_ok[:, None] & dv_ok[None, :], other=0.0)
        acc = acc * alpha[:, None]
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PRECISION)
        if NUM_DK == 1:
            if TAIL > 0:
                v_t = tl.load(v_base + offs_n[:, None] * sv_n + offs_t[None, :] * sv_d,
                              mask=n_ok[:, None] & (offs_t < D)[None, :], other=0.0)
                acc_t = acc_t * alpha[:, None]
                acc_t = tl.dot(p.to(v_t.dtype), v_t, acc_t, input_precision=DOT_PRECISION)
        m_i = m_new

    acc = acc / l_i[:, None]
    o = o_ptr + b * so_b + h * so_h + offs_m[:, None] * so_n + offs_dv[None, :] * so_d
    tl.store(o, acc.to(o_ptr.dtype.element_ty), mask=m_ok[:, None] & dv_ok[None, :])
    if NUM_DK == 1:
        if TAIL > 0:
            acc_t = acc_t / l_i[:, None]
            o_t = o_ptr + b * so_b + h * so_h + offs_m[:, None] * so_n + offs_t[None, :] * so_d
            tl.store(o_t, acc_t.to(o_ptr.dtype.element_ty), mask=m_ok[:, None] & (offs_t < D)[None, :])


def head_split(d: int) -> tuple[int, int]:
    """Register tiles (main, tail) covering a head dim d <= 128 with the least padding.

    Both are powers of two >= 16 (tl.dot's minimum) or tail = 0: 64 -> (64, 0), 72 -> (64, 16)
    (80 lanes instead of 128), 96 -> (64, 32), 8 -> (16, 0).
    """
    padded = max(16, next_pow2(d))
    main = 1 << (d.bit_length() - 1)  # largest power of two <= d
    if main < 16 or main == d:
        return padded, 0
    tail = max(16, next_pow2(d - main))
    return (main, tail) if main + tail < padded else (padded, 0)


def _launch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor, sm_scale: float) -> None:
    """q [B,H,NQ,D], k/v [B,H,NK,D], o [B,H,NQ,D]: any strides (views are fine)."""
    B, H, NQ, D = q.shape
    NK = k.shape[2]
    if B * H * NQ == 0:
        return
    if D <= MAX_SINGLE_TILE_DIM:
        block_dk, tail = head_split(D)
        num_dk, block_dv = 1, block_dk
        block_n = 64 if block_dk + tail <= 64 else 32
    else:
        block_dk, block_dv, block_n, tail = CHUNK_DIM, CHUNK_DIM, 32, 0
        num_dk = triton.cdiv(D, CHUNK_DIM)
    block_m = 64 if NQ > 32 else max(16, next_pow2(NQ))
    grid = (triton.cdiv(NQ, block_m), B * H, triton.cdiv(D, block_dv))
    _attention_fwd_kernel[grid](
        q, k, v, o,
        *q.stride(), *k.stride(), *v.stride(), *o.stride(),
        H, NQ, NK, D,
        float(sm_scale) * _LOG2E,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_DK=block_dk, NUM_DK=num_dk, BLOCK_DV=block_dv,
        TAIL=tail, DOT_PRECISION=dot_precision(q.dtype),
        num_warps=4 if block_dv + tail <= 64 else 8,
    )


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sm_scale: float | None = None
) -> torch.Tensor:
    """softmax(q kᵀ · sm_scale) v, non-causal, no mask (Triton; SDPA semantics).

    q: [B, H, NQ, D]; k, v: [B, H, NK, D]; one dtype (fp16/bf16/fp32), any strides.
    sm_scale defaults to D**-0.5. Returns [B, H, NQ, D] in q's dtype, stored token-major
    (a ``transpose(1, 2)`` view of a contiguous [B, NQ, H, D] buffer, so the caller's
    ``.transpose(1, 2).reshape(B, NQ, H*D)`` is free).
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, t, 4)
    check_same_device(q=q, k=k, v=v)
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    B, H, NQ, D = q.shape
    if k.shape != v.shape or k.shape[0] != B or k.shape[1] != H or k.shape[3] != D:
        raise ValueError(f"shapes q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} "
                         "are not [B,H,NQ,D], [B,H,NK,D], [B,H,NK,D]")
    if not 1 <= D <= MAX_HEAD_DIM:
        raise ValueError(f"head dim {D} outside 1..{MAX_HEAD_DIM}")
    if k.shape[2] == 0:
        raise ValueError("attention over zero keys is undefined")
    scale = D ** -0.5 if sm_scale is None else float(sm_scale)
    o = torch.empty((B, NQ, H, D), dtype=q.dtype, device=q.device).transpose(1, 2)
    _launch(q, k, v, o, scale)
    return o


def attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sm_scale: float | None = None
) -> torch.Tensor:
    """Plain torch softmax(q kᵀ · sm_scale) v over [B, H, N, D] (fp32 maths, fp64 if given fp64)."""
    work = torch.float64 if q.dtype == torch.float64 else torch.float32
    scale = q.shape[-1] ** -0.5 if sm_scale is None else float(sm_scale)
    s = torch.matmul(q.to(work), k.to(work).transpose(-1, -2)) * scale
    return torch.matmul(torch.softmax(s, dim=-1), v.to(work)).to(q.dtype)


def spatial_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The condition codec's single-head spatial attention on NCHW maps (Triton).

    q, k, v: [b, c, h, w] (outputs of the 1x1 q/k/v convs, one dtype). Returns [b, c, h, w]:
    out[b, :, i] = sum_j softmax_j(q[b, :, i]·k[b, :, j] / sqrt(c)) v[b, :, j], as ``AttnBlock``
    computes before ``proj_out``. No transposes are materialised: the kernel reads the
    channel-major maps through strides.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, t, 4)
    check_same_device(q=q, k=k, v=v)
    if not (q.shape == k.shape == v.shape):
        raise ValueError(f"q, k, v shapes differ: {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    b, c, h, w = q.shape
    if not 1 <= c <= MAX_HEAD_DIM:
        raise ValueError(f"channel count {c} outside 1..{MAX_HEAD_DIM}")
    if h * w == 0:
        raise ValueError("spatial attention over an empty map is undefined")
    out = torch.empty((b, c, h, w), dtype=q.dtype, device=q.device)

    def as_bhnd(t: torch.Tensor) -> torch.Tensor:
        # [b, c, h, w] -> [b, 1, h*w, c] view (token stride 1 for contiguous NCHW input).
        return t.reshape(b, c, h * w).transpose(1, 2).unsqueeze(1)

    _launch(as_bhnd(q), as_bhnd(k), as_bhnd(v), as_bhnd(out), c ** -0.5)
    return out


def spatial_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Plain torch, ``AttnBlock``'s maths (bmm, softmax over keys, bmm); [b, c, h, w] in and out."""
    work = torch.float64 if q.dtype == torch.float64 else torch.float32
    b, c, h, w = q.shape
    qf = q.reshape(b, c, h * w).to(work).permute(0, 2, 1)
    kf = k.reshape(b, c, h * w).to(work)
    wgt = torch.softmax(torch.bmm(qf, kf) * (int(c) ** (-0.5)), dim=2)
    out = torch.bmm(v.reshape(b, c, h * w).to(work), wgt.permute(0, 2, 1))
    return out.reshape(b, c, h, w).to(q.dtype)

