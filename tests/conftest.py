import os
import re
import sys

import pytest

import torch

# Make tests/ importable as a flat module directory (lgl_samples, official_state_dict_keys).
sys.path.insert(0, os.path.dirname(__file__))

# Set before any test module imports the Triton kernels (the interpreter switch is read when a
# kernel is decorated): without CUDA they run in Triton's interpreter on CPU tensors. One fixed
# launch config under test; test_lgl_fused_triton.py turns autotuning on where it tests it.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("EDGEVIT_TRITON_AUTOTUNE", "0")

# Tests whose outcome depends on the ISA's sizes (panel widths, packed-blob sizes, cache budgets)
# or its bits (determinism, plans): `.ci/run` runs them again with EDGEVIT_CPU_ISA forced to each
# other ISA this CPU supports, so that a size or bit measured on one CPU cannot hide in a test.
_ISA_SENSITIVE_FILES = {"test_lgl_prepared.py", "test_inference.py"}
_ISA_SENSITIVE_NAME = re.compile(r"cache|prepare|plan|eval|fused_model|bitwise|determinis|thread")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "isa_sensitive: depends on the running ISA's sizes or bits (rerun per ISA in CI)")
    config.addinivalue_line(
        "markers", "all_isas: parametrized over every supported ISA already (skipped by -m 'not all_isas')")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if os.path.basename(str(item.fspath)) in _ISA_SENSITIVE_FILES or _ISA_SENSITIVE_NAME.search(item.name):
            item.add_marker(pytest.mark.isa_sensitive)
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "isa" in params:
            item.add_marker(pytest.mark.all_isas)


def _parametrizes(metafunc, name):
    """Whether the test parametrizes `name` itself (then it is a plain ISA name, not the fixture)."""
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0]
        if name in ([n.strip() for n in names.split(",")] if isinstance(names, str) else names):
            return True
    return False


def pytest_generate_tests(metafunc):
    # Parametrized here rather than with fixture(params=...): the ISA list needs the extension,
    # imported only once a test asks for `isa`.
    if "isa" in metafunc.fixturenames and not _parametrizes(metafunc, "isa"):
        import edgevit_kernels

        metafunc.parametrize("isa", edgevit_kernels.supported_cpu_isas(), indirect=True)


@pytest.fixture
def isa(request):
    """Each ISA this build runs on this CPU in turn, made current with set_cpu_isa; the previous
    ISA is restored afterwards."""
    from lgl_samples import cpu_isa

    with cpu_isa(request.param):
        yield request.param
