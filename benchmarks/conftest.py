import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))


def pytest_configure(config):
    # Raw --benchmark-json output goes to the git-ignored benchmarks/results/raw/, which a fresh
    # clone lacks; pytest-benchmark writes the file only after the whole run, so a missing folder
    # would lose the run.
    path = config.getoption("benchmark_json", None)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
