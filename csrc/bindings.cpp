// cod_fast._C: the CPU extension module. Each component registers its functions in a submodule
// through an init_* function defined next to its sources.
#include <pybind11/pybind11.h>

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "cod_fast native CPU extension (no libtorch; buffers via the buffer protocol)";
#ifdef NDEBUG
  m.attr("build_type") = "release";
#else
  m.attr("build_type") = "debug";
#endif
}
