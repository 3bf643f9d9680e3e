// The SODEC fixed-point layer on Intel AMX-INT8 tiles (see amx_conv.hpp and int_params.hpp).
//
// AMX multiplies int8 tiles: C[16 x 16 int32] += A[16 x 64 int8] . B[64 x 16 int8] (TDPBSSD:
// signed x signed, TDPBSUD: signed x unsigned), 16 x 16 x 64 multiply-adds per instruction. The
// layer's operands are wider, so both are split into bytes, exactly:
//  * activations a in [-32767, 32767]: a = 256 * ah + al, al = a & 255 (unsigned), ah = a >> 8
//    (arithmetic, signed, in [-128, 127]);
//  * effective weights w (|w| <= 4 * 127 = 508: an up = 2 phase merges at most 2 taps per axis):
//    w = 256 * wh + wl, wl = ((w + 128) & 255) - 128 in [-128, 127], wh = (w - wl) / 256 in [-2, 2].
// Then sum w * a = C0 + 256 * C1 + 65536 * C2 with C0 = sum wl * al (TDPBSUD), C1 = sum wl * ah
// (TDPBSSD) + sum wh * al (TDPBSUD), C2 = sum wh * ah (TDPBSSD). Every int32 tile sum is exact:
// per tap |wl * al| <= 128 * 255 = 32640, |wl * ah| + |wh * al| <= 16384 + 510 = 16894 and
// |wh * ah| <= 256, so over a chunk of at most 65536 taps every partial sum stays below
// 65536 * 32640 = 2139095040 < 2^31 in magnitude, whatever the order. Longer reductions (the spec
// allows K <= 2^20) are cut into such chunks, each added to int64 accumulators; the int64 combine
// C0 + (C1 << 8) + (C2 << 16) is exact (|C| < 2^31), so the result is the spec's int64 sum, and
// the requantising store (requant_store.cpp) gives the other kernels' integers.
//
// Taps are ordered cell-major (t, i) so that with ci a multiple of 64 each 64-tap step belongs to
// one effective-kernel cell: a cell made of one original tap has |w| <= 127, wh = 0, and its hi
// tiles are skipped (an up = 1 layer never runs them). Work: tasks of (phase, column block of 16
// positions), or for small layers (fewer than 4 units per thread) (unit, block of row blocks) with
// the B operand of every unit packed once, up front. B is packed straight from the padded int16
// input: per 4 taps, 16 positions' int16 values interleaved into a 64-byte row of low and one of
// high bytes (vpermt2b). A task holds 7 tiles: C0, C1, C2, A lo, A hi, B lo, B hi.
#include "sodec/amx_conv.hpp"

#include <algorithm>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <vector>

#include "common/parallel.hpp"
#include "sodec/profile.hpp"
#include "sodec/requant_store.hpp"

#if defined(__x86_64__) && defined(__linux__) && \
    ((defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 11))
