"""The main job (edgevit_kernels.__main__ / edgevit-bench): a tiny run end to end, and its flags."""
from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow  # the slowest files: `pytest -m "not slow"` skips them

from edgevit_kernels.__main__ import main


def test_main_tiny_run(tmp_path, capsys):
    chart, out = tmp_path / "chart.png", tmp_path / "out.json"
    rc = main(["--variants", "xxs", "--runs", "2", "--baselines", "eager,fused", "--resolution", "64",
               "--chart", str(chart), "--json", str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0, text

    # header and table
    assert text.startswith("# edgevit-bench: ")
    for word in ("threads", "ISA", "torch", "onnxruntime", "openvino", "B=1", "64x64", "L2",
                 "own process", "matmul rate"):
        assert word in text.splitlines()[0]
    rows = {line.split()[1]: line.split() for line in text.splitlines() if line.startswith("xxs ")}
    assert set(rows) == {"eager", "fused"}
    assert rows["fused"][8] == "100.0%"  # top-1 agreement column
    assert float(rows["fused"][7]) <= 1e-3  # max |d logits|
    assert float(rows["fused"][5]) > 0 and rows["fused"][6].endswith("%")  # GFLOP/s, of matmul
    assert f"chart: {chart}" in text and chart.stat().st_size > 1000
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # JSON
    data = json.loads(out.read_text())
    assert data["machine"]["threads"] >= 1 and data["machine"]["isa"]
    assert data["machine"]["caches"]["l2"] > 0 and data["machine"]["matmul_gflops"] > 0
    assert data["started"][:2] == "20" and "T" in data["started"]
    # the shares use the better of the rates measured before and after the runs
    assert data["machine"]["matmul_gflops"] == max(data["machine"]["matmul_gflops_before_after"])
    for r in data["results"]:
        assert r["matmul_share"] == pytest.approx(r["gflops"] / data["machine"]["matmul_gflops"])
    assert data["config"]["baselines"] == ["eager", "fused"]
    res = {r["path"]: r for r in data["results"]}
    assert set(res) == {"eager", "fused"}
    for r in res.values():
        assert r["variant"] == "xxs" and r["batch"] == 1 and (r["height"], r["width"]) == (64, 64)
        assert len(r["times_ms"]) == 2 and r["median_ms"] > 0 and r["iqr_ms"] >= 0
        assert r["top1_total"] == 16 and r["top1_agree"] == 16
    assert res["eager"]["max_abs_diff"] == 0.0
    assert res["fused"]["max_abs_diff"] <= 1e-3
    assert res["fused"]["speedup_vs_eager"] > 0
    assert "FELL BACK" not in res["fused"]["note"]
    assert res["fused"]["flops"] == res["eager"]["flops"] > 0
    assert "fused_lead" not in res["fused"]
    lead = res["eager"]
    assert lead["fused_lead_min"] <= lead["fused_lead"] <= lead["fused_lead_max"]
    assert "fused lead" in text.splitlines()[1]


def test_block_ratios_pair_the_blocks_of_one_round():
    from edgevit_kernels.bench import block_ratios
    # the machine halves its speed after the first round: both paths' second blocks are slower
    slow = [10, 11, 12, 20, 22, 24, 30]
    fast = [5, 5, 6, 10, 11, 12, 15]
    assert block_ratios(slow, fast, block_runs=3) == pytest.approx([2.2, 2.0, 2.0])
    assert block_ratios(slow, fast[:3], block_runs=3) == pytest.approx([2.2])


def test_main_contention_reports_slowdown(tmp_path, capsys):
    out = tmp_path / "out.json"
    rc = main(["--variants", "xxs", "--runs", "2", "--warmup", "1", "--baselines", "eager,fused",
               "--resolution", "64", "--contention", "--chart", "", "--json", str(out), "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "busy ms" in text and "slowdown" in text and "busy: one other process" in text
    data = json.loads(out.read_text())
    assert data["config"]["contention"] is True
    for r in data["results"]:
        assert len(r["busy_times_ms"]) == 2 and r["busy_median_ms"] > 0
        assert r["slowdown"] == pytest.approx(r["busy_median_ms"] / r["median_ms"])


@pytest.mark.parametrize("argv, message", [
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["--baselines", "eager,tensorrt"], "--baselines: unknown 'tensorrt'"),
    (["--variants", "xxl"], "--variants: unknown 'xxl'"),
    (["--runs", "0"], "--runs must be >= 1"),
    (["--resolution", "16"], "--resolution must be at least 32"),
    (["--resolution", "64", "64", "64"], "--resolution takes H or H W"),
])
def test_main_bad_flags(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: edgevit-bench")
    assert message in err
