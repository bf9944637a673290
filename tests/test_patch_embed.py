"""edgevit::patch_embed, patch_embed_prepare and patch_embed_prepared (EdgeViT's PatchEmbed:
p x p stride-p convolution + LayerNorm, channels_last output) against the pure-PyTorch reference
``edgevit_kernels.patch_embed_reference``, in every ISA this CPU has.

Tolerances: float32 2e-5 relative to the output's scale (max(1, max |ref|)): the convolution is
a sum of up to p*p*Cin = 576 products in another order than oneDNN's, and LayerNorm's statistics
are summed in another order than ATen's; differences seen are ~1e-6. float64: 1e-10.
"""
import pytest
import torch

import edgevit_kernels
from lgl_samples import cpu_isa
from edgevit_kernels import (patch_embed, patch_embed_prepare, patch_embed_prepared,
                             patch_embed_reference)

ISAS = edgevit_kernels.supported_cpu_isas()

# (B, Cin, H, W, Cout, p): the four PatchEmbeds of XXS and of XS/S at 224x224, then awkward ones
# (channel tails, sides p does not divide, one patch, p = 1; p = 4 and 2, the patch sizes gathered
# with compile-time copies, with blocks of 32 pixels that cross rows and images).
EDGEVIT_SHAPES = [(1, 3, 224, 224, 36, 4), (1, 36, 56, 56, 72, 2), (1, 72, 28, 28, 144, 2),
                  (1, 144, 14, 14, 288, 2), (1, 3, 224, 224, 48, 4), (1, 48, 56, 56, 96, 2),
                  (1, 96, 28, 28, 240, 2), (1, 240, 14, 14, 384, 2)]
AWKWARD_SHAPES = [(2, 5, 9, 11, 17, 3), (1, 1, 1, 1, 1, 1), (3, 7, 8, 8, 33, 2), (1, 2, 5, 5, 3, 5),
                  (2, 16, 6, 7, 40, 1), (3, 3, 18, 23, 20, 4), (2, 4, 13, 9, 12, 4)]


def make(B, Cin, H, W, Cout, p, dtype=torch.float32, channels_last=False, bias=True, affine=True,
         seed=0):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)

    x = rnd(B, Cin, H, W)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = rnd(Cout, Cin, p, p, scale=(Cin * p * p) ** -0.5)
    return x, weight, rnd(Cout) if bias else None, (1 + rnd(Cout, scale=0.3)) if affine else None, \
        rnd(Cout, scale=0.3) if affine else None


def check(x, weight, bias, nw, nb, layer_norm=True, eps=1e-6):
    if not layer_norm:
        nw = nb = None
    ref = patch_embed_reference(x, weight, bias, layer_norm, nw, nb, eps)
    out = patch_embed(x, weight, bias, layer_norm, nw, nb, eps)
    prepared = patch_embed_prepare(weight, bias)
    again = patch_embed_prepared(x, prepared, weight.shape[0], weight.shape[2], layer_norm, nw, nb,
                                 eps)
    assert torch.equal(again, out)  # the same kernels
    assert out.shape == ref.shape and out.dtype == ref.dtype
    assert out.is_contiguous(memory_format=torch.channels_last)
    if ref.dtype == torch.float64:
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    else:
        scale = max(1.0, ref.abs().max().item())
        torch.testing.assert_close(out, ref, rtol=2e-5, atol=2e-5 * scale)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("shape", EDGEVIT_SHAPES, ids=str)
def test_edgevit_shapes(shape, channels_last, isa):
    check(*make(*shape, channels_last=channels_last))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", AWKWARD_SHAPES, ids=str)
def test_awkward_shapes(shape, dtype, isa):
    for layer_norm in (True, False):
        check(*make(*shape, dtype=dtype), layer_norm=layer_norm)


def test_float64_edgevit_shape():
    check(*make(1, 36, 56, 56, 72, 2, dtype=torch.float64, channels_last=True))


def test_no_bias_no_affine_and_strided_input(isa):
    x, w, b, nw, nb = make(2, 8, 20, 20, 24, 2, bias=False, affine=False)
    check(x[:, :, 1:18, ::2], w, b, nw, nb)  # non-contiguous, odd sides


def test_bitwise_identical_for_any_thread_count():
    args = make(2, 36, 56, 56, 72, 2, channels_last=True)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = patch_embed(*args[:3], True, *args[3:], 1e-6)
        torch.set_num_threads(max(2, threads))
        many = patch_embed(*args[:3], True, *args[3:], 1e-6)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)


