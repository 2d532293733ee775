"""d2seg.compat.torch_ops.deform: detectron2's deformable-conv ``_C`` operators on torchvision.

The adapter computes with torchvision's ``deform_conv2d``, so comparing with that op called
directly checks the adaptation (argument order, layouts, offsets, masks, gradients through
detectron2's autograd Functions), not the deformable convolution itself. The independent
references are plain ``conv2d`` for zero and whole-pixel offsets, where a deformable convolution
must equal an ordinary one, and ``gradcheck`` (finite differences) for the gradients.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

from d2seg.compat.torch_ops import deform

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

# (N, C_in, C_out, H, W, kH, kW, stride, padding, dilation, groups, deformable_groups)
CASES = [
    dict(n=2, cin=4, cout=6, h=7, w=8, kh=3, kw=3, stride=1, pad=1, dil=1, groups=1, dg=1),
    dict(n=1, cin=4, cout=4, h=9, w=7, kh=3, kw=3, stride=2, pad=1, dil=1, groups=1, dg=1),
    dict(n=2, cin=4, cout=6, h=9, w=9, kh=3, kw=3, stride=1, pad=2, dil=2, groups=1, dg=1),
    dict(n=2, cin=4, cout=6, h=8, w=7, kh=3, kw=3, stride=1, pad=1, dil=1, groups=2, dg=1),
    dict(n=2, cin=4, cout=6, h=7, w=8, kh=3, kw=3, stride=1, pad=1, dil=1, groups=1, dg=2),
    dict(n=3, cin=8, cout=4, h=10, w=9, kh=3, kw=2, stride=2, pad=2, dil=2, groups=2, dg=2),
    dict(n=1, cin=6, cout=4, h=6, w=6, kh=1, kw=1, stride=1, pad=0, dil=1, groups=2, dg=3),
]
CASE_IDS = [
    "plain", "stride2", "dilation2", "groups2", "dgroups2", "all-mixed", "1x1-dg3",
]


def _out_size(size, k, stride, pad, dil):
    return (size + 2 * pad - (dil * (k - 1) + 1)) // stride + 1


def _make(case, device, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = case
    ho = _out_size(c["h"], c["kh"], c["stride"], c["pad"], c["dil"])
    wo = _out_size(c["w"], c["kw"], c["stride"], c["pad"], c["dil"])
    taps = c["dg"] * c["kh"] * c["kw"]

    def rnd(*shape, scale=1.0, shift=0.0):
        return (torch.rand(*shape, generator=g, dtype=dtype) * scale + shift).to(device)

    x = rnd(c["n"], c["cin"], c["h"], c["w"], scale=2, shift=-1)
    weight = rnd(c["cout"], c["cin"] // c["groups"], c["kh"], c["kw"], scale=2, shift=-1)
    offset = rnd(c["n"], 2 * taps, ho, wo, scale=6, shift=-3)  # reaches outside the image too
    mask = rnd(c["n"], taps, ho, wo)
    bias = rnd(c["cout"], scale=2, shift=-1)
    grad_out = rnd(c["n"], c["cout"], ho, wo, scale=2, shift=-1)
    return x, weight, offset, mask, bias, grad_out


def _v1_args(case):
    """The trailing ints of detectron2's deform_conv_* calls (W before H, as the caller passes)."""
    c = case
    return [c["kw"], c["kh"], c["stride"], c["stride"], c["pad"], c["pad"], c["dil"], c["dil"],
            c["groups"], c["dg"]]


def _v2_args(case, with_bias):
    c = case
    return [c["kh"], c["kw"], c["stride"], c["stride"], c["pad"], c["pad"], c["dil"], c["dil"],
            c["groups"], c["dg"], with_bias]


def _tv(case, x, offset, weight, mask=None, bias=None):
    c = case
    return deform_conv2d(x, offset, weight, bias=bias, stride=c["stride"], padding=c["pad"],
                         dilation=c["dil"], mask=mask)


