// Python bindings of the rANS coder: cod_fast._C.rans. Arrays cross as buffers (numpy arrays,
// bytes); the Python layer (cod_fast/entropy) converts lists and tensors before calling here.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <thread>

#include "common/parallel.hpp"
#include "rans/rans_core.hpp"

namespace py = pybind11;
using namespace cod_fast::rans;

namespace {

// A C-contiguous int32 buffer with the expected number of dimensions.
struct I32View {
  const int32_t* ptr;
  std::vector<int64_t> shape;
  int64_t size;
  py::buffer_info info;  // keeps the buffer exported while we use it
};

I32View int32_view(const py::buffer& b, int ndim, const char* name, bool writable = false) {
  py::buffer_info info = b.request(writable);
  if (info.ndim != ndim) {
    throw py::value_error(std::string(name) + " must have " + std::to_string(ndim) +
                          " dimension(s), got " + std::to_string(info.ndim));
  }
  if (info.itemsize != 4 || (info.format != "i" && info.format != "l" && info.format != "=i" &&
                             info.format != "<i")) {
    throw py::type_error(std::string(name) + " must be an int32 buffer (got format '" +
                         info.format + "')");
  }
  int64_t expect = 4;
  for (int d = ndim - 1; d >= 0; --d) {
    if (info.shape[d] != 1 && info.strides[d] != expect) {
      throw py::value_error(std::string(name) + " must be C-contiguous");
    }
    expect *= info.shape[d];
  }
  I32View v{static_cast<const int32_t*>(info.ptr), {}, 1, {}};
  for (auto s : info.shape) {
    v.shape.push_back(s);
    v.size *= s;
  }
  v.info = std::move(info);
  return v;
}

std::pair<const uint8_t*, size_t> byte_view(const py::buffer& b, py::buffer_info& keep) {
  keep = b.request();
  if (keep.ndim > 1 || (keep.ndim == 1 && keep.strides[0] != keep.itemsize)) {
    throw py::value_error("stream must be a contiguous bytes-like object");
  }
  return {static_cast<const uint8_t*>(keep.ptr), static_cast<size_t>(keep.size * keep.itemsize)};
}

int resolve_threads(int threads) {
  if (threads < 0) throw py::value_error("threads must be >= 0 (0 = one per CPU)");
  return cod_fast::resolve_threads(threads);
}

std::shared_ptr<Tables> make_tables(const py::buffer& cdfs, const py::buffer& lengths,
                                    const py::buffer& offsets) {
  const I32View c = int32_view(cdfs, 2, "cdfs");
  const I32View l = int32_view(lengths, 1, "cdf_lengths");
  const I32View o = int32_view(offsets, 1, "offsets");
  if (l.size != c.shape[0] || o.size != c.shape[0]) {
    throw py::value_error("cdfs, cdf_lengths and offsets must describe the same number of tables");
  }
  py::gil_scoped_release nogil;
  return std::make_shared<Tables>(c.ptr, c.shape[0], c.shape[1], l.ptr, o.ptr);
}

py::bytes to_bytes(const std::string& s) { return py::bytes(s.data(), s.size()); }

}  // namespace

