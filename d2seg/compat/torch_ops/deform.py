"""Deformable convolution operators of ``detectron2._C``, served by ``torchvision.ops``.

detectron2 v0.6 ships CUDA kernels for (modulated) deformable convolution and reaches them
through the autograd Functions in ``detectron2/layers/deform_conv.py``. torchvision's
``deform_conv2d`` computes the same operator on any device (same offset/mask layout, same
sampling positions, same zero-outside bilinear sampling), so these five functions keep
detectron2's call signatures and fill the caller's pre-allocated buffers in place, with the
backward passes obtained by autograd through torchvision's forward.

Layout shared by detectron2's kernels and torchvision (checked by the tests):

* ``offset``: ``(N, deformable_groups * kH * kW * 2, H_out, W_out)``; for each deformable group,
  for each kernel tap ``(i, j)`` in row-major order, the pair ``(dy, dx)``;
* ``mask``: ``(N, deformable_groups * kH * kW, H_out, W_out)``, same ordering without the pair;
* deformable group ``g`` covers input channels ``[g * C / dg, (g + 1) * C / dg)``;
* tap ``(i, j)`` of output ``(y, x)`` samples ``(y * sH - pH + i * dilH + dy, x * sW - pW + j * dilW + dx)``.

``columns``, ``ones`` and ``im2col_step`` are scratch/tuning arguments of the CUDA code; they are
accepted and ignored. Buffers the C++ code accumulates into (``grad_input``, ``grad_weight``,
``grad_bias``) are accumulated into here too; ``grad_offset`` and ``grad_mask`` are assigned.
detectron2 always passes zero-filled gradient buffers, so both readings agree.
"""

from __future__ import annotations

import torch
from torchvision.ops import deform_conv2d

__all__ = [
    "deform_conv_forward",
    "deform_conv_backward_input",
    "deform_conv_backward_filter",
    "modulated_deform_conv_forward",
    "modulated_deform_conv_backward",
]


def _check_shapes(input, weight, offset, mask, kH, kW, groups, deformable_groups) -> None:
    """Reject arguments torchvision would silently reinterpret (it infers both group counts)."""
    if input.dim() != 4:
        raise ValueError(f"deformable conv expects a 4D input, got {input.dim()}D")
    if tuple(weight.shape[2:]) != (kH, kW):
        raise ValueError(f"kernel size ({kH}, {kW}) does not match weight shape {tuple(weight.shape)}")
    channels = input.shape[1]
    if weight.shape[1] * groups != channels:
        raise ValueError(
            f"input has {channels} channels but weight {tuple(weight.shape)} with groups={groups} "
            f"expects {weight.shape[1] * groups}"
        )
    if weight.shape[0] % groups != 0:
        raise ValueError(f"out_channels {weight.shape[0]} is not divisible by groups={groups}")
    if channels % deformable_groups != 0:
        raise ValueError(f"{channels} channels are not divisible by deformable_groups={deformable_groups}")
    taps = deformable_groups * kH * kW
    if offset.dim() != 4 or offset.shape[1] != 2 * taps:
        raise ValueError(
            f"offset must have {2 * taps} channels (2 * deformable_groups * kH * kW), "
            f"got shape {tuple(offset.shape)}"
        )
    if mask is not None and (mask.dim() != 4 or mask.shape[1] != taps):
        raise ValueError(
            f"mask must have {taps} channels (deformable_groups * kH * kW), got shape {tuple(mask.shape)}"
        )


def _write(buffer: torch.Tensor, value: torch.Tensor) -> None:
    """Assign ``value`` into a caller-owned buffer, resizing it if it was passed empty."""
    if buffer.shape != value.shape:
        buffer.resize_(value.shape)
    buffer.copy_(value)


def _accumulate(buffer: torch.Tensor, value: torch.Tensor, alpha: float = 1.0) -> None:
    """Add ``value`` into a caller-owned buffer (an empty buffer is first zero-filled)."""
    if buffer.shape != value.shape:
        if buffer.numel() != 0:
            raise ValueError(f"gradient buffer of shape {tuple(buffer.shape)} cannot hold {tuple(value.shape)}")
        buffer.resize_(value.shape).zero_()
    buffer.add_(value, alpha=alpha)


def _grads(output_grad, tensors, wanted, run):
    """Recompute ``run(*tensors)`` with grad enabled and return d(output)/d(wanted tensors).

    ``wanted`` holds one bool per tensor; unwanted (or ``None``) entries come back as ``None``.
    """
    with torch.enable_grad():
        leaves = [
            t.detach().requires_grad_(w) if t is not None else None for t, w in zip(tensors, wanted)
        ]
        out = run(*leaves)
        targets = [t for t, w in zip(leaves, wanted) if w and t is not None]
        # (under autocast torchvision computes in float32 while the caller's grad may be half)
        computed = iter(torch.autograd.grad(out, targets, output_grad.to(out.dtype), allow_unused=True))
    result = []
    for t, w in zip(leaves, wanted):
        g = next(computed) if (w and t is not None) else None
        if g is None and w and t is not None:
            g = torch.zeros_like(t)
        result.append(g)
    return result