#define COD_FAST_AMX 1
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace cod_fast::sodec {

namespace {

constexpr int64_t kStepTaps = 64;         // taps per tile step (one int8 tile row)
constexpr int64_t kRows = 16;             // output channels per row block (tile rows)
constexpr int64_t kCols = 16;             // positions per column block (int32 tile columns)
constexpr int64_t kTileBytes = 1024;      // 16 rows x 64 bytes
constexpr int64_t kMaxChunkSteps = 1024;  // 65536 taps: the exact int32 bound above

// 64-byte aligned byte buffer (tile rows are whole cache lines).
struct AlignedBytes {
  std::vector<uint8_t> raw;
  uint8_t* data = nullptr;
  size_t size = 0;
  void resize(size_t n) {
    if (n <= size) return;
    raw.assign(n + 64, 0);
    data = raw.data() + ((64 - reinterpret_cast<uintptr_t>(raw.data()) % 64) % 64);
    size = n;
  }
};

// This thread's B scratch (one unit's packed operand), kept for the thread's life.
uint8_t* scratch_b(size_t n) {
  thread_local AlignedBytes buf;
  buf.resize(n);
  return buf.data;
}

}  // namespace

std::atomic<int64_t>& amx_chunk_steps() {
  static std::atomic<int64_t> steps{kMaxChunkSteps};
  return steps;
}

void amx_prepare_phase(Phase& ph, int64_t ci, int64_t co) {
  const int64_t kk = ph.ke_y * ph.ke_x, K = ci * kk;
  const int64_t ksteps = (K + kStepTaps - 1) / kStepTaps, rbs = (co + kRows - 1) / kRows;
  ph.amx_ksteps = ksteps;
  ph.amx_lo.assign(static_cast<size_t>(rbs * ksteps * kTileBytes));
  ph.amx_hi.assign(ph.amx_lo.size());
  ph.amx_hi_used.assign(static_cast<size_t>(rbs * ksteps), 0);
  for (int64_t o = 0; o < co; ++o) {
    const int32_t* row = ph.wpair.data() + o * ph.kpairs;
    const int64_t rb = o / kRows, r = o % kRows;
    for (int64_t k = 0; k < K; ++k) {  // k = i * kk + t, the pair layout's order
      const uint32_t pr = static_cast<uint32_t>(row[k / 2]);
      const int32_t w = static_cast<int16_t>(static_cast<uint16_t>(k % 2 == 0 ? pr & 0xffffu : pr >> 16));
      const int32_t lo = ((w + 128) & 255) - 128;
      const int32_t hi = (w - lo) / 256;  // exact: w - lo is a multiple of 256
      if (hi < -2 || hi > 2) throw std::logic_error("AMX: effective weight beyond 4 * 127");
      const int64_t kc = (k % kk) * ci + k / kk;  // cell-major (t, i)
      const int64_t ks = kc / kStepTaps;
      const size_t at = static_cast<size_t>(((rb * ksteps + ks) * kRows + r) * kStepTaps + kc % kStepTaps);
      ph.amx_lo.data()[at] = static_cast<int8_t>(lo);
      ph.amx_hi.data()[at] = static_cast<int8_t>(hi);
      if (hi != 0) ph.amx_hi_used[static_cast<size_t>(rb * ksteps + ks)] = 1;
    }
  }
}

#ifndef COD_FAST_AMX

bool amx_available() { return false; }

void conv_amx(const PreparedConv&, const int16_t*, int64_t, int64_t, const int64_t*, const int64_t*,
              const int64_t*, int64_t, int64_t, const OutView&, int, const ScaleIndexer*, int64_t) {
  throw std::invalid_argument("this build has no AMX kernel");
}

#else

bool amx_available() {
  static const bool ok = [] {
    if (!(__builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-int8") &&
          __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
          __builtin_cpu_supports("avx512vbmi"))) {
      return false;
    }
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return ok;
}

namespace {

#define COD_FAST_AMX_TARGET \
  __attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi")))

struct alignas(64) TileConfig {
  uint8_t palette_id = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// A column block's geometry: the runs of its positions along input rows.
struct Block {
  int64_t p0;  // first position (flattened Y * w + X)
  int cnt;     // valid positions (the rest of the 16 are zero)
  int n_runs;
  StoreRun runs[kCols];  // j0, len, and off = the input offset of (Y, X) relative to tap (0, 0)
};

Block block_runs(int64_t p0, int64_t hw, int64_t w, int64_t wp) {
  Block b{};
  b.p0 = p0;
  b.cnt = static_cast<int>(std::min<int64_t>(kCols, hw - p0));
  for (int j = 0; j < b.cnt;) {
    const int64_t p = p0 + j, Y = p / w, X = p % w;
    const int len = static_cast<int>(std::min<int64_t>(b.cnt - j, w - X));
    b.runs[b.n_runs++] = StoreRun{j, len, Y * wp + X};
    j += len;
  }
  return b;
}

// A phase's taps in cell-major order (t, i): tap kc reads the padded input at position (Y, X)'s
// offset Y * wp + X plus off[kc].
struct Layout {
  int64_t K;
  const int64_t* off;
};

std::vector<int64_t> tap_offsets(const Phase& ph, int64_t ci, int64_t pad, int64_t plane, int64_t wp) {
  std::vector<int64_t> off;
  off.reserve(static_cast<size_t>(ci * ph.ke_y * ph.ke_x));
  for (int64_t ey = 0; ey < ph.ke_y; ++ey)
    for (int64_t ex = 0; ex < ph.ke_x; ++ex)
      for (int64_t i = 0; i < ci; ++i) off.push_back(i * plane + (pad + ph.ey0 + ey) * wp + pad + ph.ex0 + ex);
  return off;
}

// The 16 positions' int16 values of tap kc (cell-major), zero beyond K or beyond cnt.
COD_FAST_AMX_TARGET inline __m256i tap_vector(const int16_t* xp, const Layout& L, const Block& b, int64_t kc) {
  if (kc >= L.K) return _mm256_setzero_si256();
  const int16_t* src = xp + L.off[kc];
  if (b.n_runs == 1 && b.cnt == kCols) return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + b.runs[0].off));
  __m256i v = _mm256_setzero_si256();
  const __m256i iota = _mm256_setr_epi16(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (int r = 0; r < b.n_runs; ++r) {
    const StoreRun& run = b.runs[r];
    const __mmask16 len_mask = static_cast<__mmask16>((1u << run.len) - 1);
    const __m256i part = _mm256_maskz_loadu_epi16(len_mask, src + run.off);
    // lane l of v takes part[l - j0] for l in [j0, j0 + len)
    const __m256i idx = _mm256_and_si256(_mm256_sub_epi16(iota, _mm256_set1_epi16(static_cast<int16_t>(run.j0))),
                                         _mm256_set1_epi16(15));
    v = _mm256_mask_permutexvar_epi16(v, static_cast<__mmask16>(len_mask << run.j0), idx, part);
  }
  return v;
}

// Packs k-quads [kq0, kq1) of a column block's B operand: rows of 16 positions x 4 taps, the low
// bytes (al, unsigned) to lo + kq * 64 and the high bytes (ah, signed) to hi + kq * 64.
COD_FAST_AMX_TARGET void pack_b(const int16_t* xp, const Layout& L, const Block& b, int64_t kq0, int64_t kq1,
                                uint8_t* lo, uint8_t* hi) {
  // Byte n * 4 + q of a row: tap q's position n; tap q sits at byte (q >= 2 ? 64 : 0) + (q & 1) * 32 + 2n
  // of the two 64-byte inputs (low byte; high byte + 1).
  alignas(64) uint8_t idx_lo[64], idx_hi[64];
  for (int n = 0; n < 16; ++n)
    for (int q = 0; q < 4; ++q) {
      idx_lo[n * 4 + q] = static_cast<uint8_t>((q >= 2 ? 64 : 0) + (q & 1) * 32 + 2 * n);
      idx_hi[n * 4 + q] = static_cast<uint8_t>(idx_lo[n * 4 + q] + 1);
    }
  const __m512i il = _mm512_load_si512(idx_lo), ih = _mm512_load_si512(idx_hi);
  for (int64_t kq = kq0; kq < kq1; ++kq) {
    const int64_t k = 4 * kq;
    const __m512i x = _mm512_inserti64x4(_mm512_castsi256_si512(tap_vector(xp, L, b, k)), tap_vector(xp, L, b, k + 1), 1);
    const __m512i y = _mm512_inserti64x4(_mm512_castsi256_si512(tap_vector(xp, L, b, k + 2)), tap_vector(xp, L, b, k + 3), 1);
    _mm512_store_si512(lo + kq * 64, _mm512_permutex2var_epi8(x, il, y));
    _mm512_store_si512(hi + kq * 64, _mm512_permutex2var_epi8(x, ih, y));
  }
}

struct Requants {
  const int64_t *bias, *mult, *shift;
  int64_t lo, hi;
  const ScaleIndexer* index;
  int64_t index_channels;
};

// Positions per panel: kPanelBlocks column blocks. The store then requantises 64 positions of a
// channel per call (16 cost more in per-channel overhead than in arithmetic).
constexpr int64_t kPanelBlocks = 4, kPanel = kPanelBlocks * kCols;
static_assert(kPanel <= kStoreMaxPositions, "a panel's store exceeds store_block's limit");

// Row blocks [rb0, rb1) of one panel (positions [p0, p0 + cnt)): for each row block the tiles of
// every column block (B of block cb at b + cb * 2 * plane_bytes: lo plane, then hi plane), the C
// tiles stored side by side as three int32 planes [16][64], and one requantising store of the
// row block's 16 channels x cnt positions (the int64 combine inside the store).
COD_FAST_AMX_TARGET void compute_panel(const Phase& ph, int64_t co, int64_t up, int64_t p0, int cnt, const uint8_t* b,
                                       int64_t plane_bytes, int64_t rb0, int64_t rb1, const Requants& rq,
                                       const OutView& out, int64_t w, int64_t chunk_steps) {
  TileConfig cfg;
  for (int t = 0; t < 7; ++t) {
    cfg.rows[t] = kRows;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);
  // Output runs of the panel's positions (phase (dy, dx) of the upsampled grid).
  StoreRun runs[kPanel];
  int n_runs = 0;
  for (int j = 0; j < cnt;) {
    const int64_t p = p0 + j, Y = p / w, X = p % w;
    const int len = static_cast<int>(std::min<int64_t>(cnt - j, w - X));
    runs[n_runs++] = StoreRun{j, len, (up * Y + ph.dy) * out.row_stride + up * X + ph.dx};
    j += len;
  }
  const int64_t n_cb = (cnt + kCols - 1) / kCols;
  constexpr int64_t kPlane = kRows * kPanel;  // int32 per C plane
  alignas(64) int32_t c[3 * kPlane + 8];     // + 8: the store reads whole vectors
  const int64_t ksteps = ph.amx_ksteps;
  const bool chunked = ksteps > chunk_steps;  // int64 sums of exact int32 chunks
  std::vector<int64_t> acc(chunked ? static_cast<size_t>(kPlane + 8) : 0);
  for (int64_t rb = rb0; rb < rb1; ++rb) {
    const int8_t* alo = ph.amx_lo.data() + rb * ksteps * kTileBytes;
    const int8_t* ahi = ph.amx_hi.data() + rb * ksteps * kTileBytes;
    const uint8_t* used = ph.amx_hi_used.data() + rb * ksteps;
    for (int64_t c0 = 0; c0 < ksteps; c0 += chunk_steps) {
      const int64_t c1 = std::min(ksteps, c0 + chunk_steps);
      for (int64_t cb = 0; cb < n_cb; ++cb) {
        const uint8_t* blo = b + cb * 2 * plane_bytes;
        const uint8_t* bhi = blo + plane_bytes;
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        for (int64_t ks = c0; ks < c1; ++ks) {
          _tile_loadd(3, alo + ks * kTileBytes, 64);
          _tile_loadd(5, blo + ks * kTileBytes, 64);
          _tile_loadd(6, bhi + ks * kTileBytes, 64);
          _tile_dpbsud(0, 3, 5);
          _tile_dpbssd(1, 3, 6);
          if (used[ks]) {
            _tile_loadd(4, ahi + ks * kTileBytes, 64);
            _tile_dpbsud(1, 4, 5);
            _tile_dpbssd(2, 4, 6);
          }
        }
        _tile_stored(0, c + cb * kCols, kPanel * 4);
        _tile_stored(1, c + kPlane + cb * kCols, kPanel * 4);
        _tile_stored(2, c + 2 * kPlane + cb * kCols, kPanel * 4);
      }
      if (chunked) {  // C0 + 256 C1 + 65536 C2 of this chunk, added in int64
        for (int64_t j = 0; j < kPlane; ++j) {
          const int64_t v = int64_t{c[j]} + int64_t{c[kPlane + j]} * 256 + int64_t{c[2 * kPlane + j]} * 65536;
          acc[static_cast<size_t>(j)] = c0 == 0 ? v : acc[static_cast<size_t>(j)] + v;
        }
      }
    }
    const int64_t o0 = rb * kRows, o1 = std::min(co, (rb + 1) * kRows);
    if (chunked) {
      store_block(StoreIsa::kAvx512, acc.data(), kPanel, o0, o1, runs, n_runs, up, rq.bias, rq.mult, rq.shift, rq.lo,
                  rq.hi, rq.index, rq.index_channels, out);
    } else {
      store_block_split3(StoreIsa::kAvx512, c, kPanel, kPlane, o0, o1, runs, n_runs, up, rq.bias, rq.mult, rq.shift,
                         rq.lo, rq.hi, rq.index, rq.index_channels, out);
    }
  }
  _tile_release();
}

}  // namespace

void conv_amx(const PreparedConv& prep, const int16_t* xp, int64_t h, int64_t w, const int64_t* bias,
              const int64_t* mult, const int64_t* shift, int64_t lo, int64_t hi, const OutView& out,
              int threads, const ScaleIndexer* index, int64_t index_channels) {
  if (!amx_available()) throw std::invalid_argument("this CPU or OS cannot run the AMX kernel");
  threads = resolve_threads(threads);
  const int64_t hw = h * w;
  if (hw <= 0) return;
  const int64_t pad = prep.k / 2, hp = h + 2 * pad, wp = w + 2 * pad;
  const std::vector<Phase>& phases = prep.phases;
  const int64_t n_phases = static_cast<int64_t>(phases.size()), n_panels = (hw + kPanel - 1) / kPanel;
  const int64_t units = n_phases * n_panels, rbs = (prep.co + kRows - 1) / kRows;
  for (const Phase& ph : phases) {
    if (ph.amx_ksteps == 0) throw std::logic_error("AMX weights were not prepared");
  }
  std::vector<std::vector<int64_t>> offsets;
  for (const Phase& ph : phases) offsets.push_back(tap_offsets(ph, prep.ci, pad, hp * wp, wp));
  auto layout = [&](int64_t ip) {
    return Layout{static_cast<int64_t>(offsets[static_cast<size_t>(ip)].size()), offsets[static_cast<size_t>(ip)].data()};
  };
  const Requants rq{bias, mult, shift, lo, hi, index, index == nullptr ? 0 : index_channels};
  const int64_t chunk_steps = std::clamp<int64_t>(amx_chunk_steps().load(), 1, kMaxChunkSteps);
  // Unit u: phase u / n_panels (phase-major: consecutive units share a phase's weights in L2),
  // panel u % n_panels; its valid positions and column blocks.
  auto panel_p0 = [&](int64_t u) { return (u % n_panels) * kPanel; };
  auto panel_cnt = [&](int64_t u) { return static_cast<int>(std::min<int64_t>(kPanel, hw - panel_p0(u))); };
  auto plane_bytes = [&](int64_t u) { return phases[static_cast<size_t>(u / n_panels)].amx_ksteps * kTileBytes; };
  auto pack = [&](int64_t u, uint8_t* dst, int64_t cb, int64_t kq0, int64_t kq1) {
    const int64_t pb = plane_bytes(u);
    const Block blk = block_runs(panel_p0(u) + cb * kCols, hw, w, wp);
    pack_b(xp, layout(u / n_panels), blk, kq0, kq1, dst + cb * 2 * pb, dst + cb * 2 * pb + pb);
  };
  auto n_cb = [&](int64_t u) { return (panel_cnt(u) + kCols - 1) / kCols; };
  // Row-block blocks when there are too few units to keep every thread busy (small layers).
  int64_t blocks = 1;
  const int64_t want = 4 * static_cast<int64_t>(threads);
  if (units < want) blocks = std::min(rbs, (want + units - 1) / units);
  const int64_t per_block = (rbs + blocks - 1) / blocks;
  blocks = (rbs + per_block - 1) / per_block;

  if (blocks == 1) {  // a task per unit: its B packed into this thread's scratch
    parallel_for(units, threads, [&](int64_t u) {
      const Phase& ph = phases[static_cast<size_t>(u / n_panels)];
      const int64_t pb = plane_bytes(u);
      uint8_t* b = scratch_b(static_cast<size_t>(n_cb(u) * 2 * pb));
      {
        SODEC_PROFILE(kPack);
        for (int64_t cb = 0; cb < n_cb(u); ++cb) pack(u, b, cb, 0, ph.amx_ksteps * 16);
      }
      SODEC_PROFILE(kGemm);
      compute_panel(ph, prep.co, prep.up, panel_p0(u), panel_cnt(u), b, pb, 0, rbs, rq, out, w, chunk_steps);
    });
    return;
  }
  // Small layer: every unit's B packed once (in parallel over column blocks and k-quad ranges),
  // then a task per (unit, block of row blocks).
  std::vector<int64_t> at(static_cast<size_t>(units + 1), 0);
  for (int64_t u = 0; u < units; ++u) at[static_cast<size_t>(u + 1)] = at[static_cast<size_t>(u)] + n_cb(u) * 2 * plane_bytes(u);
  AlignedBytes shared;
  shared.resize(static_cast<size_t>(at.back()));
  constexpr int64_t kPackSplit = 2;
  parallel_for(units * kPanelBlocks * kPackSplit, threads, [&](int64_t task) {
    const int64_t u = task / (kPanelBlocks * kPackSplit), cb = task / kPackSplit % kPanelBlocks, part = task % kPackSplit;
    if (cb >= n_cb(u)) return;
    const int64_t nq = phases[static_cast<size_t>(u / n_panels)].amx_ksteps * 16, per = (nq + kPackSplit - 1) / kPackSplit;
    const int64_t kq0 = std::min(nq, part * per), kq1 = std::min(nq, kq0 + per);
    if (kq0 >= kq1) return;
    SODEC_PROFILE(kPack);
    pack(u, shared.data + at[static_cast<size_t>(u)], cb, kq0, kq1);
  });
  parallel_for(units * blocks, threads, [&](int64_t task) {
    const int64_t u = task / blocks, blk = task % blocks;
    const int64_t rb0 = blk * per_block, rb1 = std::min(rbs, rb0 + per_block);
    SODEC_PROFILE(kGemm);
    compute_panel(phases[static_cast<size_t>(u / n_panels)], prep.co, prep.up, panel_p0(u), panel_cnt(u),
                  shared.data + at[static_cast<size_t>(u)], plane_bytes(u), rb0, rb1, rq, out, w, chunk_steps);
  });
}

#endif  // COD_FAST_AMX

}  // namespace cod_fast::sodec