// Takes the module by value (a cheap handle) so that bindings.cpp can pass def_submodule()'s result.
void init_rans(py::module_ m) {
  m.doc() = "rANS entropy coding: CompressAI-compatible streams and cod_fast's segmented format";
  m.attr("PRECISION") = kPrecision;
  m.attr("LANES") = kLanes;
  m.attr("MAX_BUCKET_BITS") = kMaxBucketBits;
  m.attr("DEFAULT_SEGMENT_SYMBOLS") = kDefaultSegmentSymbols;
  m.attr("MAX_CDF_LENGTH") = kMaxCdfLength;

  // StreamError -> cod_fast.errors.BitstreamError (ArgError is a std::invalid_argument, which
  // pybind11 already maps to ValueError).
  static PyObject* bitstream_error =
      py::object(py::module_::import("cod_fast.errors").attr("BitstreamError")).release().ptr();
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const StreamError& e) {
      PyErr_SetString(bitstream_error, e.what());
    }
  });

  py::class_<Tables, std::shared_ptr<Tables>>(
      m, "Tables",
      "Validated CDF tables (int32 cdfs [n, width], cdf_lengths [n], offsets [n]) with the "
      "encoder reciprocals and decoder bucket tables derived from them.")
      .def(py::init(&make_tables), py::arg("cdfs"), py::arg("cdf_lengths"), py::arg("offsets"))
      .def_property_readonly("n_tables", &Tables::n_tables)
      .def(
          "slot_symbols",
          [](const Tables& t, int32_t table) {
            if (table < 0 || table >= t.n_tables()) throw py::index_error("table out of range");
            // The decoder's symbol search (bucket + steps) for every slot, for the tests.
            std::vector<int32_t> out(kTotal);
            const Tables::DecInfo& d = t.dec_info()[table];
            for (uint32_t slot = 0; slot < kTotal; ++slot) {
              out[slot] = static_cast<int32_t>(dec_find(d, slot));
            }
            return out;
          },
          py::arg("table"),
          "Decoder symbol search of every slot 0..65535 of one table (list of 65536 ints): s "
          "with cdf[s] <= slot < cdf[s + 1]. For tests of the bucketed search.");

  m.def(
      "compat_encode",
      [](const Tables& t, const py::buffer& symbols, const py::buffer& indexes) {
        const I32View s = int32_view(symbols, 1, "symbols");
        const I32View i = int32_view(indexes, 1, "indexes");
        if (s.size != i.size) throw py::value_error("symbols and indexes differ in length");
        std::string out;
        {
          py::gil_scoped_release nogil;
          out = compat_encode(t, s.ptr, i.ptr, s.size);
        }
        return to_bytes(out);
      },
      py::arg("tables"), py::arg("symbols"), py::arg("indexes"),
      "CompressAI-compatible stream of int32 symbols [n] coded with tables[indexes [n]].");

  m.def(
      "compat_decode",
      [](const Tables& t, const py::buffer& data, const py::buffer& indexes, const py::buffer& out) {
        py::buffer_info keep;
        const auto bytes = byte_view(data, keep);
        const I32View i = int32_view(indexes, 1, "indexes");
        const I32View o = int32_view(out, 1, "out", true);
        if (o.size != i.size) throw py::value_error("out and indexes differ in length");
        py::gil_scoped_release nogil;
        compat_decode(t, bytes.first, bytes.second, i.ptr, i.size, const_cast<int32_t*>(o.ptr));
      },
      py::arg("tables"), py::arg("data"), py::arg("indexes"), py::arg("out"),
      "Decodes a CompressAI-compatible stream into the int32 buffer out [n].");

  m.def(
      "fast_encode",
      [](const Tables& t, const py::buffer& symbols, const py::buffer& indexes,
         int64_t segment_symbols, int threads) {
        const I32View s = int32_view(symbols, 1, "symbols");
        const I32View i = int32_view(indexes, 1, "indexes");
        if (s.size != i.size) throw py::value_error("symbols and indexes differ in length");
        const int nt = resolve_threads(threads);
        std::string out;
        {
          py::gil_scoped_release nogil;
          out = fast_encode(t, s.ptr, i.ptr, s.size, segment_symbols, nt);
        }
        return to_bytes(out);
      },
      py::arg("tables"), py::arg("symbols"), py::arg("indexes"),
      py::arg("segment_symbols") = kDefaultSegmentSymbols, py::arg("threads") = 0,
      "cod_fast segmented, lane-interleaved stream of int32 symbols [n].");

  m.def(
      "fast_decode",
      [](const Tables& t, const py::buffer& data, const py::buffer& indexes, const py::buffer& out,
         int threads) {
        py::buffer_info keep;
        const auto bytes = byte_view(data, keep);
        const I32View i = int32_view(indexes, 1, "indexes");
        const I32View o = int32_view(out, 1, "out", true);
        if (o.size != i.size) throw py::value_error("out and indexes differ in length");
        const int nt = resolve_threads(threads);
        py::gil_scoped_release nogil;
        fast_decode(t, bytes.first, bytes.second, i.ptr, i.size, const_cast<int32_t*>(o.ptr), nt);
      },
      py::arg("tables"), py::arg("data"), py::arg("indexes"), py::arg("out"),
      py::arg("threads") = 0, "Decodes a cod_fast rANS stream into the int32 buffer out [n].");

  m.def(
      "fast_inspect",
      [](const py::buffer& data) {
        py::buffer_info keep;
        const auto bytes = byte_view(data, keep);
        const FastInfo info = fast_inspect(bytes.first, bytes.second);
        py::dict d;
        d["version"] = info.version;
        d["lanes"] = info.lanes;
        d["n_symbols"] = info.n_symbols;
        d["segment_symbols"] = info.segment_symbols;
        d["segment_bytes"] = info.segment_bytes;
        d["header_bytes"] = info.header_bytes;
        return d;
      },
      py::arg("data"), "Validated header of a cod_fast rANS stream, as a dict.");
}
