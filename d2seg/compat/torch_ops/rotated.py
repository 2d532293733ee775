"""Rotated-box operators of ``detectron2._C`` (IoU, NMS, ROIAlignRotated) in plain PyTorch.

detectron2 v0.6 ships these only as C++/CUDA kernels; these device-agnostic tensor versions keep
its call signatures and semantics so rotated-box models run without a compiled extension.

Conventions (those of detectron2's ``RotatedBoxes`` docs and its kernels):

* a box is ``(x_ctr, y_ctr, w, h, angle_deg)``; a point ``(dx, dy)`` of the axis-aligned box,
  relative to the centre, lands at ``(x_ctr + dx cos t + dy sin t, y_ctr - dx sin t + dy cos t)``
  (image coordinates, y pointing down), so a positive angle turns the box counter-clockwise
  on screen: ``(5, 3, 4, 2, 90)`` has corners ``(4, 5), (4, 1), (6, 1), (6, 5)``;
* ``box_iou_rotated`` returns float32; a box with ``w * h < 1e-14`` has IoU 0 with everything;
* ``nms_rotated`` suppresses a box when its IoU with a kept, higher-scoring box is
  ``> iou_threshold`` (torchvision's rule and detectron2's CUDA kernel);
* ``roi_align_rotated_*`` sample like ``torchvision.ops.roi_align(aligned=True)`` on a grid
  rotated by the same rule around the roi centre.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "box_iou_rotated",
    "nms_rotated",
    "roi_align_rotated_forward",
    "roi_align_rotated_backward",
]

# Pairs whose exact intersection is computed at once (each needs ~2 KB of float64 scratch):
# small on CPU (cache-friendly), large on accelerators (fewer kernel launches).
_PAIR_CHUNK = {"cpu": 1 << 13}
_PAIR_CHUNK_DEFAULT = 1 << 16
# Elements of the boxes1 x boxes2 candidate mask built at once.
_MASK_CHUNK = 1 << 22
# Vertex slots of a clipped polygon: two rectangles intersect in at most 8 vertices; the
# spare slots absorb near-duplicate vertices that rounding can create on nearly collinear edges.
_MAX_VERTS = 12
# Elements (samples x channels) of gathered features per roi chunk in ROIAlignRotated.
_ROI_CHUNK = 1 << 24
_MIN_AREA = 1e-14


# ----------------------------------------------------------------------------- IoU
def _corners(boxes: torch.Tensor) -> torch.Tensor:
    """``[P, 5]`` boxes -> ``[P, 4, 2]`` corners (x, y), counter-clockwise in the x-y plane."""
    cx, cy, w, h, a = boxes.unbind(-1)
    t = a * (math.pi / 180.0)
    c, s = torch.cos(t), torch.sin(t)
    sx = boxes.new_tensor([-0.5, 0.5, 0.5, -0.5])
    sy = boxes.new_tensor([-0.5, -0.5, 0.5, 0.5])
    dx = w[:, None] * sx
    dy = h[:, None] * sy
    x = cx[:, None] + dx * c[:, None] + dy * s[:, None]
    y = cy[:, None] - dx * s[:, None] + dy * c[:, None]
    return torch.stack((x, y), dim=-1)


def _next_index(n: torch.Tensor, k: int) -> torch.Tensor:
    """For a polygon stored in the first ``n`` of ``k`` slots: the slot after each slot (cyclic)."""
    idx = torch.arange(k, device=n.device)
    nxt = idx + 1
    return torch.where(nxt[None, :] < n[:, None], nxt[None, :], torch.zeros_like(nxt)[None, :])


def _clip(poly: torch.Tensor, n: torch.Tensor, a: torch.Tensor, b: torch.Tensor):
    """One Sutherland-Hodgman step: keep the part of each polygon left of the edge ``a -> b``.

    ``poly``: ``[P, K, 2]`` with ``n[p]`` valid leading vertices; ``a``, ``b``: ``[P, 2]``.
    """
    p, k, _ = poly.shape
    e = b - a
    rel = poly - a[:, None, :]
    d = e[:, None, 0] * rel[..., 1] - e[:, None, 1] * rel[..., 0]  # >= 0: inside
    nxt = _next_index(n, k)
    d_n = torch.gather(d, 1, nxt)
    poly_n = torch.gather(poly, 1, nxt[..., None].expand(-1, -1, 2))
    slot = torch.arange(k, device=poly.device)[None, :] < n[:, None]
    inside = d >= 0
    inside_n = d_n >= 0
    keep_cur = slot & inside
    crosses = slot & (inside != inside_n)
    denom = torch.where(crosses, d - d_n, torch.ones_like(d))
    t = (d / denom).clamp(0.0, 1.0)
    hit = poly + t[..., None] * (poly_n - poly)
    cand = torch.stack((poly, hit), dim=2).reshape(p, 2 * k, 2)
    mask = torch.stack((keep_cur, crosses), dim=2).reshape(p, 2 * k)
    pos = torch.cumsum(mask.long(), dim=1) - 1
    pos = torch.where(mask & (pos < k), pos, torch.full_like(pos, k))  # slot k: discarded
    out = poly.new_zeros(p, k + 1, 2)
    out.scatter_(1, pos[..., None].expand(-1, -1, 2), cand)
    new_n = mask.sum(dim=1).clamp(max=k)
    return out[:, :k], new_n


def _pair_iou(b1: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """Exact IoU of matched float64 boxes ``b1[i]``, ``b2[i]`` (``[P, 5]`` each) -> ``[P]``."""
    p = b1.shape[0]
    shift = (b1[:, :2] + b2[:, :2]) * 0.5  # centre the pair for precision
    b1 = torch.cat((b1[:, :2] - shift, b1[:, 2:]), dim=1)
    b2 = torch.cat((b2[:, :2] - shift, b2[:, 2:]), dim=1)
    c1, c2 = _corners(b1), _corners(b2)
    poly = b1.new_zeros(p, _MAX_VERTS, 2)
    poly[:, :4] = c1
    n = torch.full((p,), 4, dtype=torch.long, device=b1.device)
    for i in range(4):
        poly, n = _clip(poly, n, c2[:, i], c2[:, (i + 1) % 4])
    nxt = _next_index(n, _MAX_VERTS)
    poly_n = torch.gather(poly, 1, nxt[..., None].expand(-1, -1, 2))
    cross = poly[..., 0] * poly_n[..., 1] - poly[..., 1] * poly_n[..., 0]
    slot = torch.arange(_MAX_VERTS, device=b1.device)[None, :] < n[:, None]
    inter = 0.5 * torch.where(slot, cross, torch.zeros_like(cross)).sum(dim=1)
    area1 = b1[:, 2] * b1[:, 3]
    area2 = b2[:, 2] * b2[:, 3]
    inter = torch.minimum(inter.clamp(min=0.0), torch.minimum(area1, area2))
    ok = (area1 >= _MIN_AREA) & (area2 >= _MIN_AREA)
    union = torch.where(ok, area1 + area2 - inter, torch.ones_like(inter))
    return torch.where(ok, inter / union, torch.zeros_like(inter))


def _may_overlap(b1: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """``[N, M]`` mask of pairs whose circumscribed circles meet and whose areas are positive."""
    r1 = 0.5 * torch.hypot(b1[:, 2], b1[:, 3])
    r2 = 0.5 * torch.hypot(b2[:, 2], b2[:, 3])
    d2 = (b1[:, None, 0] - b2[None, :, 0]) ** 2 + (b1[:, None, 1] - b2[None, :, 1]) ** 2
    reach = (r1[:, None] + r2[None, :]) * (1 + 1e-9) + 1e-9
    ok1 = b1[:, 2] * b1[:, 3] >= _MIN_AREA
    ok2 = b2[:, 2] * b2[:, 3] >= _MIN_AREA
    return (d2 <= reach * reach) & ok1[:, None] & ok2[None, :]


def _candidate_ious(b1: torch.Tensor, b2: torch.Tensor, upper_only: bool = False):
    """Yield ``(i, j, iou)`` for all pairs that may overlap (``i < j`` if ``upper_only``)."""
    n, m = b1.shape[0], b2.shape[0]
    rows = max(1, _MASK_CHUNK // max(m, 1))
    for r0 in range(0, n, rows):
        mask = _may_overlap(b1[r0 : r0 + rows], b2)
        if upper_only:
            ii = torch.arange(r0, r0 + mask.shape[0], device=b1.device)
            mask &= torch.arange(m, device=b1.device)[None, :] > ii[:, None]
        i, j = mask.nonzero(as_tuple=True)
        i = i + r0
        step = _PAIR_CHUNK.get(b1.device.type, _PAIR_CHUNK_DEFAULT)
        for p0 in range(0, i.numel(), step):
            ic, jc = i[p0 : p0 + step], j[p0 : p0 + step]
            yield ic, jc, _pair_iou(b1[ic], b2[jc])


def box_iou_rotated(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """IoU of every pair of rotated boxes: ``[N, 5]`` x ``[M, 5]`` -> float32 ``[N, M]``."""
    n, m = boxes1.shape[0], boxes2.shape[0]
    out = torch.zeros(n, m, dtype=torch.float32, device=boxes1.device)
    if n == 0 or m == 0:
        return out
    b1 = boxes1.reshape(n, 5).to(torch.float64)
    b2 = boxes2.reshape(m, 5).to(device=boxes1.device, dtype=torch.float64)
    for i, j, iou in _candidate_ious(b1, b2):
        out[i, j] = iou.to(torch.float32)
    return out


# ----------------------------------------------------------------------------- NMS
def nms_rotated(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS of rotated boxes; int64 indices of the kept boxes by decreasing score."""
    device = boxes.device
    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.long, device=device)
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes.reshape(n, 5)[order].to(torch.float64)
    src, dst = [], []
    for i, j, iou in _candidate_ious(b, b, upper_only=True):
        hit = iou > iou_threshold
        src.append(i[hit])
        dst.append(j[hit])
    # Suppression edges (earlier -> later in score order), then the sequential greedy pass
    # on the host, as torchvision's CUDA kernel does.
    src_np = torch.cat(src).cpu().numpy() if src else np.zeros(0, dtype=np.int64)
    dst_np = torch.cat(dst).cpu().numpy() if dst else np.zeros(0, dtype=np.int64)
    perm = np.argsort(src_np, kind="stable")
    src_np, dst_np = src_np[perm], dst_np[perm]
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(src_np, minlength=n), out=ptr[1:])
    suppressed = np.zeros(n, dtype=bool)
    keep = []
    for k in range(n):
        if suppressed[k]:
            continue
        keep.append(k)
        suppressed[dst_np[ptr[k] : ptr[k + 1]]] = True
    keep_t = torch.as_tensor(np.asarray(keep, dtype=np.int64), device=device)
    return order[keep_t]


