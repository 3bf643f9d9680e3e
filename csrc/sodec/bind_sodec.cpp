// Python bindings of the SODEC fixed-point entropy parameters: cod_fast._C.sodec.
// Arrays cross as C-contiguous numpy arrays of the exact dtype (no silent casts); every bound of
// the spec's overflow proof is re-checked here, so a bad call raises instead of overflowing.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "sodec/entropy_plan.hpp"
#include "sodec/int_params.hpp"

namespace py = pybind11;
using namespace cod_fast::sodec;

namespace {

using I32 = py::array_t<int32_t, py::array::c_style>;
using I64 = py::array_t<int64_t, py::array::c_style>;

// const char* overload: the element loops below call it millions of times, and building a
// std::string message per call cost more than the convolution.
void require(bool ok, const char* message) {
  if (!ok) throw py::value_error(message);
}
void require(bool ok, const std::string& message) {
  if (!ok) throw py::value_error(message);
}

// min and max of an int32 array (one pass, vectorisable).
std::pair<int32_t, int32_t> min_max(const int32_t* p, int64_t n) {
  int32_t lo = INT32_MAX, hi = INT32_MIN;
  for (int64_t j = 0; j < n; ++j) {
    lo = std::min(lo, p[j]);
    hi = std::max(hi, p[j]);
  }
  return {lo, hi};
}

Impl parse_impl(const std::string& name) {
  if (name == "auto") return Impl::kAuto;
  if (name == "portable") return Impl::kPortable;
  if (name == "avx2") return Impl::kAvx2;
  if (name == "avx512") return Impl::kAvx512;
  if (name == "amx") return Impl::kAmx;
  throw py::value_error("impl must be 'auto', 'portable', 'avx2', 'avx512' or 'amx', got '" + name + "'");
}

void check_requant(const I64& bias, const I64& mult, const I64& shift, int64_t co, int64_t lo, int64_t hi) {
  require(bias.ndim() == 1 && mult.ndim() == 1 && shift.ndim() == 1 && bias.shape(0) == co &&
              mult.shape(0) == co && shift.shape(0) == co, "bias, mult and shift must be [CO]");
  require(INT32_MIN <= lo && lo <= hi && hi <= INT32_MAX, "clamp must be an int32 interval");
  for (int64_t o = 0; o < co; ++o) {
    require(bias.data()[o] >= -MAX_ABS_BIAS && bias.data()[o] <= MAX_ABS_BIAS, "|bias| must be <= 2^40");
    require(mult.data()[o] >= 1 && mult.data()[o] < MAX_MULT, "mult must lie in [1, 2^15)");
    require(shift.data()[o] >= 1 && shift.data()[o] <= MAX_SHIFT, "shift must lie in [1, 62]");
  }
}

// Activations within the spec's |a| <= 32767 and weights within [-127, 127] (one pass each).
void check_activations(const I32& a) {
  if (a.size() == 0) return;
  const auto r = min_max(a.data(), a.size());
  require(r.first >= -ACT_MAX && r.second <= ACT_MAX, "|a| must be <= 32767");
}

void check_weights(const I32& weight) {
  if (weight.size() == 0) return;
  const auto r = min_max(weight.data(), weight.size());
  require(r.first >= -127 && r.second <= 127, "weights must lie in [-127, 127]");
}

void check_plane(int64_t h, int64_t w, int64_t up) {
  require(h <= (int64_t{1} << 28) && w <= (int64_t{1} << 28) && h * up * w * up <= (int64_t{1} << 28),
          "output plane too large");
}

struct ConvShape {
  int64_t co, ci, k;
};

// The weights every entry point accepts: [CO, CI, k, k] with k odd, 1 <= CI*k*k <= 2^20 (the
// kernels' int64 accumulators cannot overflow below that), 1 <= CO <= 2^20, entries in [-127, 127];
// up in {1, 2}.
ConvShape check_conv(const I32& weight, int64_t up) {
  require(weight.ndim() == 4, "weight must be [CO, CI, k, k]");
  const int64_t co = weight.shape(0), ci = weight.shape(1), k = weight.shape(2);
  require(weight.shape(3) == k && k % 2 == 1, "kernel must be square with odd size");
  require(co >= 1 && ci >= 1 && ci * k * k <= MAX_REDUCTION, "reduction length CI*k*k outside [1, 2^20]");
  require(co <= MAX_REDUCTION, "more than 2^20 output channels");
  require(up == 1 || up == 2, "up must be 1 or 2");
  check_weights(weight);
  return {co, ci, k};
}

I32 conv_requant_py(const I32& a, const I32& weight, const I64& bias, const I64& mult,
                    const I64& shift, int64_t up, int64_t lo, int64_t hi, int threads,
                    const std::string& impl) {
  require(threads >= 0, "threads must be >= 0 (0: one per CPU)");
  const Impl im = parse_impl(impl);
  require(impl_supported(im), "this CPU cannot run the '" + impl + "' kernel");
  require(a.ndim() == 4, "a must be [N, CI, h, w]");
  const auto [co, ci, k] = check_conv(weight, up);
  const int64_t n = a.shape(0), h = a.shape(2), w = a.shape(3);
  require(a.shape(1) == ci, "weight input channels differ from a's channels");
  check_requant(bias, mult, shift, co, lo, hi);
  check_plane(h, w, up);
  check_activations(a);
  I32 out({n, co, h * up, w * up});
  int32_t* po = out.mutable_data();
  {
    py::gil_scoped_release release;
    conv_requant(a.data(), n, ci, h, w, weight.data(), co, k, bias.data(), mult.data(), shift.data(), up, lo,
                 hi, po, threads, im);
  }
  return out;
}

std::shared_ptr<PreparedConv> prepare_conv_py(const I32& weight, int64_t up, int threads) {
  require(threads >= 0, "threads must be >= 0 (0: one per CPU)");
  const auto [co, ci, k] = check_conv(weight, up);
  py::gil_scoped_release release;
  return prepare_conv(weight.data(), co, ci, k, up, threads);
}

I32 conv_requant_prepared_py(const I32& a, const PreparedConv& prep, const I64& bias, const I64& mult,
                             const I64& shift, int64_t lo, int64_t hi, int threads, const std::string& impl,
                             const ScaleIndexer* index, int64_t index_channels) {
  require(index_channels >= 0 && index_channels <= prep.co, "index_channels must lie in [0, CO]");
  require(index != nullptr || index_channels == 0, "index_channels needs an index (prepare_scale_index)");
  require(threads >= 0, "threads must be >= 0 (0: one per CPU)");
  const Impl im = parse_impl(impl);
  require(impl_supported(im), "this CPU cannot run the '" + impl + "' kernel");
  require(a.ndim() == 4, "a must be [N, CI, h, w]");
  require(a.shape(1) == prep.ci, "a's channels differ from the prepared layer's input channels");
  const int64_t n = a.shape(0), h = a.shape(2), w = a.shape(3), up = prep.up;
  check_plane(h, w, up);
  check_requant(bias, mult, shift, prep.co, lo, hi);
  check_activations(a);
  I32 out({n, prep.co, h * up, w * up});
  int32_t* po = out.mutable_data();
  {
    py::gil_scoped_release release;
    conv_requant_prepared(prep, a.data(), n, h, w, bias.data(), mult.data(), shift.data(), lo, hi, po,
                          threads, im, index, index_channels);
  }
  return out;
}

void check_thresholds(const I64& thresholds) {
  require(thresholds.ndim() == 1, "thresholds must be 1-D");
  const int64_t* t = thresholds.data();
  for (int64_t j = 1; j < thresholds.size(); ++j) require(t[j - 1] <= t[j], "thresholds must be non-decreasing");
}

std::shared_ptr<ScaleIndexer> prepare_scale_index_py(const I64& thresholds) {
  check_thresholds(thresholds);
  return prepare_scale_index(thresholds.data(), static_cast<size_t>(thresholds.size()));
}

I32 scale_index_py(const I32& s, const I64& thresholds) {
  check_thresholds(thresholds);
  const int64_t* t = thresholds.data();
  std::vector<py::ssize_t> shape(s.shape(), s.shape() + s.ndim());
  I32 out(shape);
  {
    py::gil_scoped_release release;
    scale_index(s.data(), static_cast<size_t>(s.size()), t, static_cast<size_t>(thresholds.size()),
                out.mutable_data());
  }
  return out;
}

// One layer of prepare_entropy_plan: (weight int32 [CO, CI, k, k], bias, mult, shift int64 [CO],
// up, lo, hi), every bound checked as conv_requant does.
EntropyLayer entropy_layer_py(const py::tuple& t, int threads) {
  require(t.size() == 7, "each layer must be (weight, bias, mult, shift, up, lo, hi)");
  const auto weight = t[0].cast<I32>();
  const auto bias = t[1].cast<I64>(), mult = t[2].cast<I64>(), shift = t[3].cast<I64>();
  const auto up = t[4].cast<int64_t>(), lo = t[5].cast<int64_t>(), hi = t[6].cast<int64_t>();
  const auto [co, ci, k] = check_conv(weight, up);
  check_requant(bias, mult, shift, co, lo, hi);
  EntropyLayer L;
  {
    py::gil_scoped_release release;
    L.prep = prepare_conv(weight.data(), co, ci, k, up, threads);
  }
  L.bias.assign(bias.data(), bias.data() + co);
  L.mult.assign(mult.data(), mult.data() + co);
  L.shift.assign(shift.data(), shift.data() + co);
  L.lo = lo;
  L.hi = hi;
  return L;
}

std::shared_ptr<EntropyPlan> prepare_entropy_plan_py(const py::list& layers, const I64& thresholds,
                                                     int64_t n_channels, int threads) {
  require(threads >= 0, "threads must be >= 0 (0: one per CPU)");
  require(layers.size() >= 1, "at least one layer is needed");
  check_thresholds(thresholds);
  std::vector<EntropyLayer> ls;
  for (const auto& item : layers) ls.push_back(entropy_layer_py(item.cast<py::tuple>(), threads));
  for (size_t l = 0; l + 1 < ls.size(); ++l) {
    require(ls[l].lo >= -ACT_MAX && ls[l].hi <= ACT_MAX, "hidden layers must clamp into [-32767, 32767]");
    require(ls[l + 1].prep->ci == ls[l].prep->co, "layer input channels do not match the previous layer's outputs");
  }
  require(n_channels >= 1 && ls.back().prep->co == 2 * n_channels,
          "the last layer must output 2 * n_channels channels");
  auto index = prepare_scale_index(thresholds.data(), static_cast<size_t>(thresholds.size()));
  return make_entropy_plan(std::move(ls), std::move(index), n_channels);
}

// z: C-contiguous int16, int32 or int64 [N, CI, h, w] (no cast: the C++ reads each dtype and clamps).
py::object entropy_parameters_py(const EntropyPlan& plan, const py::array& z, int threads,
                                 const std::string& impl, bool head) {
  require(threads >= 0, "threads must be >= 0 (0: one per CPU)");
  const Impl im = parse_impl(impl);
  require(impl_supported(im), "this CPU cannot run the '" + impl + "' kernel");
  require(z.ndim() == 4, "z must be [N, CI, h, w]");
  require((z.flags() & py::array::c_style) != 0, "z must be C-contiguous");
  ZType zt;
  if (py::isinstance<py::array_t<int16_t>>(z)) {
    zt = ZType::kInt16;
  } else if (py::isinstance<py::array_t<int32_t>>(z)) {
    zt = ZType::kInt32;
  } else if (py::isinstance<py::array_t<int64_t>>(z)) {
    zt = ZType::kInt64;
  } else {
    throw py::type_error("z must be an int16, int32 or int64 array");
  }
  const int64_t n = z.shape(0), h = z.shape(2), w = z.shape(3), f = plan.upsampling();
  require(z.shape(1) == plan.in_channels(), "z's channels differ from the plan's input channels");
  require(h <= (int64_t{1} << 20) && w <= (int64_t{1} << 20) && h * f * w * f <= (int64_t{1} << 28),
          "output plane too large");
  const int64_t m = plan.n_channels, H = h * f, W = w * f;
  const void* zp = z.data();
  if (head) {
    I32 out({n, 2 * m, H, W});
    int32_t* po = out.mutable_data();
    {
      py::gil_scoped_release release;
      entropy_parameters(plan, zp, zt, n, h, w, nullptr, po, threads, im);
    }
    return std::move(out);
  }
  I32 indexes({n, m, H, W}), means({n, m, H, W});
  int32_t* pi = indexes.mutable_data();
  int32_t* pm = means.mutable_data();
  {
    py::gil_scoped_release release;
    entropy_parameters(plan, zp, zt, n, h, w, pi, pm, threads, im);
  }
  return py::make_tuple(std::move(indexes), std::move(means));
}

}  // namespace