# --------------------------------------------------------------------------- DCN v1 (no mask)


def _deform_v1(input, offset, weight, dH, dW, padH, padW, dilH, dilW):
    return deform_conv2d(
        input, offset, weight, stride=(dH, dW), padding=(padH, padW), dilation=(dilH, dilW)
    )


def deform_conv_forward(
    input, weight, offset, output, columns, ones,
    kW, kH, dW, dH, padW, padH, dilationW, dilationH,
    groups, deformable_groups, im2col_step,
):
    """Deformable convolution (v1: no mask, no bias); the result is written into ``output``."""
    _check_shapes(input, weight, offset, None, kH, kW, groups, deformable_groups)
    result = _deform_v1(input, offset, weight, dH, dW, padH, padW, dilationH, dilationW)
    _write(output, result)
    return output


def deform_conv_backward_input(
    input, offset, grad_output, grad_input, grad_offset, weight, columns,
    kW, kH, dW, dH, padW, padH, dilW, dilH,
    groups, deformable_groups, im2col_step,
):
    """Gradients w.r.t. ``input`` (added into ``grad_input``) and ``offset`` (written into ``grad_offset``)."""
    _check_shapes(input, weight, offset, None, kH, kW, groups, deformable_groups)
    g_input, g_offset, _ = _grads(
        grad_output,
        (input, offset, weight),
        (True, True, False),
        lambda x, o, w: _deform_v1(x, o, w, dH, dW, padH, padW, dilH, dilW),
    )
    _accumulate(grad_input, g_input)
    _write(grad_offset, g_offset)


def deform_conv_backward_filter(
    input, offset, grad_output, grad_weight, columns, ones,
    kW, kH, dW, dH, padW, padH, dilW, dilH,
    groups, deformable_groups, scale, im2col_step,
):
    """Gradient w.r.t. ``weight``, scaled by ``scale`` and added into ``grad_weight`` (as the CUDA code does)."""
    if tuple(grad_weight.shape[2:]) != (kH, kW) or grad_weight.dim() != 4:
        raise ValueError(f"grad_weight of shape {tuple(grad_weight.shape)} is not a ({kH}, {kW}) kernel")
    # The weight's values do not enter its own gradient: only its shape is needed.
    weight = grad_weight.new_zeros(grad_weight.shape)
    _check_shapes(input, weight, offset, None, kH, kW, groups, deformable_groups)
    _, _, g_weight = _grads(
        grad_output,
        (input, offset, weight),
        (False, False, True),
        lambda x, o, w: _deform_v1(x, o, w, dH, dW, padH, padW, dilH, dilW),
    )
    _accumulate(grad_weight, g_weight, alpha=scale)


# --------------------------------------------------------------------------- DCN v2 (modulated)


def _deform_v2(input, offset, mask, weight, bias, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w):
    return deform_conv2d(
        input,
        offset,
        weight,
        bias=bias,
        stride=(stride_h, stride_w),
        padding=(pad_h, pad_w),
        dilation=(dil_h, dil_w),
        mask=mask,
    )


def modulated_deform_conv_forward(
    input, weight, bias, ones, offset, mask, output, columns,
    kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
    group, deformable_group, with_bias,
):
    """Modulated deformable convolution (v2); ``bias`` is a placeholder unless ``with_bias``."""
    _check_shapes(input, weight, offset, mask, kernel_h, kernel_w, group, deformable_group)
    result = _deform_v2(
        input, offset, mask, weight, bias if with_bias else None,
        stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
    )
    _write(output, result)
    return output


def modulated_deform_conv_backward(
    input, weight, bias, ones, offset, mask, columns,
    grad_input, grad_weight, grad_bias, grad_offset, grad_mask, grad_output,
    kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
    group, deformable_group, with_bias,
):
    """All five gradients of the modulated forward; ``grad_bias`` is left alone unless ``with_bias``."""
    _check_shapes(input, weight, offset, mask, kernel_h, kernel_w, group, deformable_group)
    g_input, g_offset, g_mask, g_weight, g_bias = _grads(
        grad_output,
        (input, offset, mask, weight, bias if with_bias else None),
        (True, True, True, True, bool(with_bias)),
        lambda x, o, m, w, b: _deform_v2(
            x, o, m, w, b, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w
        ),
    )
    _accumulate(grad_input, g_input)
    _accumulate(grad_weight, g_weight)
    _write(grad_offset, g_offset)
    _write(grad_mask, g_mask)
    if with_bias:
        _accumulate(grad_bias, g_bias)