def _tv_grads(case, x, offset, weight, grad_out, mask=None, bias=None):
    leaves = [t.detach().clone().requires_grad_() if t is not None else None
              for t in (x, offset, weight, mask, bias)]
    out = _tv(case, leaves[0], leaves[1], leaves[2], leaves[3], leaves[4])
    wanted = [t for t in leaves if t is not None]
    grads = iter(torch.autograd.grad(out, wanted, grad_out))
    return [next(grads) if t is not None else None for t in leaves]


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------- against torchvision directly


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_deform_conv_forward_and_backward_match_torchvision(case, device):
    x, weight, offset, _mask, _bias, grad_out = _make(case, device)
    empty = x.new_empty(0)

    output = x.new_empty(0)  # resized in place
    deform.deform_conv_forward(x, weight, offset, output, empty, empty, *_v1_args(case), 64)
    _close(output, _tv(case, x, offset, weight))

    ref_gx, ref_goff, ref_gw, _, _ = _tv_grads(case, x, offset, weight, grad_out)

    grad_input, grad_offset = torch.zeros_like(x), torch.zeros_like(offset)
    deform.deform_conv_backward_input(x, offset, grad_out, grad_input, grad_offset, weight, empty,
                                      *_v1_args(case), 64)
    _close(grad_input, ref_gx)
    _close(grad_offset, ref_goff)

    grad_weight = torch.zeros_like(weight)
    deform.deform_conv_backward_filter(x, offset, grad_out, grad_weight, empty, empty,
                                       *_v1_args(case), 1, 64)
    _close(grad_weight, ref_gw)

    # The CUDA code adds scale * dL/dW into the buffer; so do we.
    deform.deform_conv_backward_filter(x, offset, grad_out, grad_weight, empty, empty,
                                       *_v1_args(case), 0.5, 64)
    _close(grad_weight, 1.5 * ref_gw)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_modulated_deform_conv_forward_and_backward_match_torchvision(case, with_bias, device):
    x, weight, offset, mask, bias, grad_out = _make(case, device, seed=1)
    passed_bias = bias if with_bias else x.new_empty(1)  # detectron2's placeholder
    ref_bias = bias if with_bias else None
    empty = x.new_empty(0)

    output = x.new_empty(_tv(case, x, offset, weight, mask).shape)
    deform.modulated_deform_conv_forward(x, weight, passed_bias, empty, offset, mask, output, empty,
                                         *_v2_args(case, with_bias))
    _close(output, _tv(case, x, offset, weight, mask, ref_bias))

    ref = _tv_grads(case, x, offset, weight, grad_out, mask, ref_bias)
    grads = [torch.zeros_like(t) for t in (x, weight, passed_bias, offset, mask)]
    deform.modulated_deform_conv_backward(x, weight, passed_bias, empty, offset, mask, empty,
                                          *grads, grad_out, *_v2_args(case, with_bias))
    g_input, g_weight, g_bias, g_offset, g_mask = grads
    _close(g_input, ref[0])
    _close(g_offset, ref[1])
    _close(g_weight, ref[2])
    _close(g_mask, ref[3])
    if with_bias:
        _close(g_bias, ref[4])
    else:
        assert not g_bias.any()


def test_float32_forward_matches_torchvision():
    case = CASES[-2]
    x, weight, offset, mask, bias, _ = _make(case, "cpu", dtype=torch.float32)
    empty = x.new_empty(0)
    output = x.new_empty(0)
    deform.modulated_deform_conv_forward(x, weight, bias, empty, offset, mask, output, empty,
                                         *_v2_args(case, True))
    assert output.dtype == torch.float32
    torch.testing.assert_close(output, _tv(case, x, offset, weight, mask, bias))


# ----------------------------------------------------------------- hand-checked layout


def _shift(x, dy, dx):
    """``y[..., u, v] = x[..., u + dy, v + dx]``, zero where that falls outside ``x``."""
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    src_y = slice(max(dy, 0), min(h + dy, h))
    dst_y = slice(max(-dy, 0), min(h - dy, h))
    src_x = slice(max(dx, 0), min(w + dx, w))
    dst_x = slice(max(-dx, 0), min(w - dx, w))
    if src_y.start < src_y.stop and src_x.start < src_x.stop:
        out[..., dst_y, dst_x] = x[..., src_y, src_x]
    return out


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_zero_offset_and_unit_mask_is_plain_conv(case):
    c = case
    x, weight, offset, mask, bias, _ = _make(case, "cpu")
    offset, mask = torch.zeros_like(offset), torch.ones_like(mask)
    conv_args = dict(stride=c["stride"], padding=c["pad"], dilation=c["dil"], groups=c["groups"])
    empty = x.new_empty(0)

    output = torch.empty(0, dtype=x.dtype)
    deform.modulated_deform_conv_forward(x, weight, bias, empty, offset, mask, output, empty,
                                         *_v2_args(case, True))
    _close(output, F.conv2d(x, weight, bias, **conv_args))

    output = torch.empty(0, dtype=x.dtype)
    deform.deform_conv_forward(x, weight, offset, output, empty, empty, *_v1_args(case), 64)
    _close(output, F.conv2d(x, weight, None, **conv_args))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_whole_pixel_offsets_are_a_conv_on_shifted_inputs(case):
    """Offset channel ``2 * (g * kH * kW + i * kW + j)`` is dy and ``+1`` is dx of tap (i, j) in
    deformable group g, which covers the g-th contiguous block of input channels.

    Every (group, tap) gets its own integer (dy, dx), constant over the output; the reference
    convolves the input shifted by that amount, restricted to that group's channels and that tap.
    """
    c = case
    x, weight, offset, _mask, _bias, _ = _make(case, "cpu")
    kh, kw, dg = c["kh"], c["kw"], c["dg"]
    shifts = {}
    gen = torch.Generator().manual_seed(7)
    offset = torch.zeros_like(offset)
    for g, i, j in itertools.product(range(dg), range(kh), range(kw)):
        dy, dx = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
        shifts[g, i, j] = (dy, dx)
        k = g * kh * kw + i * kw + j
        offset[:, 2 * k] = dy
        offset[:, 2 * k + 1] = dx

    block = c["cin"] // dg
    padded = F.pad(x, [c["pad"]] * 4)  # shift after padding: a shift can pull image into the pad

    def tap_term(g, i, j):
        dy, dx = shifts[g, i, j]
        xs = torch.zeros_like(padded)
        xs[:, g * block:(g + 1) * block] = _shift(padded[:, g * block:(g + 1) * block], dy, dx)
        tap = torch.zeros_like(weight)
        tap[:, :, i, j] = weight[:, :, i, j]
        return F.conv2d(xs, tap, stride=c["stride"], dilation=c["dil"], groups=c["groups"])

    expected = sum(tap_term(*key) for key in shifts)

    empty = x.new_empty(0)
    output = torch.empty(0, dtype=x.dtype)
    deform.deform_conv_forward(x, weight, offset, output, empty, empty, *_v1_args(case), 64)
    _close(output, expected)

    # Same through the modulated op, with the mask scaling each (group, tap) separately.
    mask = torch.zeros(offset.shape[0], dg * kh * kw, *offset.shape[2:], dtype=x.dtype)
    mask[:, 0] = 0.5
    mask[:, 1:] = 1.0
    output = torch.empty(0, dtype=x.dtype)
    deform.modulated_deform_conv_forward(x, weight, x.new_empty(1), empty, offset, mask, output,
                                         empty, *_v2_args(case, False))
    _close(output, expected - 0.5 * tap_term(0, 0, 0))


