// The requantising store (see requant_store.hpp).
//
// Exactness. The scalar code is the spec: v = acc + bias, p = v * mult, q = floor((p + h) / 2^s)
// with h = 2^(s-1), clamped to [lo, hi]. Under the bounds |v| < 2^43, 1 <= mult < 2^15, the
// product |p| < 2^58 and |p + h| < 2^63: every intermediate is an exact int64.
//  * AVX-512: vpmullq (DQ) gives the low 64 bits of the product, which is the product itself;
//    vpsraq (F) is the arithmetic shift, i.e. floor division by 2^s (s <= 62); vpmaxsq/vpminsq
//    clamp in int64; vpmovqd truncates to int32, exact since lo, hi are int32 values.
//  * AVX2 has neither a 64-bit multiply nor a 64-bit arithmetic shift. v = vh * 2^32 + vl with vl
//    the unsigned low half: vpmuludq gives vl * mult (< 2^47, exact) and vpmuldq the signed
//    vh * mult, so p = ((vh * mult) << 32) + vl * mult modulo 2^64, which is p (|p| < 2^63). The
//    arithmetic shift is ((x ^ sg) >>> s) ^ sg with sg = (x < 0 ? -1 : 0): for x < 0,
//    ~x = -x - 1 >= 0 and ~floor((-x - 1) / 2^s) = floor(x / 2^s), the scalar floor_shift.
//  * The scale index compares the clamped int32 value s: i = min(max(s, t_lo), t_hi + 1) - t_lo
//    lies in [0, range + 1] (t_hi + 1 <= INT32_MAX: table thresholds are < INT32_MAX), and lut[i]
//    is read as the low byte of a 4-byte gather (the table has 3 bytes of padding).
// Stores. A run's values go to off + up * t. up = 1: a masked store of the first len lanes. up = 2:
// value t is widened into the low half of a 2-element lane and stored with every other element
// masked off, so a phase never touches the elements of the other phase on the same row (those may
// be written by another thread at the same time). AVX2 has no 16-bit masked store: int16 outputs
// take the scalar store, as does the binary-search scale index (more than 255 thresholds).
#include "sodec/requant_store.hpp"

#include <algorithm>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define COD_FAST_X86 1
#endif

