"""The kernels an aarch64 CPU gets: NEON, chosen at run time (`.ci/aarch64` runs this under qemu)."""
import os
import platform

import pytest

import edgevit_kernels

AARCH64 = platform.machine().lower() in ("aarch64", "arm64")


@pytest.mark.skipif(not AARCH64, reason="aarch64 only")
@pytest.mark.skipif("EDGEVIT_CPU_ISA" in os.environ, reason="EDGEVIT_CPU_ISA forces the ISA")
def test_neon_is_selected_on_aarch64():
    # NEON is the aarch64 baseline, so every aarch64 CPU (and qemu's) must get it, never scalar.
    assert edgevit_kernels.supported_cpu_isas() == ["scalar", "neon"]
    assert edgevit_kernels.cpu_isa() == "neon"


def test_emulated_run_is_on_aarch64():
    # .ci/aarch64 sets EDGEVIT_EMULATED; an x86 Python picked up by mistake must not pass as Arm.
    if os.environ.get("EDGEVIT_EMULATED") != "1":
        pytest.skip("not under .ci/aarch64")
    assert AARCH64, f"EDGEVIT_EMULATED=1 but platform.machine() is {platform.machine()!r}"
