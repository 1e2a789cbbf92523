"""Build of the C++ extension ``mmengine._C`` through CMake (metadata lives in pyproject.toml).

Environment switches:
    MMENGINE_CUDA=1          also build the CUDA kernels (csrc/cuda, sm_80 and sm_90)
    MMENGINE_BUILD_TYPE=...  CMake build type (default Release)
    MMENGINE_BUILD_JOBS=N    parallel compile jobs (default 2)
    CMAKE_ARGS="..."         extra arguments passed to the CMake configure step
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    """An extension whose sources are built by the CMake project in ``sourcedir``."""

    def __init__(self, name: str, sourcedir: Path = ROOT) -> None:
        super().__init__(name, sources=[])
        self.sourcedir = os.fspath(Path(sourcedir).resolve())


def _tool(module: str, attr: str, exe: str) -> str:
    """Path of a build tool installed from PyPI (``cmake``, ``ninja``), else from PATH."""
    try:
        mod = __import__(module)
        path = Path(getattr(mod, attr)) / exe
        if path.exists():
            return os.fspath(path)
    except (ImportError, AttributeError):
        pass
    found = shutil.which(exe)
    if found is None:
        raise RuntimeError(f"{exe} not found: pip install {module}")
    return found


class CMakeBuild(build_ext):
    """Configure and build the CMake project; the module lands next to mmengine/__init__.py."""

    def build_extension(self, ext: Extension) -> None:
        if not isinstance(ext, CMakeExtension):
            super().build_extension(ext)
            return
        import pybind11

        extdir = Path(self.get_ext_fullpath(ext.name)).parent.resolve()
        build_type = os.environ.get("MMENGINE_BUILD_TYPE", "Debug" if self.debug else "Release")
        cuda = os.environ.get("MMENGINE_CUDA", "0") == "1"
        cmake = _tool("cmake", "CMAKE_BIN_DIR", "cmake")
        args = [
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={extdir}{os.sep}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DCMAKE_BUILD_TYPE={build_type}",
            f"-DMMENGINE_WITH_CUDA={'ON' if cuda else 'OFF'}",
        ]
        try:
            args += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={_tool('ninja', 'BIN_DIR', 'ninja')}"]
        except RuntimeError:
            pass  # the platform default generator
        args += shlex.split(os.environ.get("CMAKE_ARGS", ""))

        build_temp = Path(self.build_temp) / ext.name
        build_temp.mkdir(parents=True, exist_ok=True)
        jobs = os.environ.get("MMENGINE_BUILD_JOBS", "2")
        subprocess.run([cmake, ext.sourcedir, *args], cwd=build_temp, check=True)
        subprocess.run([cmake, "--build", ".", "--parallel", jobs], cwd=build_temp, check=True)


setup(
    ext_modules=[CMakeExtension("mmengine._C")],
    cmdclass={"build_ext": CMakeBuild},
)