# ----------------------------------------------------------------------------- ROIAlignRotated
def _grid_sizes(extent: torch.Tensor, pooled: int, sampling_ratio: int) -> torch.Tensor:
    if sampling_ratio > 0:
        return torch.full_like(extent, sampling_ratio, dtype=torch.long)
    return torch.ceil(extent / pooled).clamp(min=0).long()


def _bilinear_taps(rois, spatial_scale, ph_n, pw_n, sampling_ratio, height, width, dtype):
    """Flat feature indices and weights of every bilinear tap of every roi bin.

    Returns ``idx``, ``wts`` of shape ``[R, PH, PW, S]`` (``S`` = 4 taps x samples per bin, the
    bin average's ``1 / count`` folded into ``wts``); ``idx`` addresses a ``[N * H * W]`` plane.
    """
    r = rois.shape[0]
    dev = rois.device
    rois = rois.to(dtype)
    bidx = rois[:, 0].long()  # C++: int(roi[0])
    cx = rois[:, 1] * spatial_scale - 0.5
    cy = rois[:, 2] * spatial_scale - 0.5
    w = rois[:, 3] * spatial_scale
    h = rois[:, 4] * spatial_scale
    theta = rois[:, 5].double() * (math.pi / 180.0)
    cos_t, sin_t = torch.cos(theta).to(dtype), torch.sin(theta).to(dtype)
    bin_h, bin_w = h / ph_n, w / pw_n
    gh = _grid_sizes(h, ph_n, sampling_ratio)
    gw = _grid_sizes(w, pw_n, sampling_ratio)
    if sampling_ratio > 0:
        mgh = mgw = sampling_ratio
    else:
        mgh, mgw = (int(v) for v in torch.stack((gh.max(), gw.max())).tolist())
        mgh, mgw = max(mgh, 1), max(mgw, 1)
    count = (gh * gw).clamp(min=1).to(dtype)

    iy = torch.arange(mgh, device=dev, dtype=dtype)
    ix = torch.arange(mgw, device=dev, dtype=dtype)
    ph = torch.arange(ph_n, device=dev, dtype=dtype)
    pw = torch.arange(pw_n, device=dev, dtype=dtype)
    ghf = gh.clamp(min=1).to(dtype)[:, None, None]
    gwf = gw.clamp(min=1).to(dtype)[:, None, None]
    # yy: [R, PH, GH], xx: [R, PW, GW], relative to the roi centre, before rotation.
    yy = -h[:, None, None] / 2 + ph[None, :, None] * bin_h[:, None, None] + (iy + 0.5) * bin_h[:, None, None] / ghf
    xx = -w[:, None, None] / 2 + pw[None, :, None] * bin_w[:, None, None] + (ix + 0.5) * bin_w[:, None, None] / gwf
    yy = yy[:, :, None, :, None]  # [R, PH, 1, GH, 1]
    xx = xx[:, None, :, None, :]  # [R, 1, PW, 1, GW]

    def col(v):
        return v[:, None, None, None, None]

    y = yy * col(cos_t) - xx * col(sin_t) + col(cy)  # [R, PH, PW, GH, GW]
    x = yy * col(sin_t) + xx * col(cos_t) + col(cx)
    used = (iy[None, :] < gh[:, None].to(dtype))[:, None, None, :, None] & (
        ix[None, :] < gw[:, None].to(dtype)
    )[:, None, None, None, :]
    valid = used & (y >= -1.0) & (y <= height) & (x >= -1.0) & (x <= width)
    y = torch.where(valid, y, torch.zeros_like(y)).clamp(min=0)
    x = torch.where(valid, x, torch.zeros_like(x)).clamp(min=0)
    y_low = torch.floor(y).long()
    x_low = torch.floor(x).long()
    y_edge = y_low >= height - 1
    x_edge = x_low >= width - 1
    y_low = torch.where(y_edge, torch.full_like(y_low, height - 1), y_low)
    x_low = torch.where(x_edge, torch.full_like(x_low, width - 1), x_low)
    y_high = torch.where(y_edge, y_low, y_low + 1)
    x_high = torch.where(x_edge, x_low, x_low + 1)
    y = torch.where(y_edge, y_low.to(dtype), y)
    x = torch.where(x_edge, x_low.to(dtype), x)
    ly, lx = y - y_low.to(dtype), x - x_low.to(dtype)
    hy, hx = 1.0 - ly, 1.0 - lx
    scale = valid.to(dtype) / col(count)
    base = col(bidx) * (height * width)
    idx = torch.stack(
        (base + y_low * width + x_low, base + y_low * width + x_high,
         base + y_high * width + x_low, base + y_high * width + x_high), dim=-1)
    wts = torch.stack((hy * hx, hy * lx, ly * hx, ly * lx), dim=-1) * scale[..., None]
    return idx.reshape(r, ph_n, pw_n, -1), wts.reshape(r, ph_n, pw_n, -1)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float32, torch.float64) else torch.float32