namespace cod_fast::sodec {

namespace {

inline int64_t requant_one(int64_t acc, const Requant& rq) {
  const int s = static_cast<int>(rq.shift);
  const int64_t q = floor_shift((acc + rq.bias) * rq.mult + (int64_t{1} << (s - 1)), s);
  return std::clamp(q, rq.lo, rq.hi);
}

// Channel o's first output element.
inline void* channel_base(const OutView& out, int64_t o) {
  char* base = static_cast<char*>(o < out.split ? out.base0 : out.base1);
  const int64_t oc = o < out.split ? o : o - out.split;
  return base + static_cast<size_t>(oc * out.chan_stride) * (out.i16 ? sizeof(int16_t) : sizeof(int32_t));
}

template <class T>
void store_scalar_t(const int64_t* acc, const StoreRun* runs, int n_runs, int64_t up, const Requant& rq,
                    const ScaleIndexer* index, T* dst) {
  for (int r = 0; r < n_runs; ++r) {
    const StoreRun& run = runs[r];
    T* d = dst + run.off;
    const int64_t* a = acc + run.j0;
    if (index != nullptr) {
      for (int t = 0; t < run.len; ++t) d[up * t] = static_cast<T>(index->index(static_cast<int32_t>(requant_one(a[t], rq))));
    } else {
      for (int t = 0; t < run.len; ++t) d[up * t] = static_cast<T>(requant_one(a[t], rq));
    }
  }
}

void store_scalar(const int64_t* acc, int64_t acc_stride, int64_t o0, int64_t o1, const StoreRun* runs,
                  int n_runs, int64_t up, const int64_t* bias, const int64_t* mult, const int64_t* shift,
                  int64_t lo, int64_t hi, const ScaleIndexer* index, int64_t index_channels, const OutView& out) {
  for (int64_t o = o0; o < o1; ++o) {
    const Requant rq{bias[o], mult[o], shift[o], lo, hi};
    const int64_t* a = acc + (o - o0) * acc_stride;
    const ScaleIndexer* ix = o < index_channels ? index : nullptr;
    if (out.i16) {
      store_scalar_t(a, runs, n_runs, up, rq, ix, static_cast<int16_t*>(channel_base(out, o)));
    } else {
      store_scalar_t(a, runs, n_runs, up, rq, ix, static_cast<int32_t*>(channel_base(out, o)));
    }
  }
}

// A vector's worth of one run: `count` values from acc[j] to output elements off + up * t; mask:
// the store mask (AVX-512: the first count lanes, or for up = 2 their even elements).
struct Item {
  int j, count;
  int64_t off;
  uint32_t mask;
};

// The runs cut into items of at most `width` values (runs over kStoreMaxPositions positions give at
// most kStoreMaxPositions / width + n_runs items).
int plan_items(const StoreRun* runs, int n_runs, int64_t up, int width, Item* items) {
  int n = 0;
  for (int r = 0; r < n_runs; ++r) {
    for (int t = 0; t < runs[r].len; t += width) {
      const int count = std::min(width, runs[r].len - t);
      const uint32_t lanes = (1u << count) - 1, pairs = 0x5555u & ((1u << (2 * count)) - 1);
      items[n++] = Item{runs[r].j0 + t, count, runs[r].off + up * t, up == 1 ? lanes : pairs};
    }
  }
  return n;
}
constexpr int kMaxItems = 2 * kStoreMaxPositions;  // at most one run per position, one partial item per run

#ifdef COD_FAST_X86

bool cpu_has_store_avx512() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}

bool cpu_has_store_avx2() { return __builtin_cpu_supports("avx2"); }

// ---- AVX-512 --------------------------------------------------------------------------------
#define COD_FAST_STORE512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl")))

// Where channel row r's accumulators come from: int64 values (acc[r * stride + j]), or the three
// int32 planes of the AMX kernel combined as c0 + 256 * c1 + 65536 * c2 (exact in int64).
struct Acc64Source {
  const int64_t* acc;
  int64_t stride;
  COD_FAST_STORE512 __m512i load(int64_t r, int j) const { return _mm512_loadu_si512(acc + r * stride + j); }
};
struct Split3Source {
  const int32_t* c;
  int64_t stride, plane;
  COD_FAST_STORE512 __m512i load(int64_t r, int j) const {
    const int32_t* p = c + r * stride + j;
    const __m512i x0 = _mm512_cvtepi32_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    const __m512i x1 = _mm512_cvtepi32_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + plane)));
    const __m512i x2 = _mm512_cvtepi32_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 2 * plane)));
    return _mm512_add_epi64(x0, _mm512_add_epi64(_mm512_slli_epi64(x1, 8), _mm512_slli_epi64(x2, 16)));
  }
};

