// The requantising store of the SODEC fixed-point layer (csrc/sodec): int64 accumulators ->
// the spec's q = clamp(floor((acc + bias) * mult + 2^(shift-1)) / 2^shift), lo, hi), optionally
// mapped through the scale index, written as int32 or int16 to the output rows. Vectorised with
// AVX-512 (F, DQ, BW, VL: 64-bit multiply, arithmetic 64-bit shift, masked 16-bit stores) or AVX2
// (64-bit multiply and shift emulated exactly), with a scalar fallback; every variant gives the
// scalar code's integers (see requant_store.cpp for the exactness argument).
#pragma once

#include <cstdint>

#include "sodec/int_params.hpp"

namespace cod_fast::sodec {

// One output channel's requantisation (the spec's bounds hold: |bias| <= 2^40, 1 <= mult < 2^15,
// 1 <= shift <= 62, and |acc| < 2^43 - 2^40, so nothing below overflows int64).
struct Requant {
  int64_t bias, mult, shift, lo, hi;
};

// A run of consecutive panel positions on one output row: acc[j0 + t] for t < len goes to output
// element off + up * t of the channel (up = 1 or 2: the upsampling phases interleave on a row).
struct StoreRun {
  int j0, len;
  int64_t off;
};

// Most positions the runs of one store_block call may cover (one panel).
constexpr int kStoreMaxPositions = 64;

enum class StoreIsa { kScalar, kAvx2, kAvx512 };

// Whether this CPU runs the store variant (AVX-512: F, DQ, BW and VL; AVX2: AVX2).
bool store_isa_supported(StoreIsa isa);
// The store used with GEMM kernel `impl`: the portable kernel pairs with the scalar store, AVX2 with
// AVX2 and AVX-512 with AVX-512 (AVX2 if the CPU lacks a feature the AVX-512 store needs); kAuto:
// the best supported. Forcing a kernel therefore also tests its store.
StoreIsa store_isa_for(Impl impl);

// Requantises and stores output channels [o0, o1) of one panel: channel o's accumulators are
// acc[(o - o0) * acc_stride + j], its requantisation bias[o], mult[o], shift[o] (clamp [lo, hi]),
// and its values go through the runs to out's channel o (OutView in int_params.hpp). Channels
// o < index_channels hold index->index(value) instead (when index is not null). acc must stay
// readable up to 8 int64 past the last run's end of the last channel (callers allocate that
// slack). Different panels and channels may be stored concurrently by different threads, even
// interleaved on one row (up = 2): no output element outside the runs is read or written.
void store_block(StoreIsa isa, const int64_t* acc, int64_t acc_stride, int64_t o0, int64_t o1,
                 const StoreRun* runs, int n_runs, int64_t up, const int64_t* bias, const int64_t* mult,
                 const int64_t* shift, int64_t lo, int64_t hi, const ScaleIndexer* index,
                 int64_t index_channels, const OutView& out);

// store_block for the AMX kernel's three int32 planes: channel row r's accumulator at position j
// is c[r * stride + j] + 256 * c[plane + r * stride + j] + 65536 * c[2 * plane + r * stride + j],
// combined in int64 inside the store (exact). c must stay readable 8 int32 past the last plane's
// last row end.
void store_block_split3(StoreIsa isa, const int32_t* c, int64_t stride, int64_t plane, int64_t o0, int64_t o1,
                        const StoreRun* runs, int n_runs, int64_t up, const int64_t* bias, const int64_t* mult,
                        const int64_t* shift, int64_t lo, int64_t hi, const ScaleIndexer* index,
                        int64_t index_channels, const OutView& out);

}  // namespace cod_fast::sodec
