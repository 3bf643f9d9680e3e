"""Build script: compiles csrc/ with CMake + pybind11 into ``cod_fast._C`` (and, when CMake finds
nvcc, ``cod_fast._C_cuda``), and installs ``kernels/`` as the subpackage ``cod_fast.kernels``.

Neither extension links against libtorch: buffers cross the boundary through the buffer protocol,
so one wheel works with any torch build.

Environment knobs:
  COD_FAST_BUILD_TYPE   CMake build type (default Release; "Asan" builds with AddressSanitizer)
  COD_FAST_CUDA         "0" to skip the CUDA extension even if nvcc is found
  COD_FAST_JOBS         parallel compile jobs (default: number of CPUs)
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        import pybind11

        extdir = Path(self.get_ext_fullpath(ext.name)).parent.resolve()
        build_type = os.environ.get("COD_FAST_BUILD_TYPE", "Release")
        build_temp = Path(self.build_temp).resolve() / f"cmake-{build_type}"
        build_temp.mkdir(parents=True, exist_ok=True)
        args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={extdir}{os.sep}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DPYTHON_EXECUTABLE={sys.executable}",
            f"-DCMAKE_BUILD_TYPE={build_type}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DCOD_FAST_CUDA={'OFF' if os.environ.get('COD_FAST_CUDA') == '0' else 'ON'}",
        ]
        jobs = os.environ.get("COD_FAST_JOBS", str(os.cpu_count() or 1))
        subprocess.run(["cmake", str(ROOT), *args], cwd=build_temp, check=True)
        subprocess.run(["cmake", "--build", ".", "-j", jobs], cwd=build_temp, check=True)
        self._cuda_libs = list(extdir.glob("_C_cuda*"))
        if getattr(self, "editable_mode", False):
            self._copy_cuda_ext()

    # The same CMake run builds cod_fast._C_cuda when nvcc is found. setuptools copies only
    # declared extensions back into the source tree for in-place/editable builds, and _C_cuda is
    # optional, so it is copied here (wheels pick it up from the build directory as it is).
    def _copy_cuda_ext(self) -> None:
        for lib in getattr(self, "_cuda_libs", []):
            target = ROOT / "cod_fast" / lib.name
            if lib.resolve() != target.resolve():
                shutil.copy2(lib, target)

    def copy_extensions_to_source(self) -> None:
        super().copy_extensions_to_source()
        self._copy_cuda_ext()


packages = find_packages(include=["cod_fast", "cod_fast.*"]) + ["cod_fast.kernels"]

setup(
    packages=packages,
    package_dir={"cod_fast": "cod_fast", "cod_fast.kernels": "kernels"},
    package_data={"cod_fast": ["weights/*.safetensors", "weights/*.json", "weights/*.md", "data/*.png"]},
    ext_modules=[CMakeExtension("cod_fast._C")],
    cmdclass={"build_ext": CMakeBuild},
    zip_safe=False,
)