// Whole channels of one kind (index or not, int16 or int32, up 1 or 2): the loop the compiler
// sees has no per-element branch. Channel o reads source row o - o0.
template <bool kIndex, bool kI16, int kUp, class Source>
COD_FAST_STORE512 void store_channels_avx512(const Source& source, int64_t o0, int64_t o1, const Item* items,
                                             int n_items, const int64_t* bias, const int64_t* mult,
                                             const int64_t* shift, int64_t lo, int64_t hi, const ScaleIndexer* index,
                                             const OutView& out) {
  const Source src = source;  // a local copy: stores through dst cannot alias its fields
  const __m512i vlo = _mm512_set1_epi64(lo), vhi = _mm512_set1_epi64(hi);
  __m256i t_lo = _mm256_setzero_si256(), t_top = t_lo, always = t_lo;
  const int* table = nullptr;
  if (kIndex) {
    t_lo = _mm256_set1_epi32(index->t_lo);
    t_top = _mm256_set1_epi32(static_cast<int32_t>(index->t_lo + index->range + 1));
    always = _mm256_set1_epi32(index->always);
    table = reinterpret_cast<const int*>(index->lut.data());
  }
  const __m256i byte = _mm256_set1_epi32(0xff);
  using T = std::conditional_t<kI16, int16_t, int32_t>;
  T* const base0 = static_cast<T*>(out.base0);
  T* const base1 = static_cast<T*>(out.base1);
  const int64_t split = out.split, chan_stride = out.chan_stride;
  for (int64_t o = o0; o < o1; ++o) {
    const __m512i vb = _mm512_set1_epi64(bias[o]), vm = _mm512_set1_epi64(mult[o]);
    const __m512i vh = _mm512_set1_epi64(int64_t{1} << (shift[o] - 1));
    const __m128i cnt = _mm_cvtsi64_si128(shift[o]);
    T* const dst = o < split ? base0 + o * chan_stride : base1 + (o - split) * chan_stride;
    const int64_t row = o - o0;
    for (int it = 0; it < n_items; ++it) {
      const Item item = items[it];
      __m512i v = src.load(row, item.j);
      v = _mm512_mullo_epi64(_mm512_add_epi64(v, vb), vm);
      v = _mm512_sra_epi64(_mm512_add_epi64(v, vh), cnt);
      v = _mm512_min_epi64(_mm512_max_epi64(v, vlo), vhi);
      if (!kIndex && !kI16 && kUp == 2) {
        // The clamped values are int32: lane t's low half is value t, i.e. 32-bit element 2t.
        _mm512_mask_storeu_epi32(dst + item.off, static_cast<__mmask16>(item.mask), v);
        continue;
      }
      __m256i w = _mm512_cvtepi64_epi32(v);
      if (kIndex) {
        const __m256i i = _mm256_sub_epi32(_mm256_min_epi32(_mm256_max_epi32(w, t_lo), t_top), t_lo);
        w = _mm256_add_epi32(_mm256_and_si256(_mm256_i32gather_epi32(table, i, 1), byte), always);
      }
      if (kUp == 1) {
        if (kI16) {
          _mm_mask_storeu_epi16(dst + item.off, static_cast<__mmask8>(item.mask), _mm256_cvtepi32_epi16(w));
        } else {
          _mm256_mask_storeu_epi32(dst + item.off, static_cast<__mmask8>(item.mask), w);
        }
      } else if (kI16) {
        // The low 16 bits of 32-bit lane t hold the (int16-range) value: 16-bit element 2t.
        _mm256_mask_storeu_epi16(dst + item.off, static_cast<__mmask16>(item.mask), w);
      } else {
        _mm512_mask_storeu_epi32(dst + item.off, static_cast<__mmask16>(item.mask), _mm512_cvtepu32_epi64(w));
      }
    }
  }
}

template <bool kIndex, class Source>
void store_kind_avx512(const Source& src, int64_t o0, int64_t o1, const Item* items, int n_items, int64_t up,
                       const int64_t* bias, const int64_t* mult, const int64_t* shift, int64_t lo, int64_t hi,
                       const ScaleIndexer* index, const OutView& out) {
  if (out.i16) {
    (up == 1 ? store_channels_avx512<kIndex, true, 1, Source> : store_channels_avx512<kIndex, true, 2, Source>)(
        src, o0, o1, items, n_items, bias, mult, shift, lo, hi, index, out);
  } else {
    (up == 1 ? store_channels_avx512<kIndex, false, 1, Source> : store_channels_avx512<kIndex, false, 2, Source>)(
        src, o0, o1, items, n_items, bias, mult, shift, lo, hi, index, out);
  }
}

// Channels [o0, o1) from `src` (row o - o0), the first (< index_channels) through the index.
template <class Source>
void store_avx512(const Source& src, Source rest, int64_t o0, int64_t ox, int64_t o1, const StoreRun* runs, int n_runs,
                  int64_t up, const int64_t* bias, const int64_t* mult, const int64_t* shift, int64_t lo, int64_t hi,
                  const ScaleIndexer* index, const OutView& out) {
  Item items[kMaxItems];
  const int n_items = plan_items(runs, n_runs, up, 8, items);
  if (ox > o0) store_kind_avx512<true>(src, o0, ox, items, n_items, up, bias, mult, shift, lo, hi, index, out);
  if (o1 > ox) store_kind_avx512<false>(rest, ox, o1, items, n_items, up, bias, mult, shift, lo, hi, nullptr, out);
}

// ---- AVX2 -----------------------------------------------------------------------------------
#define COD_FAST_STORE2 __attribute__((target("avx2")))

