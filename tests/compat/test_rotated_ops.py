"""d2seg.compat.torch_ops.rotated: detectron2's rotated-box ``_C`` operators in PyTorch.

References are independent of the module under test: shapely polygons built from the corner
formula of detectron2's ``RotatedBoxes`` docs, a brute-force greedy NMS loop, torchvision's
``roi_align(aligned=True)`` (directly, on ``torch.rot90``-turned feature maps, and through
autograd), and ``torch.autograd.gradcheck``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from shapely.geometry import Polygon
from torchvision.ops import roi_align

from d2seg.compat.torch_ops import rotated

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# ----------------------------------------------------------------------------- references
def _polygon(box) -> Polygon:
    """Corners from the RotatedBoxes docstring: (xr, yr) = R(theta) applied to (x, y) offsets."""
    xc, yc, w, h, a = (float(v) for v in box)
    t = math.radians(a)
    pts = []
    for dx, dy in ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)):
        yr = math.cos(t) * dy - math.sin(t) * dx + yc
        xr = math.sin(t) * dy + math.cos(t) * dx + xc
        pts.append((xr, yr))
    return Polygon(pts)


def _shapely_iou(b1, b2) -> float:
    if float(b1[2]) * float(b1[3]) < 1e-14 or float(b2[2]) * float(b2[3]) < 1e-14:
        return 0.0
    p1, p2 = _polygon(b1), _polygon(b2)
    inter = p1.intersection(p2).area
    return inter / (p1.area + p2.area - inter)


def _brute_nms(boxes, scores, thr):
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    keep, removed = [], set()
    for a, i in enumerate(order):
        if i in removed:
            continue
        keep.append(i)
        for j in order[a + 1 :]:
            if j not in removed and _shapely_iou(boxes[i], boxes[j]) > thr:
                removed.add(j)
    return keep


def _iou_cases() -> torch.Tensor:
    """Pairs ``[P, 2, 5]``: random boxes plus the edge cases."""
    g = torch.Generator().manual_seed(0)
    n = 420
    ctr = torch.rand(n, 2, 2, generator=g) * 20
    size = torch.rand(n, 2, 2, generator=g) * 14 + 0.5
    ang = (torch.rand(n, 2, 1, generator=g) - 0.5) * 800  # beyond +-180 too
    pairs = [torch.cat((ctr, size, ang), dim=2)]
    base = torch.cat((torch.rand(20, 2, generator=g) * 20, torch.rand(20, 2, generator=g) * 10 + 1,
                      (torch.rand(20, 1, generator=g) - 0.5) * 720), dim=1)
    same = lambda b, da: torch.cat((b[:, :4], b[:, 4:] + da), dim=1)  # noqa: E731
    pairs.append(torch.stack((base, base), 1))  # identical
    pairs.append(torch.stack((base, same(base, 180.0)), 1))  # same region, +180
    pairs.append(torch.stack((base, same(base, -360.0)), 1))  # same region, -360
    pairs.append(torch.stack((base, same(base, 1e-4)), 1))  # nearly collinear edges
    small = torch.cat((base[:, :2] + 0.1, base[:, 2:4] * 0.3, base[:, 4:] + 17), dim=1)
    pairs.append(torch.stack((base, small), 1))  # contained
    pairs.append(torch.stack((small, base), 1))
    extra = torch.tensor([
        # touching along an edge / at a corner
        [[0, 0, 2, 2, 0], [2, 0, 2, 2, 0]],
        [[0, 0, 2, 2, 0], [2, 2, 2, 2, 0]],
        [[0, 0, 2, 2, 0], [0, 2, 2, 2, 90]],
        [[5, 5, 4, 2, 30], [5 + 4 * math.cos(math.radians(30)), 5 - 4 * math.sin(math.radians(30)), 4, 2, 30]],
        # overlapping along a shared edge line
        [[0, 0, 2, 2, 0], [1, 0, 2, 2, 0]],
        [[0, 0, 4, 2, 0], [0, 0, 2, 4, 0]],
        [[5, 3, 4, 2, 90], [5, 3, 2, 4, 0]],  # same region by the docstring example
        [[5, 3, 4, 2, -90], [5, 3, 4, 2, 90]],
        [[0, 0, 3, 3, 0], [0, 0, 3, 3, 45]],
        [[0, 0, 3, 3, 0], [0, 0, 3, 3, 90]],
        [[10, 10, 6, 1, 0], [10, 10, 6, 1, 90]],  # a cross
        # far apart
        [[0, 0, 2, 2, 0], [100, 100, 2, 2, 10]],
        # zero-size boxes
        [[0, 0, 0, 2, 0], [0, 0, 2, 2, 0]],
        [[0, 0, 2, 0, 30], [0, 0, 2, 2, 0]],
        [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
        [[1, 1, 0, 3, 45], [1, 1, 0, 3, 45]],
        # large coordinates
        [[1000.5, 2000.25, 30, 10, 33], [1003, 2001, 25, 12, -71]],
        [[1000.5, 2000.25, 30, 10, 33], [1000.5, 2000.25, 30, 10, 33]],
        # tiny boxes
        [[0.3, 0.3, 1e-3, 2e-3, 10], [0.3, 0.3, 2e-3, 1e-3, 80]],
    ], dtype=torch.float32)
    pairs.append(extra)
    return torch.cat(pairs, dim=0)


# ----------------------------------------------------------------------------- box_iou_rotated
def test_corner_convention_matches_docstring_example():
    corners = rotated._corners(torch.tensor([[5.0, 3, 4, 2, 90]], dtype=torch.float64))[0]
    expected = torch.tensor([[4.0, 5], [4, 1], [6, 1], [6, 5]], dtype=torch.float64)  # A, B, C, D
    assert torch.allclose(corners, expected, atol=1e-12)
    ref = np.asarray(_polygon([5, 3, 4, 2, 90]).exterior.coords)[:4]
    assert np.allclose(ref, expected.numpy(), atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_box_iou_rotated_matches_shapely(device):
    pairs = _iou_cases()
    assert pairs.shape[0] >= 500
    ref = torch.tensor([_shapely_iou(a, b) for a, b in pairs.tolist()], dtype=torch.float64)
    b1, b2 = pairs[:, 0].to(device), pairs[:, 1].to(device)
    full = rotated.box_iou_rotated(b1, b2)
    assert full.dtype == torch.float32 and full.shape == (len(pairs), len(pairs))
    got = full.diagonal().double().cpu()
    err = (got - ref).abs()
    assert err.max() < 1e-4, (err.argmax(), got[err.argmax()], ref[err.argmax()])
    # the off-diagonal entries of the full matrix too (a sample)
    idx = torch.randint(len(pairs), (300, 2), generator=torch.Generator().manual_seed(1))
    off = torch.tensor([_shapely_iou(pairs[i, 0].tolist(), pairs[j, 1].tolist()) for i, j in idx.tolist()])
    assert (full.cpu()[idx[:, 0], idx[:, 1]].double() - off).abs().max() < 1e-4


def test_box_iou_rotated_special_values():
    b = torch.tensor([[10.0, 10, 8, 4, 30], [10.0, 10, 8, 4, 30 + 360], [40.0, 40, 6, 6, -45],
                      [3.0, 3, 0, 5, 0]])
    iou = rotated.box_iou_rotated(b, b)
    assert torch.allclose(iou[:3, :3].diagonal(), torch.ones(3), atol=1e-6)
    assert iou[0, 1] == pytest.approx(1.0, abs=1e-6)
    assert iou[0, 2] == 0 and iou[3, 3] == 0  # disjoint; zero-size box
    assert torch.equal(iou, iou.T)
    # contained box: IoU is the area ratio
    inner = torch.tensor([[0.0, 0, 10, 10, 20], [0.5, -0.5, 2, 3, 77]])
    assert rotated.box_iou_rotated(inner[:1], inner[1:])[0, 0] == pytest.approx(6 / 100, abs=1e-6)


def test_box_iou_rotated_empty_and_dtypes():
    b = torch.rand(3, 5) * 10
    assert rotated.box_iou_rotated(b[:0], b).shape == (0, 3)
    assert rotated.box_iou_rotated(b, b[:0]).shape == (3, 0)
    r64 = rotated.box_iou_rotated(b.double(), b.double())
    assert r64.dtype == torch.float32
    assert torch.allclose(r64, rotated.box_iou_rotated(b, b), atol=1e-6)


def test_box_iou_rotated_chunked_equals_unchunked(monkeypatch):
    g = torch.Generator().manual_seed(3)
    b1 = torch.cat((torch.rand(40, 2, generator=g) * 30, torch.rand(40, 2, generator=g) * 10 + 1,
                    torch.rand(40, 1, generator=g) * 360), 1)
    b2 = torch.cat((torch.rand(30, 2, generator=g) * 30, torch.rand(30, 2, generator=g) * 10 + 1,
                    torch.rand(30, 1, generator=g) * 360), 1)
    full = rotated.box_iou_rotated(b1, b2)
    monkeypatch.setattr(rotated, "_MASK_CHUNK", 50)
    monkeypatch.setattr(rotated, "_PAIR_CHUNK", {"cpu": 7, "cuda": 7})
    monkeypatch.setattr(rotated, "_PAIR_CHUNK_DEFAULT", 7)
    assert torch.equal(rotated.box_iou_rotated(b1, b2), full)


# ----------------------------------------------------------------------------- nms_rotated
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("thr", [0.1, 0.3, 0.5, 0.7])
def test_nms_rotated_matches_bruteforce(device, thr):
    g = torch.Generator().manual_seed(int(thr * 10))
    centres = torch.rand(6, 2, generator=g) * 40
    k = 60
    ctr = centres[torch.randint(6, (k,), generator=g)] + torch.randn(k, 2, generator=g) * 1.5
    size = torch.rand(k, 2, generator=g) * 8 + 2
    ang = (torch.rand(k, 1, generator=g) - 0.5) * 400
    boxes = torch.cat((ctr, size, ang), 1)
    scores = torch.rand(k, generator=g)
    bl = boxes.tolist()
    # no IoU so close to the threshold that float rounding could decide it
    near = [abs(_shapely_iou(bl[i], bl[j]) - thr) for i in range(k) for j in range(i + 1, k)]
    assert min(near) > 1e-5
    ref = _brute_nms(bl, scores.tolist(), thr)
    keep = rotated.nms_rotated(boxes.to(device), scores.to(device), thr)
    assert keep.dtype == torch.int64 and keep.device.type == device
    assert keep.cpu().tolist() == ref
    s = scores[keep.cpu()]
    assert torch.all(s[:-1] >= s[1:])


def test_nms_rotated_small_cases():
    boxes = torch.tensor([[10.0, 10, 8, 4, 30], [10.0, 10, 8, 4, 30], [40.0, 40, 6, 6, -45]])
    assert rotated.nms_rotated(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist() == [0, 2]
    assert rotated.nms_rotated(boxes, torch.tensor([0.7, 0.8, 0.9]), 0.5).tolist() == [2, 1]
    # identical boxes have IoU exactly 1: kept when the threshold is 1 (suppress only IoU > thr)
    assert rotated.nms_rotated(boxes[:2], torch.tensor([0.1, 0.2]), 1.0).tolist() == [1, 0]
    # same region, different angle (+-90 on swapped sides): suppressed
    b = torch.tensor([[5.0, 3, 4, 2, 90], [5.0, 3, 4, 2, -90], [5.0, 3, 2, 4, 0]])
    assert rotated.nms_rotated(b, torch.tensor([0.5, 0.9, 0.1]), 0.99).tolist() == [1]
    empty = rotated.nms_rotated(torch.zeros(0, 5), torch.zeros(0), 0.5)
    assert empty.dtype == torch.int64 and empty.numel() == 0


# ----------------------------------------------------------------------------- roi_align_rotated
def _random_rois(n_rois, batch, h, w, scale, g, angle=None, dtype=torch.float64):
    """Rois in input-image coordinates (feature size / scale), some crossing the border."""
    H, W = h / scale, w / scale
    cx = torch.rand(n_rois, generator=g, dtype=dtype) * (W + 4) - 2
    cy = torch.rand(n_rois, generator=g, dtype=dtype) * (H + 4) - 2
    rw = torch.rand(n_rois, generator=g, dtype=dtype) * W * 0.8
    rh = torch.rand(n_rois, generator=g, dtype=dtype) * H * 0.8
    rw[0] = 0.0  # a degenerate roi
    bi = torch.randint(batch, (n_rois,), generator=g).to(dtype)
    if angle is None:
        a = (torch.rand(n_rois, generator=g, dtype=dtype) - 0.5) * 720
    else:
        a = torch.full((n_rois,), float(angle), dtype=dtype)
    return torch.stack((bi, cx, cy, rw, rh, a), 1)


def _to_xyxy(rois):
    b, cx, cy, w, h = rois[:, :5].unbind(1)
    return torch.stack((b, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), 1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("scale", [1.0, 0.5, 0.25])
@pytest.mark.parametrize("sr", [0, 1, 2, 3])
def test_roi_align_rotated_angle0_equals_torchvision(device, dtype, scale, sr):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 11, 13, generator=g, dtype=dtype).to(device)
    rois = _random_rois(12, 2, 11, 13, scale, g, angle=0.0, dtype=dtype).to(device)
    got = rotated.roi_align_rotated_forward(x, rois, scale, 3, 4, sr)
    ref = roi_align(x, _to_xyxy(rois), (3, 4), scale, sr, aligned=True)
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    assert got.shape == ref.shape and got.dtype == dtype
    assert torch.allclose(got, ref, atol=tol, rtol=0)


@pytest.mark.parametrize("scale", [1.0, 0.5])
@pytest.mark.parametrize("sr", [0, 2])
@pytest.mark.parametrize("angle", [90.0, -90.0, 180.0, -180.0, 270.0, 450.0])
def test_roi_align_rotated_quarter_turns_equal_roi_align_on_rot90_map(scale, sr, angle):
    """A quarter-turned roi samples what an axis-aligned roi samples on the turned feature map.

    With the docstring's rotation, sample offsets (xx, yy) from the roi centre land at
    ``y = cy + yy cos t - xx sin t``, ``x = cx + yy sin t + xx cos t`` (pixel-index coordinates).
    With ``G = rot90(F, k)`` those samples are the samples of an axis-aligned roi on ``G``,
    boundary rules included: ``k = -1`` for +90, ``k = 1`` for -90, ``k = 2`` for 180.
    """
    g = torch.Generator().manual_seed(11)
    n, c, h, w = 2, 2, 9, 12
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    rois = _random_rois(10, n, h, w, scale, g, angle=angle)
    b, cx, cy, rw, rh = rois[:, :5].unbind(1)
    H, W = h / scale, w / scale  # feature extent in roi coordinates
    quarter = round(((angle % 360) + 360) % 360 / 90) % 4
    if quarter == 1:  # +90: G[i, j] = F[h-1-j, i]; G is w x h
        k, x1, y1 = -1, H - cy - rw / 2, cx - rh / 2
    elif quarter == 3:  # -90: G[i, j] = F[j, w-1-i]
        k, x1, y1 = 1, cy - rw / 2, W - cx - rh / 2
    else:  # 180: G[i, j] = F[h-1-i, w-1-j]
        k, x1, y1 = 2, W - cx - rw / 2, H - cy - rh / 2
    grid = torch.rot90(x, k, dims=(2, 3))
    boxes = torch.stack((b, x1, y1, x1 + rw, y1 + rh), 1)
    ref = roi_align(grid, boxes, (3, 4), scale, sr, aligned=True)
    got = rotated.roi_align_rotated_forward(x, rois, scale, 3, 4, sr)
    assert torch.allclose(got, ref, atol=1e-9, rtol=0)


def test_roi_align_rotated_direction_of_positive_angle():
    """(5, 3, 4, 2, 90): the width vector A->B points up (y decreasing), per the docstring."""
    yy, xx = torch.meshgrid(torch.arange(10.0), torch.arange(10.0), indexing="ij")
    feat = torch.stack((yy + 0.5, xx + 0.5))[None]  # sample value == continuous coordinate
    roi = torch.tensor([[0.0, 5, 3, 4, 2, 90]])
    out = rotated.roi_align_rotated_forward(feat, roi, 1.0, 2, 4, 1)[0]
    # bin (ph, pw) centre: y = 3 - (-2 + 0.5 + pw), x = 5 + (-1 + 0.5 + ph)
    pw = torch.arange(4.0)
    ph = torch.arange(2.0)
    assert torch.allclose(out[0], (3 - (-1.5 + pw))[None].expand(2, 4), atol=1e-5)
    assert torch.allclose(out[1], (5 + (-0.5 + ph))[:, None].expand(2, 4), atol=1e-5)


class _ROIAlignRotatedFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, rois, out_size, scale, sr):
        ctx.save_for_backward(rois)
        ctx.args = (out_size, scale, sr, x.shape)
        return rotated.roi_align_rotated_forward(x, rois, scale, out_size[0], out_size[1], sr)

    @staticmethod
    def backward(ctx, grad):
        (rois,) = ctx.saved_tensors
        out_size, scale, sr, (n, c, h, w) = ctx.args
        gx = rotated.roi_align_rotated_backward(grad, rois, scale, out_size[0], out_size[1],
                                                n, c, h, w, sr)
        return gx, None, None, None, None


@pytest.mark.parametrize("sr", [0, 2])
def test_roi_align_rotated_gradcheck(sr):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 2, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    rois = _random_rois(4, 2, 6, 7, 0.5, g)
    assert torch.autograd.gradcheck(
        lambda inp: _ROIAlignRotatedFn.apply(inp, rois, (2, 3), 0.5, sr), (x,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sr", [0, 1, 3])
def test_roi_align_rotated_backward_equals_autograd(device, sr):
    g = torch.Generator().manual_seed(9)
    n, c, h, w = 2, 3, 10, 9
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64).to(device).requires_grad_()
    rois = _random_rois(8, n, h, w, 0.5, g).to(device)
    out = rotated.roi_align_rotated_forward(x, rois, 0.5, 3, 2, sr)
    grad_out = torch.randn(out.shape, generator=g, dtype=torch.float64).to(device)
    (ref,) = torch.autograd.grad(out, x, grad_out)
    got = rotated.roi_align_rotated_backward(grad_out, rois, 0.5, 3, 2, n, c, h, w, sr)
    assert got.shape == x.shape
    assert torch.allclose(got, ref, atol=1e-12)
    # angle 0: equal to the gradient of torchvision's roi_align
    rois0 = rois.clone()
    rois0[:, 5] = 0
    xt = x.detach().clone().requires_grad_()
    ref0 = roi_align(xt, _to_xyxy(rois0), (3, 2), 0.5, sr, aligned=True)
    (ref0,) = torch.autograd.grad(ref0, xt, grad_out)
    got0 = rotated.roi_align_rotated_backward(grad_out, rois0, 0.5, 3, 2, n, c, h, w, sr)
    assert torch.allclose(got0, ref0, atol=1e-10)


def test_roi_align_rotated_chunking_and_edge_inputs(monkeypatch):
    g = torch.Generator().manual_seed(13)
    x = torch.randn(2, 3, 12, 12, generator=g)
    rois = _random_rois(9, 2, 12, 12, 1.0, g).float()
    full = rotated.roi_align_rotated_forward(x, rois, 1.0, 2, 2, 0)
    gfull = rotated.roi_align_rotated_backward(full, rois, 1.0, 2, 2, 2, 3, 12, 12, 0)
    monkeypatch.setattr(rotated, "_ROI_CHUNK", 1)
    assert torch.allclose(rotated.roi_align_rotated_forward(x, rois, 1.0, 2, 2, 0), full, atol=1e-6)
    assert torch.allclose(rotated.roi_align_rotated_backward(full, rois, 1.0, 2, 2, 2, 3, 12, 12, 0),
                          gfull, atol=1e-6)
    assert torch.all(full[0] == 0)  # zero-width roi
    empty = rotated.roi_align_rotated_forward(x, rois[:0], 1.0, 2, 2, 0)
    assert empty.shape == (0, 3, 2, 2)
    assert rotated.roi_align_rotated_backward(empty, rois[:0], 1.0, 2, 2, 2, 3, 12, 12, 0).abs().sum() == 0
    half = rotated.roi_align_rotated_forward(x.half(), rois.half(), 1.0, 2, 2, 0)
    assert half.dtype == torch.float16 and torch.allclose(half.float(), full, atol=2e-2)
