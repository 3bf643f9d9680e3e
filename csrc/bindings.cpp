// cod_fast._C: the CPU extension module. Each component registers its functions in a submodule
// through an init_* function defined next to its sources.
#include <pybind11/pybind11.h>

namespace py = pybind11;

void init_rans(py::module_ m);  // csrc/rans/bind_rans.cpp
void init_rcc(py::module_& m);  // csrc/rcc/bind_rcc.cpp
void init_sodec(py::module_& m);  // csrc/sodec/bind_sodec.cpp

PYBIND11_MODULE(_C, m) {
  m.doc() = "cod_fast native CPU extension (no libtorch; buffers via the buffer protocol)";
#ifdef NDEBUG
  m.attr("build_type") = "release";
#else
  m.attr("build_type") = "debug";
#endif
  init_rans(m.def_submodule("rans"));
  {
    py::module_ rcc = m.def_submodule("rcc");
    init_rcc(rcc);
  }
  {
    py::module_ sodec = m.def_submodule("sodec");
    init_sodec(sodec);
  }
}
