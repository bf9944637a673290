"""Build of edgevit-kernels: the C++ extension edgevit_kernels._C and the two Python packages.

Build without isolation so pip uses the torch already installed (the extension must match it):

    pip install --no-build-isolation -e .

Only the per-ISA micro-kernel files get ISA flags (see ISA_FLAGS); everything else is built for
the baseline of the target, so one build runs on any CPU of that architecture and picks its
kernels at run time (no whole-build host -march flag).
"""
import glob
import os
import platform
import sys

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

HERE = os.path.dirname(os.path.abspath(__file__))
X86 = platform.machine().lower() in ("x86_64", "amd64")

# Flags by the file-name suffix of the per-ISA sources (csrc/cpu/*_<isa>.cpp).
ISA_FLAGS = {
    "_avx2.cpp": ["-mavx2", "-mfma"] if X86 else [],
    "_avx512.cpp": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma"] if X86 else [],
    "_neon.cpp": [],  # NEON is the aarch64 baseline; on x86 the file compiles to a stub
}


class BuildExt(BuildExtension):
    """Adds ISA_FLAGS to the files they belong to (hence no ninja: it takes one flag set)."""

    def build_extension(self, ext):
        compile_one = self.compiler._compile

        def compile_with_isa_flags(obj, src, ext_, cc_args, extra_postargs, pp_opts):
            flags = next((f for suffix, f in ISA_FLAGS.items() if src.endswith(suffix)), [])
            if isinstance(extra_postargs, dict):
                extra_postargs = dict(extra_postargs, cxx=list(extra_postargs["cxx"]) + flags)
            else:
                extra_postargs = list(extra_postargs) + flags
            return compile_one(obj, src, ext_, cc_args, extra_postargs, pp_opts)

        self.compiler._compile = compile_with_isa_flags
        try:
            super().build_extension(ext)
        finally:
            self.compiler._compile = compile_one


openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []
sources = sorted(
    os.path.relpath(p, HERE)
    for p in glob.glob(os.path.join(HERE, "csrc", "**", "*.cpp"), recursive=True)
)

setup(
    name="edgevit-kernels",
    version="0.1.0",
    description="Fused CPU (NEON/AVX2/AVX-512) and Triton kernels for EdgeViT's LGL bottleneck",
    packages=["edgevit_kernels", "edgevit_kernels.triton", "edgevit"],
    package_dir={"edgevit": "python/edgevit"},
    ext_modules=[
        CppExtension(
            "edgevit_kernels._C",
            sources,
            extra_compile_args={"cxx": ["-O3", "-fvisibility=hidden"] + openmp},
            extra_link_args=openmp,
        )
    ],
    cmdclass={"build_ext": BuildExt.with_options(use_ninja=False)},
    python_requires=">=3.9",
    install_requires=["torch>=2.4", "numpy"],
    extras_require={
        "gpu": ["triton>=3.2"],
        # Triton runs the GPU kernels' tests on CPU tensors (TRITON_INTERPRET=1).
        "test": ["pytest", "hypothesis", "matplotlib", "triton>=3.2; platform_system == 'Linux' and platform_machine == 'x86_64'"],
        "bench": ["pytest-benchmark", "matplotlib", "onnx", "onnxruntime", "onnxscript", "tqdm"],
    },
    entry_points={"console_scripts": ["edgevit-bench=edgevit_kernels.__main__:main"]},
)
