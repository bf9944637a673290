import os
import sys

import pytest

# Make tests/ importable as a flat module directory (lgl_samples, official_state_dict_keys).
sys.path.insert(0, os.path.dirname(__file__))


def pytest_generate_tests(metafunc):
    # Parametrized here rather than with fixture(params=...): the ISA list needs the extension,
    # imported only once a test asks for `isa`.
    if "isa" in metafunc.fixturenames:
        import edgevit_kernels

        metafunc.parametrize("isa", edgevit_kernels.supported_cpu_isas(), indirect=True)


@pytest.fixture
def isa(request):
    """Each ISA this build runs on this CPU in turn, made current with set_cpu_isa; the previous
    ISA is restored afterwards."""
    from lgl_samples import cpu_isa

    with cpu_isa(request.param):
        yield request.param
