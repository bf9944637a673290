"""Deploy paths of a fused model (docs/deploy.md): ONNX with both exporters (run by ONNX Runtime),
torch.export and torch.compile(fullgraph=True) of the backbone, AOTInductor. torch.export and
torch.compile of the classifier are in test_models.py."""
import pytest
import torch

import edgevit

from test_models import _randomize_  # tests/ is on sys.path (conftest.py)


def _fused_pair(features_only=False):
    torch.manual_seed(0)
    ref = _randomize_(edgevit.edgevit_xxs()).eval()
    fused = edgevit.edgevit_xxs(use_fused=True, features_only=features_only).eval()
    edgevit.load_checkpoint(fused, ref.state_dict())
    if features_only:
        ref = edgevit.load_checkpoint(edgevit.edgevit_xxs(features_only=True), ref.state_dict()).eval()
    return ref, fused


def _tol(y):
    return 1e-4 * max(1.0, y.abs().max().item())


def _count_prepared(monkeypatch):
    calls = {"n": 0}
    real = torch.ops.edgevit.lgl_fused_prepared

    def spy(*args):
        calls["n"] += 1
        return real(*args)

    monkeypatch.setattr(torch.ops.edgevit, "lgl_fused_prepared", spy)
    return calls


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_onnx_export_of_fused_model(dynamo, tmp_path, monkeypatch):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    if dynamo:
        pytest.importorskip("onnxscript")
    _, fused = _fused_pair()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected = fused(x)
    path = str(tmp_path / "m.onnx")
    torch.onnx.export(fused, (x,), path, dynamo=dynamo, input_names=["x"], output_names=["logits"])
    graph = onnx.load(path).graph
    assert not [n.op_type for n in graph.node if n.domain.startswith("edgevit")]
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    y = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    assert y.shape == expected.shape
    assert (y - expected).abs().max() <= _tol(expected)
    # The export left the model as it was: fused, on its plan.
    assert not torch.onnx.is_in_onnx_export()
    calls = _count_prepared(monkeypatch)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), expected, rtol=0, atol=0)
    assert calls["n"] == 7


def test_torch_export_and_compile_of_fused_backbone():
    ref, fused = _fused_pair(features_only=True)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = ref(x)
    program = torch.export.export(fused, (x,))
    assert sum("edgevit.lgl_fused" in str(n.target) for n in program.graph.nodes) == 7
    torch._dynamo.reset()
    compiled = torch.compile(fused, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        for outs in (program.module()(x), compiled(x)):
            assert len(outs) == 4
            for out, exp in zip(outs, expected):
                assert out.shape == exp.shape and (out - exp).abs().max() <= _tol(exp)
    torch._dynamo.reset()


@pytest.mark.slow
def test_aot_inductor_of_fused_model(tmp_path):
    """About a minute on 2 cores: inductor compiles the graph around the edgevit ops, which the
    package calls through the dispatcher (the process that loads it imports edgevit_kernels)."""
    ref, fused = _fused_pair()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = ref(x)
    program = torch.export.export(fused, (x,))
    assert sum("edgevit.lgl_fused" in str(n.target) for n in program.graph.nodes) == 7
    path = torch._inductor.aoti_compile_and_package(program, package_path=str(tmp_path / "m.pt2"))
    runner = torch._inductor.aoti_load_package(path)
    y = runner(x)
    assert y.shape == expected.shape and (y - expected).abs().max() <= _tol(expected)
