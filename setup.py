"""Build of the C++ extension edgevit_kernels._C (the package metadata is in pyproject.toml).

The extension must be compiled against the torch it will run with, so install torch first and
build without build isolation:

    pip install torch ninja                      # ninja (optional) makes the compile parallel
    pip install --no-build-isolation -e .        # or `.` (not editable)
    pip wheel --no-build-isolation --no-deps .   # a wheel for any CPU of this architecture

With ninja the compile runs MAX_JOBS jobs at once (default: ninja's, about one per core); without
it, one at a time. A fresh build is about 100 s of compiler CPU time (gcc 12, torch 2.13, x86-64),
spread over the cores it is given.

Only the per-ISA micro-kernel files (csrc/**/*_avx2.cpp, *_avx512.cpp, *_neon.cpp: they include
no torch header) get ISA flags: each ISA's files are compiled, with that ISA's flags, into a
static library (build_clib) that is linked into the extension. Everything else, *_scalar.cpp
included, is built for the baseline of the target, so one build runs on any CPU of its
architecture and picks its kernels at run time (never a whole-build -march).
"""
import glob
import os
import platform
import shlex
import sys
from concurrent.futures import ThreadPoolExecutor

import setuptools
from setuptools import setup
from setuptools.command.build_clib import build_clib

if int(setuptools.__version__.split(".")[0]) < 77:
    sys.exit(f"edgevit-kernels: the build needs setuptools >= 77 (found {setuptools.__version__}): "
             "pip install -U 'setuptools>=77'")

try:
    import torch
    from torch.utils.cpp_extension import BuildExtension, CppExtension
except ImportError as e:
    sys.exit(
        f"edgevit-kernels: torch is not importable in this build environment ({e}). The C++ "
        "extension must be compiled against the torch it will run with, so torch is not a build "
        "requirement that pip could install into its isolated build environment (that would be "
        "some other torch). Install torch first, then build without isolation:\n"
        "    pip install torch\n"
        "    pip install --no-build-isolation .        (or -e . for a development install)")

HERE = os.path.dirname(os.path.abspath(__file__))
X86 = platform.machine().lower() in ("x86_64", "amd64")

# Flags by the file-name suffix of the per-ISA sources. On an architecture an ISA does not belong
# to, its files compile (without flags) to null-table stubs.
ISA_FLAGS = {
    "_avx2.cpp": ["-mavx2", "-mfma"] if X86 else [],
    "_avx512.cpp": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma"] if X86 else [],
    "_neon.cpp": [],  # NEON is the aarch64 baseline
}
BASE_FLAGS = ["-O3", "-fvisibility=hidden"]
# Python's own CFLAGS, which every extension build starts from, often carry -g; debug info for
# torch's headers takes most of the compile time and most of the library's size.
# `setup.py build_ext --debug` keeps it.
NO_DEBUG_INFO = ["-g0"]


def _rel(pattern):
    return sorted(os.path.relpath(p, HERE)
                  for p in glob.glob(os.path.join(HERE, pattern), recursive=True))


def _max_jobs():
    jobs = os.environ.get("MAX_JOBS", "")
    if jobs.isdigit() and int(jobs) > 0:
        return int(jobs)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class BuildISALibraries(build_clib):
    """build_clib with the extension's C++ compiler, and every file compiled in parallel."""

    def build_libraries(self, libraries):
        cxx = shlex.split(os.environ.get("CXX", "c++"))  # what BuildExtension compiles with
        self.compiler.set_executable("compiler_so", cxx + list(self.compiler.compiler_so[1:]))
        no_g = [] if self.debug else NO_DEBUG_INFO
        with ThreadPoolExecutor(_max_jobs()) as pool:
            compiled = {name: [pool.submit(self.compiler.compile, [src], output_dir=self.build_temp,
                                           extra_postargs=info["cflags"] + no_g, debug=self.debug)
                               for src in info["sources"]]
                        for name, info in libraries}
        for name, jobs in compiled.items():
            objects = [obj for job in jobs for obj in job.result()]
            self.compiler.create_static_lib(objects, name, output_dir=self.build_clib, debug=self.debug)


class BuildExt(BuildExtension):
    """BuildExtension (ninja when installed) that first builds the per-ISA libraries it links."""

    def run(self):
        self.run_command("build_clib")
        super().run()

    def build_extension(self, ext):
        if not self.debug:
            args = ext.extra_compile_args
            ext.extra_compile_args = dict(args, cxx=list(args["cxx"]) + NO_DEBUG_INFO)
        super().build_extension(ext)


openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []
# The ISA libraries hold no torch code, but they are linked into a torch extension: same C++ ABI.
abi = [f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"]
all_sources = _rel(os.path.join("csrc", "**", "*.cpp"))
isa_sources = {suffix: [s for s in all_sources if s.endswith(suffix)] for suffix in ISA_FLAGS}
isa_libraries = [
    (f"edgevit_cpu{suffix[:-len('.cpp')]}",
     {"sources": srcs, "cflags": ["-std=c++17", "-fPIC"] + BASE_FLAGS + abi + ISA_FLAGS[suffix]})
    for suffix, srcs in isa_sources.items() if srcs
]
in_libraries = {s for srcs in isa_sources.values() for s in srcs}

setup(
    libraries=isa_libraries,
    ext_modules=[
        CppExtension(
            "edgevit_kernels._C",
            [s for s in all_sources if s not in in_libraries],
            # so that editing a header or a library source relinks the extension
            depends=_rel(os.path.join("csrc", "**", "*.h")) + sorted(in_libraries),
            extra_compile_args={"cxx": BASE_FLAGS + openmp},
            extra_link_args=openmp,
        )
    ],
    cmdclass={"build_clib": BuildISALibraries, "build_ext": BuildExt},
)