// 4 accumulators -> 4 requantised, clamped int32 values (see the header comment for exactness).
COD_FAST_STORE2 inline __m128i requant4_avx2(const int64_t* a, __m256i vb, __m256i vm, __m256i vh,
                                             __m128i cnt, __m256i vlo, __m256i vhi) {
  const __m256i v = _mm256_add_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a)), vb);
  const __m256i lo_part = _mm256_mul_epu32(v, vm);
  const __m256i hi_part = _mm256_slli_epi64(_mm256_mul_epi32(_mm256_srli_epi64(v, 32), vm), 32);
  __m256i x = _mm256_add_epi64(_mm256_add_epi64(hi_part, lo_part), vh);
  const __m256i sg = _mm256_cmpgt_epi64(_mm256_setzero_si256(), x);
  x = _mm256_xor_si256(_mm256_srl_epi64(_mm256_xor_si256(x, sg), cnt), sg);
  x = _mm256_blendv_epi8(x, vhi, _mm256_cmpgt_epi64(x, vhi));
  x = _mm256_blendv_epi8(x, vlo, _mm256_cmpgt_epi64(vlo, x));
  return _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(x, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7)));
}

// int32 output only (AVX2 has no 16-bit masked store: int16 outputs take the scalar store).
template <bool kIndex, int kUp>
COD_FAST_STORE2 void store_channels_avx2(const int64_t* acc, int64_t acc_stride, int64_t o0, int64_t o1,
                                         const Item* items, int n_items, const int64_t* bias,
                                         const int64_t* mult, const int64_t* shift, int64_t lo, int64_t hi,
                                         const ScaleIndexer* index, const OutView& out) {
  const __m256i vlo = _mm256_set1_epi64x(lo), vhi = _mm256_set1_epi64x(hi);
  __m128i t_lo = _mm_setzero_si128(), t_top = t_lo, always = t_lo;
  const int* table = nullptr;
  if (kIndex) {
    t_lo = _mm_set1_epi32(index->t_lo);
    t_top = _mm_set1_epi32(static_cast<int32_t>(index->t_lo + index->range + 1));
    always = _mm_set1_epi32(index->always);
    table = reinterpret_cast<const int*>(index->lut.data());
  }
  const __m128i byte = _mm_set1_epi32(0xff);
  // prefix + 8 - n: the first n 32-bit lanes set; even + 8 - 2n: lanes 0, 2, .., 2n - 2.
  alignas(32) static const int32_t prefix[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  alignas(32) static const int32_t even[16] = {-1, 0, -1, 0, -1, 0, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t o = o0; o < o1; ++o) {
    const __m256i vb = _mm256_set1_epi64x(bias[o]), vm = _mm256_set1_epi64x(mult[o]);
    const __m256i vh = _mm256_set1_epi64x(int64_t{1} << (shift[o] - 1));
    const __m128i cnt = _mm_cvtsi64_si128(shift[o]);
    const int64_t* a = acc + (o - o0) * acc_stride;
    int32_t* dst = static_cast<int32_t*>(channel_base(out, o));
    for (int it = 0; it < n_items; ++it) {
      const Item& item = items[it];
      __m128i w = requant4_avx2(a + item.j, vb, vm, vh, cnt, vlo, vhi);
      if (kIndex) {
        const __m128i i = _mm_sub_epi32(_mm_min_epi32(_mm_max_epi32(w, t_lo), t_top), t_lo);
        w = _mm_add_epi32(_mm_and_si128(_mm_i32gather_epi32(table, i, 1), byte), always);
      }
      if (kUp == 1) {
        _mm_maskstore_epi32(dst + item.off, _mm_loadu_si128(reinterpret_cast<const __m128i*>(prefix + 8 - item.count)), w);
      } else {
        _mm256_maskstore_epi32(dst + item.off,
                               _mm256_loadu_si256(reinterpret_cast<const __m256i*>(even + 8 - 2 * item.count)),
                               _mm256_cvtepu32_epi64(w));
      }
    }
  }
}

#endif  // COD_FAST_X86

}  // namespace

bool store_isa_supported(StoreIsa isa) {
  switch (isa) {
    case StoreIsa::kScalar:
      return true;
#ifdef COD_FAST_X86
    case StoreIsa::kAvx2:
      return cpu_has_store_avx2();
    case StoreIsa::kAvx512:
      return cpu_has_store_avx512();
#else
    case StoreIsa::kAvx2:
    case StoreIsa::kAvx512:
      return false;
#endif
  }
  return false;
}