def test_opcheck():
    x, w, b, nw, nb = make(2, 6, 8, 10, 12, 2)
    torch.library.opcheck(torch.ops.edgevit.patch_embed.default, (x, w, b, True, nw, nb, 1e-5))
    torch.library.opcheck(torch.ops.edgevit.patch_embed_prepare.default, (w, b))
    prepared = patch_embed_prepare(w, b)
    torch.library.opcheck(torch.ops.edgevit.patch_embed_prepared.default,
                          (x, prepared, 12, 2, True, nw, nb, 1e-5))


def test_gradients_against_reference():
    x, w, b, nw, nb = make(1, 2, 4, 4, 3, 2, dtype=torch.float64)
    for t in (x, w, b, nw, nb):
        t.requires_grad_()
    torch.autograd.gradcheck(lambda x, w, b, nw, nb: patch_embed(x, w, b, True, nw, nb, 1e-5),
                             (x, w, b, nw, nb))


def test_torch_compile_fullgraph():
    x, w, b, nw, nb = make(1, 6, 8, 8, 12, 2)
    prepared = patch_embed_prepare(w, b)
    f = torch.compile(lambda x, p: patch_embed_prepared(x, p, 12, 2, True, nw, nb, 1e-6) + 1,
                      fullgraph=True, backend="eager")
    torch.testing.assert_close(f(x, prepared), patch_embed(x, w, b, True, nw, nb, 1e-6) + 1)


def test_errors():
    x, w, b, nw, nb = make(1, 4, 8, 8, 6, 2)
    with pytest.raises(RuntimeError, match=r"patch_embed: weight must be \[Cout, Cin, p, p\] \(a square patch\), got shape \[6, 4, 2, 3\]"):
        patch_embed(x, w[..., :1].repeat(1, 1, 1, 3), b, True, nw, nb)
    with pytest.raises(RuntimeError, match=r"patch_embed: x must be \[B, Cin, H, W\] with Cin = 4 \(the weight's\), got shape \[1, 5, 8, 8\]"):
        patch_embed(torch.randn(1, 5, 8, 8), w, b, True, nw, nb)
    with pytest.raises(RuntimeError, match=r"patch_embed: x must be at least one patch \(2x2\) in H and W, got 1x8"):
        patch_embed(x[:, :, :1], w, b, True, nw, nb)
    with pytest.raises(RuntimeError, match=r"patch_embed: bias must have shape \[6\], got \[4\]"):
        patch_embed(x, w, b[:4], True, nw, nb)
    with pytest.raises(RuntimeError, match="norm_weight and norm_bias must be both given or both None"):
        patch_embed(x, w, b, True, nw, None)
    with pytest.raises(RuntimeError, match="norm_weight and norm_bias must be None when layer_norm is False"):
        patch_embed(x, w, b, False, nw, nb)
    with pytest.raises(RuntimeError, match=r"patch_embed: norm_weight must have shape \[6\], got \[5\]"):
        patch_embed(x, w, b, True, nw[:5], nb[:5])
    with pytest.raises(RuntimeError, match=r"x must have the dtype and device of weight \(Float, cpu\), got Double, cpu"):
        patch_embed(x.double(), w, b, True, nw, nb)
    prepared = patch_embed_prepare(w, b)
    with pytest.raises(RuntimeError, match="prepared holds a 6-channel, 2x2 patch weight, but out_channels = 7 and patch = 2"):
        patch_embed_prepared(x, prepared, 7, 2, True, nw, nb)
    with pytest.raises(RuntimeError, match="prepared was not made by edgevit::patch_embed_prepare"):
        patch_embed_prepared(x, torch.zeros_like(prepared), 6, 2)
    with pytest.raises(RuntimeError, match=r"prepared has \d+ elements, expected \d+"):
        patch_embed_prepared(x, prepared[:-1].clone(), 6, 2)


@pytest.mark.skipif(len(ISAS) < 2, reason="needs two ISAs")
def test_prepared_for_another_isa():
    x, w, b, nw, nb = make(1, 4, 8, 8, 6, 2)
    with cpu_isa(ISAS[-1]):
        prepared = patch_embed_prepare(w, b)
    with cpu_isa(ISAS[0]), pytest.raises(
            RuntimeError, match=f"prepared was packed for ISA '{ISAS[-1]}', but the op now runs "
                                f"'{ISAS[0]}'"):
        patch_embed_prepared(x, prepared, 6, 2)
