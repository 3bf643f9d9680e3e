// Python bindings of the CPU reverse-channel coder: cod_fast._C.rcc. Arrays cross as numpy buffers;
// every call that loops over data releases the GIL. The Python layer (cod_fast/rcc) validates
// arguments first; the checks here guard the memory accesses.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "rcc/rcc_cpu.h"
#include "rcc/rcc_math.h"

namespace py = pybind11;

namespace {

using F32 = py::array_t<float, py::array::c_style | py::array::forcecast>;
using I32 = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;
using I64 = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

rcc::cpu::Impl parse_impl(const std::string& name) {
  if (name == "auto") return rcc::cpu::Impl::kAuto;
  if (name == "generic") return rcc::cpu::Impl::kGeneric;
  if (name == "avx2") return rcc::cpu::Impl::kAvx2;
  throw std::invalid_argument("impl must be 'auto', 'generic' or 'avx2', got '" + name + "'");
}

void check_1d(const py::array& a, const char* what) {
  if (a.ndim() != 1) throw std::invalid_argument(std::string(what) + " must be one-dimensional");
}

rcc::cpu::ChunkLayout layout_from(int64_t dim, const I32& bits, const I64& dims) {
  check_1d(bits, "chunk_bits");
  check_1d(dims, "chunk_dims");
  if (bits.shape(0) != dims.shape(0))
    throw std::invalid_argument("chunk_bits and chunk_dims must have the same length");
  return rcc::cpu::make_layout(dim, bits.data(), dims.data(), bits.shape(0));
}

}  // namespace

void init_rcc(py::module_& m) {
  m.doc() = "Reverse-channel coding (DiffC channel simulation) on the CPU: Philox4x32-10 shared "
            "randomness, deterministic normals, multi-threaded candidate selection.";

  m.def("avx2_supported", &rcc::cpu::avx2_supported, "Whether the AVX2 kernel can run here.");

  m.def(
      "philox_block",
      [](uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
        uint32_t out[4];
        rcc::philox4x32_10(c0, c1, c2, c3, k0, k1, out);
        return py::make_tuple(out[0], out[1], out[2], out[3]);
      },
      "One Philox4x32-10 block: counter (c0, c1, c2, c3), key (k0, k1) -> 4 uint32 words.");

  m.def(
      "philox_words",
      [](uint64_t seed, uint32_t step, uint32_t stream, uint32_t c1, uint64_t start, int64_t n) {
        if (n < 0) throw std::invalid_argument("n must be >= 0");
        py::array_t<uint32_t> out(n);
        uint32_t* p = out.mutable_data();
        py::gil_scoped_release nogil;
        rcc::cpu::philox_words(seed, step, stream, c1, start, n, p);
        return out;
      },
      py::arg("seed"), py::arg("step"), py::arg("stream"), py::arg("c1"), py::arg("start"),
      py::arg("n"), "Words start .. start+n-1 of a stream (word i = word i%4 of block c0=i/4).");

  m.def(
      "normals",
      [](uint64_t seed, uint32_t step, uint32_t stream, uint32_t c1, uint64_t start, int64_t n) {
        if (n < 0) throw std::invalid_argument("n must be >= 0");
        py::array_t<float> out(n);
        float* p = out.mutable_data();
        py::gil_scoped_release nogil;
        rcc::cpu::normals(seed, step, stream, c1, start, n, p);
        return out;
      },
      py::arg("seed"), py::arg("step"), py::arg("stream"), py::arg("c1"), py::arg("start"),
      py::arg("n"), "Standard normals from the words of a stream (float32).");

  m.def(
      "permutation",
      [](uint64_t seed, uint32_t step, int64_t dim) {
        std::vector<uint32_t> perm;
        {
          py::gil_scoped_release nogil;
          perm = rcc::cpu::permutation(seed, step, dim);
        }
        py::array_t<int64_t> out((py::ssize_t)perm.size());
        int64_t* p = out.mutable_data();
        for (size_t i = 0; i < perm.size(); ++i) p[i] = perm[i];
        return out;
      },
      py::arg("seed"), py::arg("step"), py::arg("dim"), "The step's dimension shuffle (int64).");

  m.def(
      "log_weights",
      [](const F32& mu_chunk, uint64_t seed, uint32_t step, uint32_t stream, uint32_t k_begin,
         uint32_t k_end, const std::string& impl) {
        check_1d(mu_chunk, "mu_chunk");
        if (k_end < k_begin || k_end > (1u << rcc::cpu::kMaxChunkBits))
          throw std::invalid_argument("need k_begin <= k_end <= 2^16");
        const rcc::cpu::Impl im = parse_impl(impl);
        py::array_t<float> out((py::ssize_t)(k_end - k_begin));
        float* p = out.mutable_data();
        const float* mu = mu_chunk.data();
        const int64_t d = mu_chunk.shape(0);
        py::gil_scoped_release nogil;
        rcc::cpu::log_weights(mu, d, seed, step, stream, k_begin, k_end, im, p);
        return out;
      },
      py::arg("mu_chunk"), py::arg("seed"), py::arg("step"), py::arg("stream"),
      py::arg("k_begin"), py::arg("k_end"), py::arg("impl") = "auto",
      "Log-weights <z_k, mu_chunk> (canonical summation order) of candidates k_begin..k_end-1.");

  m.def(
      "encode",
      [](const F32& mu, const I32& bits, const I64& dims, uint64_t seed, uint32_t step, int threads,
         const std::string& impl) {
        check_1d(mu, "mu");
        const rcc::cpu::ChunkLayout layout = layout_from(mu.shape(0), bits, dims);
        const rcc::cpu::Impl im = parse_impl(impl);
        py::array_t<int64_t> indices((py::ssize_t)layout.dims.size());
        py::array_t<float> sample(mu.shape(0));
        int64_t* ip = indices.mutable_data();
        float* sp = sample.mutable_data();
        const float* mp = mu.data();
        {
          py::gil_scoped_release nogil;
          rcc::cpu::encode(mp, layout, seed, step, threads, im, ip, sp);
        }
        return py::make_tuple(indices, sample);
      },
      py::arg("mu"), py::arg("chunk_bits"), py::arg("chunk_dims"), py::arg("seed"),
      py::arg("step"), py::arg("threads") = 0, py::arg("impl") = "auto",
      "Encode one step: mu float32 [dim] -> (indices int64 [chunks], sample float32 [dim]).");

  m.def(
      "decode",
      [](const I64& indices, int64_t dim, const I32& bits, const I64& dims, uint64_t seed,
         uint32_t step, int threads) {
        check_1d(indices, "indices");
        const rcc::cpu::ChunkLayout layout = layout_from(dim, bits, dims);
        if ((size_t)indices.shape(0) != layout.dims.size())
          throw std::invalid_argument("need one index per chunk");
        py::array_t<float> sample(dim);
        float* sp = sample.mutable_data();
        const int64_t* ip = indices.data();
        {
          py::gil_scoped_release nogil;
          rcc::cpu::decode(ip, layout, seed, step, threads, sp);
        }
        return sample;
      },
      py::arg("indices"), py::arg("dim"), py::arg("chunk_bits"), py::arg("chunk_dims"),
      py::arg("seed"), py::arg("step"), py::arg("threads") = 0,
      "Decode one step: indices int64 [chunks] -> sample float32 [dim].");
}