def _roi_chunks(num_rois: int, ph: int, pw: int, channels: int, rois, sampling_ratio, spatial_scale):
    """Roi ranges small enough that the gathered taps stay within ``_ROI_CHUNK`` elements."""
    if sampling_ratio > 0:
        per_roi = ph * pw * sampling_ratio * sampling_ratio * 4 * max(channels, 1)
        step = max(1, _ROI_CHUNK // per_roi)
        return [(s, min(s + step, num_rois)) for s in range(0, num_rois, step)]
    # Adaptive grids: size each chunk by the largest grid it contains.
    sizes = rois[:, 3:5].double() * spatial_scale
    g = (torch.ceil(sizes[:, 1] / ph).clamp(min=1) * torch.ceil(sizes[:, 0] / pw).clamp(min=1))
    per_roi = (g * (ph * pw * 4 * max(channels, 1))).cpu().tolist()
    chunks, start, worst = [], 0, 0.0
    for i, cost in enumerate(per_roi):
        worst_new = max(worst, cost)
        if i > start and worst_new * (i + 1 - start) > _ROI_CHUNK:
            chunks.append((start, i))
            start, worst_new = i, cost
        worst = worst_new
    chunks.append((start, num_rois))
    return chunks


def roi_align_rotated_forward(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio):
    """ROIAlignRotated: ``input`` ``[N, C, H, W]``, ``rois`` ``[R, 6]`` -> ``[R, C, PH, PW]``."""
    ph, pw, sr = int(pooled_height), int(pooled_width), int(sampling_ratio)
    n, c, h, w = input.shape
    r = rois.shape[0]
    out = input.new_zeros(r, ph, pw, c)
    if r == 0 or out.numel() == 0 or h == 0 or w == 0:
        return out.permute(0, 3, 1, 2).contiguous()
    cdt = _compute_dtype(input.dtype)
    feats = input.permute(0, 2, 3, 1).reshape(n * h * w, c).to(cdt)
    rois = rois.to(input.device)
    for s, e in _roi_chunks(r, ph, pw, c, rois, sr, spatial_scale):
        idx, wts = _bilinear_taps(rois[s:e], float(spatial_scale), ph, pw, sr, h, w, cdt)
        vals = feats[idx.reshape(-1)].view(*idx.shape, c)  # [Rc, PH, PW, S, C]
        out[s:e] = (wts.unsqueeze(-2) @ vals).squeeze(-2).to(out.dtype)
    return out.permute(0, 3, 1, 2).contiguous()


def roi_align_rotated_backward(grad, rois, spatial_scale, pooled_height, pooled_width,
                               batch_size, channels, height, width, sampling_ratio):
    """Gradient of :func:`roi_align_rotated_forward` w.r.t. its input: ``[N, C, H, W]``."""
    ph, pw, sr = int(pooled_height), int(pooled_width), int(sampling_ratio)
    n, c, h, w = int(batch_size), int(channels), int(height), int(width)
    r = rois.shape[0]
    cdt = _compute_dtype(grad.dtype)
    grad_in = torch.zeros(n * h * w, c, dtype=cdt, device=grad.device)
    if r == 0 or grad.numel() == 0 or h == 0 or w == 0:
        return grad_in.view(n, h, w, c).permute(0, 3, 1, 2).to(grad.dtype).contiguous()
    g = grad.permute(0, 2, 3, 1).to(cdt)  # [R, PH, PW, C]
    rois = rois.to(grad.device)
    for s, e in _roi_chunks(r, ph, pw, c, rois, sr, spatial_scale):
        idx, wts = _bilinear_taps(rois[s:e], float(spatial_scale), ph, pw, sr, h, w, cdt)
        contrib = wts[..., None] * g[s:e, :, :, None, :]  # [Rc, PH, PW, S, C]
        grad_in.index_add_(0, idx.reshape(-1), contrib.reshape(-1, c))
    return grad_in.view(n, h, w, c).permute(0, 3, 1, 2).to(grad.dtype).contiguous()