def test_half_pixel_offset_interpolates_bilinearly():
    x = torch.arange(20, dtype=torch.float64).reshape(1, 1, 4, 5)
    weight = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    offset = torch.zeros(1, 2, 4, 5, dtype=torch.float64)
    offset[:, 0] = 0.5  # dy
    offset[:, 1] = 0.25  # dx
    output = torch.empty(0, dtype=torch.float64)
    empty = x.new_empty(0)
    deform.deform_conv_forward(x, weight, offset, output, empty, empty,
                               1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 64)
    # Interior samples: value(y + .5, x + .25) = 5 * (y + .5) + (x + .25); beyond the last
    # row/column the missing neighbour counts as zero.
    expected = 5 * (torch.arange(4.0)[:, None] + 0.5) + torch.arange(5.0) + 0.25
    _close(output[0, 0, :3, :4], expected[:3, :4].double())
    _close(output[0, 0, 3, 0], torch.tensor(0.5 * 15 * 0.75 + 0.5 * 16 * 0.25, dtype=torch.float64))


def test_rejects_offsets_that_disagree_with_deformable_groups():
    case = CASES[0]
    x, weight, offset, _mask, _bias, _ = _make(case, "cpu")
    args = _v1_args(case)
    args[-1] = 2  # offset was built for one deformable group
    with pytest.raises(ValueError, match="offset must have"):
        deform.deform_conv_forward(x, weight, offset, x.new_empty(0), x.new_empty(0),
                                   x.new_empty(0), *args, 64)


# ----------------------------------------------------------------- through detectron2's wrappers


@pytest.fixture
def d2_deform(request):
    module = pytest.importorskip("detectron2.layers.deform_conv", exc_type=ImportError)
    from detectron2 import _C

    if getattr(_C, "deform_conv_forward", None) is not deform.deform_conv_forward:
        pytest.skip("detectron2._C is not d2seg's PyTorch stand-in")
    # Upstream refuses CPU tensors here; the deform_conv.py rewrites in source_fixes route them
    # to _C, so these tests also fail if those rewrites are missing.
    return module, request.param


@pytest.mark.parametrize("d2_deform", DEVICES, indirect=True)
@pytest.mark.parametrize("case", [CASES[0], CASES[5]], ids=["plain", "all-mixed"])
def test_gradcheck_through_detectron2_deform_conv(d2_deform, case):
    module, device = d2_deform
    small = dict(case, n=1, h=5, w=5)
    x, weight, offset, _mask, _bias, _ = _make(small, device)
    c = small

    def fn(x, offset, weight):
        return module.deform_conv(x, offset, weight, c["stride"], c["pad"], c["dil"],
                                  c["groups"], c["dg"])

    inputs = tuple(t.requires_grad_() for t in (x, offset, weight))
    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("d2_deform", DEVICES, indirect=True)
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("case", [CASES[0], CASES[5]], ids=["plain", "all-mixed"])
def test_gradcheck_through_detectron2_modulated_deform_conv(d2_deform, case, with_bias):
    module, device = d2_deform
    small = dict(case, n=1, h=5, w=5)
    x, weight, offset, mask, bias, _ = _make(small, device, seed=3)
    c = small
    tensors = [x, offset, mask, weight] + ([bias] if with_bias else [])

    def fn(x, offset, mask, weight, bias=None):
        return module.modulated_deform_conv(x, offset, mask, weight, bias, c["stride"], c["pad"],
                                            c["dil"], c["groups"], c["dg"])

    inputs = tuple(t.requires_grad_() for t in tensors)
    assert torch.autograd.gradcheck(fn, inputs)