void init_sodec(py::module_& m) {
  m.doc() = "SODEC fixed-point entropy parameters (the 'cpp' backend)";
  m.def("conv_requant", &conv_requant_py, py::arg("a"), py::arg("weight"), py::arg("bias"),
        py::arg("mult"), py::arg("shift"), py::arg("up"), py::arg("lo"), py::arg("hi"),
        py::arg("threads") = 0, py::arg("impl") = "auto",
        "One IntegerConv layer: int32 [N,CI,h,w] -> int32 [N,CO,h*up,w*up] (see integer_params.py). "
        "threads: 0 = one per CPU; impl: 'auto', 'portable', 'avx2' or 'avx512' (same integers).");
  m.def(
      "impl_supported", [](const std::string& impl) { return impl_supported(parse_impl(impl)); },
      py::arg("impl"), "Whether this CPU runs the conv_requant kernel `impl`.");
  py::class_<PreparedConv, std::shared_ptr<PreparedConv>>(
      m, "PreparedConv", "An IntegerConv's weights prepared for conv_requant_prepared (opaque).")
      .def_property_readonly("out_channels", [](const PreparedConv& p) { return p.co; })
      .def_property_readonly("in_channels", [](const PreparedConv& p) { return p.ci; })
      .def_property_readonly("kernel_size", [](const PreparedConv& p) { return p.k; })
      .def_property_readonly("up", [](const PreparedConv& p) { return p.up; });
  m.def("prepare_conv", &prepare_conv_py, py::arg("weight"), py::arg("up"), py::arg("threads") = 0,
        "Prepare int32 weights [CO, CI, k, k] (values in [-127, 127]) and upsampling 1 or 2 once for "
        "repeated conv_requant_prepared calls.");
  py::class_<ScaleIndexer, std::shared_ptr<ScaleIndexer>>(
      m, "ScaleIndexer", "Thresholds prepared for the scale index fused into conv_requant_prepared (opaque).");
  m.def("prepare_scale_index", &prepare_scale_index_py, py::arg("thresholds"),
        "Prepare sorted int64 thresholds for conv_requant_prepared(..., index=, index_channels=).");
  m.def("conv_requant_prepared", &conv_requant_prepared_py, py::arg("a"), py::arg("prepared"),
        py::arg("bias"), py::arg("mult"), py::arg("shift"), py::arg("lo"), py::arg("hi"),
        py::arg("threads") = 0, py::arg("impl") = "auto", py::arg("index") = nullptr,
        py::arg("index_channels") = 0,
        "conv_requant with prepared weights: int32 [N,CI,h,w] -> int32 [N,CO,h*up,w*up], same integers. "
        "With index (prepare_scale_index), channels < index_channels hold scale_index of the value.");
  py::class_<EntropyPlan, std::shared_ptr<EntropyPlan>>(
      m, "EntropyPlan", "A whole integer hyper synthesis prepared for entropy_parameters (opaque).")
      .def_property_readonly("in_channels", &EntropyPlan::in_channels)
      .def_property_readonly("n_channels", [](const EntropyPlan& p) { return p.n_channels; })
      .def_property_readonly("upsampling", &EntropyPlan::upsampling)
      .def_property_readonly("n_layers", [](const EntropyPlan& p) { return p.layers.size(); });
  m.def("prepare_entropy_plan", &prepare_entropy_plan_py, py::arg("layers"), py::arg("thresholds"),
        py::arg("n_channels"), py::arg("threads") = 0,
        "Prepare every layer (weight int32 [CO,CI,k,k], bias, mult, shift int64 [CO], up, lo, hi) and the "
        "sorted int64 scale thresholds once, for entropy_parameters.");
  m.def("entropy_parameters", &entropy_parameters_py, py::arg("plan"), py::arg("z"), py::arg("threads") = 0,
        py::arg("impl") = "auto", py::arg("head") = false,
        "All layers and the scale index in one call: z int16/int32/int64 [N,CI,h,w] (clamped to +-32767) -> "
        "(indexes, means) int32 [N,M,H,W]; head=True: the raw head int32 [N,2M,H,W] instead.");
  m.def("scale_index", &scale_index_py, py::arg("s"), py::arg("thresholds"),
        "#{k : s > thresholds[k]} for int32 scale codes (any shape) -> int32.");
}