StoreIsa store_isa_for(Impl impl) {
  if (impl == Impl::kPortable) return StoreIsa::kScalar;
  if (impl != Impl::kAvx2 && store_isa_supported(StoreIsa::kAvx512)) return StoreIsa::kAvx512;
  if (store_isa_supported(StoreIsa::kAvx2)) return StoreIsa::kAvx2;
  return StoreIsa::kScalar;
}

void store_block(StoreIsa isa, const int64_t* acc, int64_t acc_stride, int64_t o0, int64_t o1,
                 const StoreRun* runs, int n_runs, int64_t up, const int64_t* bias, const int64_t* mult,
                 const int64_t* shift, int64_t lo, int64_t hi, const ScaleIndexer* index,
                 int64_t index_channels, const OutView& out) {
  if (index == nullptr) index_channels = 0;
  // Channels [o0, ox) take the scale index, [ox, o1) not.
  const int64_t ox = std::clamp(index_channels, o0, o1);
  const bool lut_index = index != nullptr && index->has_lut;
#ifdef COD_FAST_X86
  if (isa == StoreIsa::kAvx512) {
    int64_t from = o0;
    if (ox > o0 && !lut_index) {  // binary-search index: scalar
      store_scalar(acc, acc_stride, o0, ox, runs, n_runs, up, bias, mult, shift, lo, hi, index, index_channels, out);
      from = ox;
    }
    store_avx512(Acc64Source{acc + (from - o0) * acc_stride, acc_stride},
                 Acc64Source{acc + (ox - o0) * acc_stride, acc_stride}, from, ox, o1, runs, n_runs, up, bias, mult,
                 shift, lo, hi, index, out);
    return;
  }
  Item items[kMaxItems];
  if (isa == StoreIsa::kAvx2 && !out.i16) {
    const int n_items = plan_items(runs, n_runs, up, 4, items);
    if (ox > o0 && !lut_index) {
      store_scalar(acc, acc_stride, o0, ox, runs, n_runs, up, bias, mult, shift, lo, hi, index, index_channels, out);
    } else if (ox > o0) {
      (up == 1 ? store_channels_avx2<true, 1> : store_channels_avx2<true, 2>)(
          acc, acc_stride, o0, ox, items, n_items, bias, mult, shift, lo, hi, index, out);
    }
    if (o1 > ox) {
      (up == 1 ? store_channels_avx2<false, 1> : store_channels_avx2<false, 2>)(
          acc + (ox - o0) * acc_stride, acc_stride, ox, o1, items, n_items, bias, mult, shift, lo, hi, nullptr, out);
    }
    return;
  }
#else
  (void)isa;
  (void)lut_index;
#endif
  store_scalar(acc, acc_stride, o0, o1, runs, n_runs, up, bias, mult, shift, lo, hi, index, index_channels, out);
}

void store_block_split3(StoreIsa isa, const int32_t* c, int64_t stride, int64_t plane, int64_t o0, int64_t o1,
                        const StoreRun* runs, int n_runs, int64_t up, const int64_t* bias, const int64_t* mult,
                        const int64_t* shift, int64_t lo, int64_t hi, const ScaleIndexer* index,
                        int64_t index_channels, const OutView& out) {
  if (index == nullptr) index_channels = 0;
  const int64_t ox = std::clamp(index_channels, o0, o1);
#ifdef COD_FAST_X86
  if (isa == StoreIsa::kAvx512 && (ox == o0 || index->has_lut)) {
    store_avx512(Split3Source{c, stride, plane}, Split3Source{c + (ox - o0) * stride, stride, plane}, o0, ox, o1, runs,
                 n_runs, up, bias, mult, shift, lo, hi, index, out);
    return;
  }
#endif
  // Other stores: the combined int64 values first.
  std::vector<int64_t> acc(static_cast<size_t>((o1 - o0) * stride + 8));
  for (int64_t r = 0; r < o1 - o0; ++r)
    for (int64_t j = 0; j < stride; ++j) {
      const int32_t* p = c + r * stride + j;
      acc[static_cast<size_t>(r * stride + j)] = int64_t{p[0]} + int64_t{p[plane]} * 256 + int64_t{p[2 * plane]} * 65536;
    }
  store_block(isa, acc.data(), stride, o0, o1, runs, n_runs, up, bias, mult, shift, lo, hi, index, index_channels, out);
}

}  // namespace cod_fast::sodec
