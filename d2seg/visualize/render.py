"""The fast OpenCV renderer: instances, panoptic and semantic maps, side-by-side and montages.

Images are BGR uint8 as in OpenCV. Inputs are never modified; each function returns a new image.
Masks are blended only inside their bounding boxes and region maps through one colour lookup,
so drawing 20 instances on a 640x480 image takes a few milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from d2seg.errors import D2SegError
from d2seg.visualize.colours import (
    class_colors, color_of, darker, instance_shade, palette_for, text_color_for,
)

FONT = cv2.FONT_HERSHEY_SIMPLEX


# ---------------------------------------------------------------------------------------------
# style and text


@dataclass(frozen=True)
class Style:
    """Line width and font size chosen from the image size so labels stay readable."""

    line: int
    font_scale: float
    font_thickness: int

    @classmethod
    def for_image(cls, height: int, width: int, line_width: int | None = None) -> "Style":
        side = max(height, width)
        scale = float(np.clip(side / 1200.0, 0.4, 1.6))
        line = line_width if line_width is not None else max(1, round(side / 800))
        return cls(line=int(line), font_scale=scale, font_thickness=1 if scale < 0.9 else 2)


def _label_box_size(text: str, style: Style) -> tuple[int, int, int, int]:
    (tw, th), baseline = cv2.getTextSize(text, FONT, style.font_scale, style.font_thickness)
    pad = max(2, int(round(3 * style.font_scale)))
    return tw + 2 * pad, th + baseline + 2 * pad, th, pad


def _clamped_rect(left: int, top: int, bw: int, bh: int, h: int, w: int):
    return (int(np.clip(left, 0, max(0, w - bw))), int(np.clip(top, 0, max(0, h - bh))), bw, bh)


# Label placement: no two labels overlap (or touch) and every label lies inside the image. A label
# takes the first free place among its preferred places and small shifts of them (nearest first);
# with none free it is tried again in a smaller font, and with none free at the smallest it is
# dropped. Callers place the labels of larger regions first, so a dropped label is always one of
# a region smaller than those of the labels that took its place.

LABEL_GAP = 1  # pixels kept free between two labels, so that neighbours never merge into one
MIN_FONT_SCALE = 0.3  # labels are shrunk down to this font scale before they are dropped
_SHRINK = 0.75
_MAX_SHRINKS = 2


# A label moves at most this many label widths sideways and label heights up or down, in steps
# of half its size and to the places flush against the labels around it.
_REACH_X, _REACH_Y = 1, 2
_HALF_STEPS_X = np.arange(-2 * _REACH_X, 2 * _REACH_X + 1)
_HALF_STEPS_Y = np.arange(-2 * _REACH_Y, 2 * _REACH_Y + 1)
_FLIP = np.array([1, 1, -1, -1])


def _label_styles(style: Style) -> list[Style]:
    """``style`` and the smaller fonts a label is tried in when no place is free."""
    styles = [style]
    scale = style.font_scale
    for _ in range(_MAX_SHRINKS):
        scale = max(MIN_FONT_SCALE, scale * _SHRINK)
        if scale >= styles[-1].font_scale:
            break
        styles.append(Style(style.line, scale,
                            min(style.font_thickness, 1 if scale < 0.9 else 2)))
    return styles


@dataclass(frozen=True)
class PlacedLabel:
    """A label as drawn: what it names (an instance's index, a segment id or a class id), its
    text, its rectangle ``(left, top, width, height)`` in pixels and its font scale."""

    key: object
    text: str
    rect: tuple[int, int, int, int]
    font_scale: float


class LabelLayout:
    """Label rectangles placed one at a time, none overlapping or touching another (``gap``
    pixels stay free between two), all inside a ``height`` x ``width`` image."""

    def __init__(self, height: int, width: int, style: Style, *, shrink: bool = True,
                 gap: int = LABEL_GAP):
        self.height, self.width, self.gap = int(height), int(width), int(gap)
        self.styles = _label_styles(style) if shrink else [style]
        # Placed labels widened by gap, as x0, y0, -x1, -y1 (x1, y1 exclusive): a rectangle
        # reaches into a window when all four are below the window's x1, y1, -x0, -y0.
        self._taken = np.empty((16, 4), np.int64)
        self._count = 0
        self._used = np.zeros((self.height, self.width), np.uint8)  # the same, as pixels

    def take(self, rect) -> None:
        """Mark ``(left, top, width, height)`` as used."""
        if self._count == len(self._taken):
            self._taken = np.concatenate([self._taken, np.empty_like(self._taken)])
        left, top, bw, bh = (int(v) for v in rect)
        g = self.gap
        self._taken[self._count] = (left - g, top - g, -(left + bw + g), -(top + bh + g))
        self._count += 1
        self._used[max(0, top - g):max(0, top + bh + g), max(0, left - g):max(0, left + bw + g)] = 1

    def _is_free(self, x: int, y: int, bw: int, bh: int) -> bool:
        return not self._used[y:y + bh, x:x + bw].any()

    def _nearest_free_shift(self, x: int, tops: list, bw: int, bh: int, allow):
        """The free place nearest to ``(x, top)`` for one of ``tops`` (the first on ties), or
        ``None``.

        Places are on a grid: x and y in steps of half a label from there and flush against
        (``gap`` pixels from) the placed labels nearby, up to ``_REACH_X`` label widths and
        ``_REACH_Y`` label heights away. Nearest in label sizes: the smallest
        ``(dx / w)^2 + (dy / h)^2``, compared as ``(dx h)^2 + (dy w)^2`` in integers.
        """
        sx, sy = bw + self.gap, bh + self.gap
        rx, ry = _REACH_X * sx, _REACH_Y * sy
        t = self._taken[:self._count]
        # Placed labels reaching into the window of the shifts (x0, y0, -x1, -y1 < its bounds).
        near = t[(t < (x + rx + bw, max(tops) + ry + bh, rx - x, ry - min(tops))).all(axis=1)]
        # Place (x, y) overlaps a placed label when lo_x < x < hi_x and lo_y < y < hi_y, and
        # lo + 1 and hi are the places flush against it.
        lo_x, lo_y, hi_x, hi_y = (near * _FLIP - (bw, bh, 0, 0)).T
        top = np.array(tops)[:, None]
        xs = np.concatenate((_HALF_STEPS_X * sx // 2 + x, lo_x, hi_x))
        ys = np.concatenate(((top + _HALF_STEPS_Y * sy // 2).ravel(), lo_y, hi_y))
        np.minimum(np.maximum(xs, 0, out=xs), self.width - bw, out=xs)
        np.minimum(np.maximum(ys, 0, out=ys), self.height - bh, out=ys)
        dx = xs - x
        dx *= sy
        dx *= dx
        dy = ys - top  # (tops, Y)
        dy *= sx
        dy *= dy
        far = (rx * sy) ** 2 + (ry * sx) ** 2 + 1  # more than any place in reach
        dx[dx > (rx * sy) ** 2] = far
        dy[dy > (ry * sx) ** 2] = far
        # Distances times 4 plus the rank of the nearest top, so that the earlier top wins ties.
        dist = (4 * dy + np.arange(len(tops))[:, None]).min(axis=0)[:, None] + 4 * dx
        if near.shape[0]:
            xc, yc = xs[:, None], ys[:, None]
            in_x = ((lo_x < xc) & (xc < hi_x)).astype(np.float32)
            in_y = ((lo_y < yc) & (yc < hi_y)).astype(np.float32)
            dist[np.dot(in_y, in_x.T) > 0] = 4 * far
        if allow is not None:
            dist[~allow(xs, ys, bw, bh)] = 4 * far
        j = int(dist.argmin())
        if dist.flat[j] >= 4 * far:
            return None
        return int(xs[j % len(xs)]), int(ys[j // len(xs)])

    def place(self, text: str, anchors, allow=None):
        """Place ``text``; returns ``(rect, style)``, or ``None`` when it fits nowhere.

        ``anchors(bw, bh)`` gives the preferred places of a ``bw`` x ``bh`` label as its left
        edge and its tops, best first (moved inside the image where they are not); when all
        are taken, the nearest free shift of one of them, and then the same in a smaller font.
        With ``allow``, a shifted place ``(xs[i], ys[j])`` is only taken where
        ``allow(xs, ys, bw, bh)[j, i]`` holds.
        """
        for style in self.styles:
            bw, bh, _, _ = _label_box_size(text, style)
            mx, my = self.width - bw, self.height - bh
            if mx < 0 or my < 0:
                continue
            left, tops = anchors(bw, bh)
            x = min(max(int(left), 0), mx)
            tops = [min(max(int(y), 0), my) for y in tops]
            y = next((y for y in tops if self._is_free(x, y, bw, bh)), None)
            if y is None:
                found = self._nearest_free_shift(x, tops, bw, bh, allow)
            else:
                found = x, y
            if found is not None:
                rect = (found[0], found[1], bw, bh)
                self.take(rect)
                return rect, style
        return None


def _box_anchors(box):
    """Above the box, else inside its top, else below it (inside its top first when the place
    above is off the image), all at its left edge."""
    x0, y0, _, y1 = (int(v) for v in box)

    def anchors(bw: int, bh: int):
        tops = [y0 - bh, y0, y1]
        return x0, (tops[1:] + tops[:1] if y0 - bh < 0 else tops)

    return anchors


def label_rect(text: str, box, style: Style, height: int, width: int, taken=()):
    """Where a box's label goes: above the box, else inside its top, else below it, else the
    nearest free shift of these, in ``style``'s font.

    The place overlaps and touches no rectangle in ``taken`` and lies inside the image. Returns
    ``(left, top, width, height)``, or ``None`` when no place nearby is free.
    """
    layout = LabelLayout(height, width, style, shrink=False)
    for r in taken:
        layout.take(r)
    placed = layout.place(text, _box_anchors(box))
    return None if placed is None else placed[0]


def draw_label(image: np.ndarray, text: str, rect, background, style: Style) -> None:
    """Text on a filled rectangle of ``background``, in black or white for contrast.

    Nothing is drawn outside ``rect`` (``(left, top, width, height)``), whatever the font.
    """
    left, top, bw, bh = rect
    _, _, th, pad = _label_box_size(text, style)
    bg = tuple(int(c) for c in background)
    roi = image[max(0, top):top + bh, max(0, left):left + bw]
    roi[:] = bg
    cv2.putText(roi, text, (left - max(0, left) + pad, top - max(0, top) + pad + th), FONT,
                style.font_scale, text_color_for(bg), style.font_thickness, cv2.LINE_AA)


def put_label(image: np.ndarray, text: str, centre: tuple[int, int], background,
              style: Style) -> tuple[int, int, int, int]:
    """Write ``text`` centred on ``centre``, kept inside the image; returns the rectangle."""
    h, w = image.shape[:2]
    bw, bh, _, _ = _label_box_size(text, style)
    rect = _clamped_rect(int(centre[0]) - bw // 2, int(centre[1]) - bh // 2, bw, bh, h, w)
    draw_label(image, text, rect, background, style)
    return rect


# ---------------------------------------------------------------------------------------------
# inputs


@dataclass
class _Mask:
    """One mask as its tight bounding box and the boolean crop inside it."""

    x0: int
    y0: int
    crop: np.ndarray  # bool, (y1 - y0, x1 - x0)

    @property
    def area(self) -> int:
        return int(self.crop.sum())

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.x0, self.y0, self.x0 + self.crop.shape[1], self.y0 + self.crop.shape[0]


def _crop_mask(full: np.ndarray) -> _Mask | None:
    rows = np.flatnonzero(full.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(full.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return _Mask(int(x0), int(y0), np.ascontiguousarray(full[y0:y1, x0:x1], dtype=bool))


def _to_numpy(x):
    if x is None:
        return None
    if hasattr(x, "detach"):  # torch tensor
        return x.detach().cpu().numpy()
    if hasattr(x, "tensor") and hasattr(x.tensor, "detach"):  # detectron2 Boxes / BitMasks
        return x.tensor.detach().cpu().numpy()
    return x


def _is_rle(m) -> bool:
    return isinstance(m, Mapping) and "counts" in m and "size" in m


def _decode_rles(rles: Sequence[Mapping], height: int, width: int) -> np.ndarray:
    """Decode COCO RLEs (compressed or not) to a ``(H, W, N)`` uint8 array via pycocotools."""
    fixed = []
    for i, r in enumerate(rles):
        if list(r["size"]) != [height, width]:
            raise D2SegError(f"mask {i} is {r['size'][0]}x{r['size'][1]} but the image is "
                             f"{height}x{width}",
                             hint="draw each result on the image it belongs to")
        fixed.append(mask_utils.frPyObjects(dict(r), height, width)
                     if isinstance(r["counts"], list) else r)
    return mask_utils.decode(fixed)


def normalize_masks(masks, height: int, width: int) -> list[_Mask | None]:
    """Masks as bool/uint8/float arrays, a torch tensor, BitMasks or COCO RLE dicts -> crops."""
    masks = _to_numpy(masks)
    if masks is None:
        return []
    if isinstance(masks, np.ndarray):
        if masks.ndim == 2:
            masks = masks[None]
        seq = list(masks)
    else:
        seq = list(masks)
    if not seq:
        return []
    if all(_is_rle(m) for m in seq):
        decoded = _decode_rles(seq, height, width)
        return [_crop_mask(decoded[:, :, i]) for i in range(decoded.shape[2])]
    out = []
    for i, m in enumerate(seq):
        m = np.asarray(_to_numpy(m))
        if m.shape != (height, width):
            raise D2SegError(f"mask {i} has shape {m.shape} but the image is {height}x{width}",
                             hint="draw each prediction on the image it belongs to")
        out.append(_crop_mask(m > 0.5 if m.dtype.kind == "f" else m.astype(bool, copy=False)))
    return out


def _lookup_name(class_names, class_id) -> str:
    if class_names is None:
        return str(class_id)
    try:
        return str(class_names[class_id] if isinstance(class_names, Mapping)
                   else class_names[int(class_id)])
    except (KeyError, IndexError):
        return str(class_id)


def _label_text(name: str | None, score) -> str:
    parts = [p for p in (name, None if score is None else f"{100 * float(score):.0f}%") if p]
    return " ".join(parts)


def instance_colors(classes, palette: Mapping) -> list[np.ndarray]:
    """Each instance's colour: the k-th shade of its class colour for the k-th of its class."""
    seen: dict = {}
    colours = []
    for c in classes:
        k = seen.get(c, 0)
        seen[c] = k + 1
        colours.append(instance_shade(color_of(palette, c), k))
    return colours


# ---------------------------------------------------------------------------------------------
# instances


def draw_instances(image_bgr: np.ndarray, masks=None, boxes=None, classes=None, scores=None,
                   class_names=None, colors=None, alpha: float = 0.5, show_boxes: bool = True,
                   show_labels: bool = True, *, show_contours: bool = True,
                   line_width: int | None = None,
                   placed_labels: list | None = None) -> np.ndarray:
    """Draw instance masks (filled + contour), boxes and "name score" labels; returns a copy.

    ``masks``: ``(N, H, W)`` bool/uint8 array or tensor, a list of such masks, or COCO RLE dicts.
    ``boxes``: ``(N, 4)`` XYXY in pixels (taken from the masks when absent). ``classes`` index
    ``class_names`` (a list, or a mapping such as COCO category id -> name) and ``colors`` (an
    ``(C, 3)`` BGR array or mapping; a deterministic palette when absent). Instances of one class
    get different shades of its colour.

    Labels never overlap: the labels of larger instances (mask area, else box area) are placed
    first, above their box where free, else nearby, else in a smaller font; a label that fits
    nowhere is left out. Given a list, ``placed_labels`` receives a ``PlacedLabel`` per label
    drawn (its ``key`` the instance's index).
    """
    image = np.ascontiguousarray(image_bgr)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise D2SegError(f"expected a BGR uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    out = image.copy()
    h, w = out.shape[:2]
    crops = normalize_masks(masks, h, w)
    boxes = _to_numpy(boxes)
    boxes = None if boxes is None else np.asarray(boxes, np.float64).reshape(-1, 4)
    n = max(len(crops), 0 if boxes is None else len(boxes))
    if n == 0:
        return out
    if crops and boxes is not None and len(crops) != len(boxes):
        raise D2SegError(f"{len(crops)} masks but {len(boxes)} boxes")
    classes = _to_numpy(classes)
    classes = [0] * n if classes is None else [c.item() if hasattr(c, "item") else c
                                               for c in classes]
    scores = _to_numpy(scores)
    scores = [None] * n if scores is None else [float(s) for s in scores]
    if len(classes) != n or len(scores) != n:
        raise D2SegError(f"{n} instances but {len(classes)} classes and {len(scores)} scores")
    palette = palette_for(classes, class_names, colors)
    colours = instance_colors(classes, palette)
    style = Style.for_image(h, w, line_width)

    mask_areas = [m.area if m is not None else 0 for m in crops]
    # Large masks first so that small ones stay visible on top.
    order = sorted(range(len(crops)), key=lambda i: -mask_areas[i])
    layer = np.empty_like(out)  # solid colour patches, filled per mask box (cheap in OpenCV)
    for i in order:
        m = crops[i]
        if m is None:
            continue
        x0, y0, x1, y1 = m.box
        roi = out[y0:y1, x0:x1]
        colour = colours[i]
        cv2.rectangle(layer, (x0, y0), (x1 - 1, y1 - 1), tuple(int(c) for c in colour), -1)
        blended = cv2.addWeighted(roi, 1.0 - alpha, layer[y0:y1, x0:x1], alpha, 0.0)
        cv2.copyTo(blended, m.crop.view(np.uint8), roi)
        if show_contours:
            contours, _ = cv2.findContours(m.crop.view(np.uint8), cv2.RETR_LIST,
                                           cv2.CHAIN_APPROX_SIMPLE, offset=(x0, y0))
            cv2.drawContours(out, contours, -1, tuple(int(c) for c in darker(colour)),
                             style.line, cv2.LINE_8)

    if boxes is None:
        boxes = np.array([m.box if m else (0, 0, 0, 0) for m in crops], np.float64)
    # Something to point at: a non-empty mask or a box of positive size.
    drawn = [bool(crops and crops[i] is not None)
             or bool(boxes[i, 2] > boxes[i, 0] and boxes[i, 3] > boxes[i, 1]) for i in range(n)]
    if show_boxes:
        for i in range(n):
            if not drawn[i]:
                continue
            x0, y0, x1, y1 = np.rint(boxes[i]).astype(int)
            cv2.rectangle(out, (int(x0), int(y0)), (int(x1) - 1, int(y1) - 1),
                          tuple(int(c) for c in colours[i]), style.line, cv2.LINE_8)
    if show_labels:
        rounded = np.rint(boxes).astype(int)
        box_areas = (np.clip(rounded[:, 2] - rounded[:, 0], 0, None)
                     * np.clip(rounded[:, 3] - rounded[:, 1], 0, None))
        area = [mask_areas[i] if crops and crops[i] is not None else int(box_areas[i])
                for i in range(n)]
        # Larger instances choose their label place first (then the more confident ones).
        by_area = sorted((i for i in range(n) if drawn[i]),
                         key=lambda i: (-area[i], 1.0 if scores[i] is None else -scores[i], i))
        layout = LabelLayout(h, w, style)
        for i in by_area:
            text = _label_text(_lookup_name(class_names, classes[i]), scores[i])
            placed = layout.place(text, _box_anchors(rounded[i]))
            if placed is None:
                continue
            rect, label_style = placed
            draw_label(out, text, rect, colours[i], label_style)
            if placed_labels is not None:
                placed_labels.append(PlacedLabel(i, text, rect, label_style.font_scale))
    return out


# ---------------------------------------------------------------------------------------------
# region maps (panoptic, semantic)


def _region_index(region_map: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position of each pixel's id in ``ids`` (sorted, unique) and whether it is one of them."""
    if ids.size == 0:
        return np.zeros(region_map.shape, np.intp), np.zeros(region_map.shape, bool)
    pos = np.searchsorted(ids, region_map)
    pos = np.minimum(pos, ids.size - 1)
    return pos, ids[pos] == region_map


def _region_boxes(index: np.ndarray, valid: np.ndarray, count: int) -> np.ndarray:
    """Tight XYXY box of every region, from per-row and per-column presence tables."""
    h, w = index.shape
    ys, xs = np.nonzero(valid)
    k = index[ys, xs]
    in_row = np.zeros((count, h), bool)
    in_col = np.zeros((count, w), bool)
    in_row[k, ys] = True
    in_col[k, xs] = True
    boxes = np.zeros((count, 4), int)
    present = in_row.any(axis=1)
    boxes[:, 1] = in_row.argmax(axis=1)
    boxes[:, 3] = h - in_row[:, ::-1].argmax(axis=1)
    boxes[:, 0] = in_col.argmax(axis=1)
    boxes[:, 2] = w - in_col[:, ::-1].argmax(axis=1)
    boxes[~present] = 0
    return boxes


def _region_edges(index: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Pixels of a region with a 4-neighbour in another region or in void."""
    key = np.where(valid, index, -1)
    edge = np.zeros(key.shape, bool)
    diff_v = key[1:] != key[:-1]
    diff_h = key[:, 1:] != key[:, :-1]
    edge[1:] |= diff_v
    edge[:-1] |= diff_v
    edge[:, 1:] |= diff_h
    edge[:, :-1] |= diff_h
    return edge & valid


def _interior_point(region: np.ndarray) -> tuple[int, int]:
    """The pixel farthest from the region's border (where a label is best placed), as (x, y)."""
    padded = np.pad(region.view(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, 3)
    y, x = np.unravel_index(int(dist.argmax()), dist.shape)
    return int(x) - 1, int(y) - 1


def _draw_regions(image: np.ndarray, region_map: np.ndarray, ids: np.ndarray,
                  colours: np.ndarray, labels: list[str | None], alpha: float,
                  show_labels: bool, min_label_area: int, line_width: int | None,
                  placed_labels: list | None = None) -> np.ndarray:
    """Blend each region (``ids[i]`` coloured ``colours[i]``), outline it, label it.

    A label is centred on its region's innermost pixel when that place is free, else on the
    nearest free place still centred inside the region (a label centred on another region
    would name that one), else in a smaller font; larger regions are labelled first and a
    label that fits nowhere is left out.
    """
    img = np.ascontiguousarray(image)
    h, w = img.shape[:2]
    if region_map.shape != (h, w):
        raise D2SegError(f"the map is {region_map.shape[0]}x{region_map.shape[1]} but the image "
                         f"is {h}x{w}", hint="pair each map with its own image")
    out = img.copy()
    index, valid = _region_index(region_map, ids)
    if not valid.any():
        return out
    fill = colours[index]
    blended = cv2.addWeighted(img, 1.0 - alpha, fill, alpha, 0.0)
    np.copyto(out, blended, where=valid[:, :, None])
    edges = _region_edges(index, valid)
    out[edges] = np.clip(np.rint(colours[index[edges]] * 0.55), 0, 255).astype(np.uint8)
    if show_labels:
        style = Style.for_image(h, w, line_width)
        areas = np.bincount(index[valid], minlength=ids.size)
        boxes = _region_boxes(index, valid, ids.size)
        layout = LabelLayout(h, w, style)
        for i in np.argsort(-areas, kind="stable"):
            if not labels[i] or areas[i] < min_label_area:
                continue
            x0, y0, x1, y1 = boxes[i]
            region = (index[y0:y1, x0:x1] == i) & valid[y0:y1, x0:x1]
            px, py = _interior_point(region)
            cx, cy = x0 + px, y0 + py

            def centred(bw, bh, cx=cx, cy=cy):
                return cx - bw // 2, [cy - bh // 2]

            def centre_inside(xs, ys, bw, bh, i=i):
                grid = np.ix_(ys + bh // 2, xs + bw // 2)
                return (index[grid] == i) & valid[grid]

            placed = layout.place(labels[i], centred, allow=centre_inside)
            if placed is None:
                continue
            rect, label_style = placed
            draw_label(out, labels[i], rect, colours[i], label_style)
            if placed_labels is not None:
                placed_labels.append(PlacedLabel(ids[i].item(), labels[i], rect,
                                                 label_style.font_scale))
    return out


def _as_lookup(values, default=None):
    if values is None:
        return lambda k: default
    if isinstance(values, Mapping):
        return lambda k: values.get(k, default)
    return lambda k: values[int(k)] if 0 <= int(k) < len(values) else default


def draw_panoptic(image: np.ndarray, panoptic_map, segments_info: Sequence[Mapping],
                  class_names=None, isthing=None, colors=None, alpha: float = 0.5,
                  show_labels: bool = True, *, min_label_area: int = 64,
                  line_width: int | None = None,
                  placed_labels: list | None = None) -> np.ndarray:
    """Colour each panoptic segment by its class, things in shades of it, and label them.

    ``panoptic_map``: ``(H, W)`` segment ids (ids absent from ``segments_info``, e.g. 0, are void
    and left as they are). Each segment has ``id`` and ``category_id`` and may have ``isthing``
    and ``score``. ``class_names``, ``isthing`` and ``colors`` are lists indexed by category id or
    mappings keyed by it (COCO category ids). Stuff segments take the class colour itself, the
    k-th thing of a class its k-th shade. Labels never overlap (see ``_draw_regions``); given a
    list, ``placed_labels`` receives a ``PlacedLabel`` per label drawn (its ``key`` the segment id).
    """
    pan = np.asarray(_to_numpy(panoptic_map))
    if pan.ndim != 2:
        raise D2SegError(f"a panoptic map must be (H, W) segment ids, got shape {pan.shape}",
                         hint="decode COCO panoptic PNGs with id = R + 256 G + 256^2 B first")
    segments = sorted(segments_info, key=lambda s: s["id"])
    ids = np.array([s["id"] for s in segments], np.int64)
    if np.unique(ids).size != ids.size:
        raise D2SegError("segments_info lists a segment id twice")
    cats = [s["category_id"] for s in segments]
    palette = palette_for(cats, class_names, colors)
    thing_of = _as_lookup(isthing, False)
    seen: dict = {}
    colours = np.zeros((len(segments), 3), np.uint8)
    labels: list[str | None] = []
    for i, s in enumerate(segments):
        thing = bool(s.get("isthing", thing_of(s["category_id"])))
        base = color_of(palette, s["category_id"])
        if thing:
            k = seen.get(s["category_id"], 0)
            seen[s["category_id"]] = k + 1
            colours[i] = instance_shade(base, k)
        else:
            colours[i] = base
        name = _lookup_name(class_names, s["category_id"])
        labels.append(_label_text(name, s.get("score") if thing else None))
    return _draw_regions(image, pan.astype(np.int64, copy=False), ids, colours, labels, alpha,
                         show_labels, min_label_area, line_width, placed_labels)


def draw_semantic(image: np.ndarray, label_map, class_names=None, colors=None,
                  ignore_label: int | None = 255, alpha: float = 0.5, show_labels: bool = True,
                  *, min_label_area: int = 64, line_width: int | None = None,
                  placed_labels: list | None = None) -> np.ndarray:
    """Colour each pixel by its class (``ignore_label`` left as is) and name each class once.

    ``label_map``: ``(H, W)`` class ids, or ``(C, H, W)`` scores/logits (e.g. detectron2's
    ``outputs["sem_seg"]``), drawn as their per-pixel argmax. Labels never overlap (see
    ``_draw_regions``); given a list, ``placed_labels`` receives a ``PlacedLabel`` per label
    drawn (its ``key`` the class id).
    """
    labels_np = np.asarray(_to_numpy(label_map))
    if labels_np.ndim == 3:
        labels_np = labels_np.argmax(axis=0)
    labels_np = labels_np.astype(np.int64, copy=False)
    if labels_np.ndim != 2:
        raise D2SegError(f"a label map must be (H, W) class ids, got shape {labels_np.shape}")
    present = np.unique(labels_np)
    if ignore_label is not None:
        present = present[present != ignore_label]
    present = present[present >= 0]
    palette = palette_for(present.tolist(), class_names, colors)
    colours = np.array([color_of(palette, int(c)) for c in present], np.uint8).reshape(-1, 3)
    names = [_lookup_name(class_names, int(c)) for c in present]
    return _draw_regions(image, labels_np, present, colours, names, alpha, show_labels,
                         min_label_area, line_width, placed_labels)


# ---------------------------------------------------------------------------------------------
# layouts


def _title_bar(text: str, width: int, style: Style, height: int) -> np.ndarray:
    bar = np.full((height, width, 3), 32, np.uint8)
    if text:
        (tw, th), _ = cv2.getTextSize(text, FONT, style.font_scale, style.font_thickness)
        x = max(2, (width - tw) // 2)
        cv2.putText(bar, text, (x, (height + th) // 2), FONT, style.font_scale, (255, 255, 255),
                    style.font_thickness, cv2.LINE_AA)
    return bar


def _fit(image: np.ndarray, height: int, width: int | None = None) -> np.ndarray:
    """Resize to ``height`` keeping the aspect ratio; with ``width``, pad to that box."""
    h, w = image.shape[:2]
    scale = height / h if width is None else min(height / h, width / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = image if (nh, nw) == (h, w) else cv2.resize(image, (nw, nh),
                                                          interpolation=cv2.INTER_AREA)
    if width is None:
        return resized
    canvas = np.zeros((height, width, 3), np.uint8)
    top, left = (height - nh) // 2, (width - nw) // 2
    canvas[top:top + nh, left:left + nw] = resized
    return canvas


def _title_height(style: Style) -> int:
    (_, th), baseline = cv2.getTextSize("Ag", FONT, style.font_scale, style.font_thickness)
    return th + baseline + 12


def side_by_side(images: Sequence[np.ndarray], titles: Sequence[str] | None = None,
                 gap: int = 4) -> np.ndarray:
    """Images in a row at the height of the first (e.g. ground truth | prediction), titled."""
    if not images:
        raise ValueError("side_by_side needs at least one image")
    height = images[0].shape[0]
    parts = [_fit(np.ascontiguousarray(im), height) for im in images]
    style = Style.for_image(height, parts[0].shape[1])
    bar_h = _title_height(style) if titles else 0
    total_w = sum(p.shape[1] for p in parts) + gap * (len(parts) - 1)
    canvas = np.zeros((bar_h + height, total_w, 3), np.uint8)
    x = 0
    for j, part in enumerate(parts):
        pw = part.shape[1]
        if titles:
            canvas[:bar_h, x:x + pw] = _title_bar(titles[j] if j < len(titles) else "", pw,
                                                  style, bar_h)
        canvas[bar_h:, x:x + pw] = part
        x += pw + gap
    return canvas


def montage(rows: Sequence[Sequence[np.ndarray]], row_titles: Sequence[str] | None = None,
            col_titles: Sequence[str] | None = None, cell_height: int | None = None,
            gap: int = 4) -> np.ndarray:
    """A grid (e.g. one row per image, one column per method), every cell the same size."""
    cells = [im for row in rows for im in row]
    if not cells:
        raise ValueError("montage needs at least one image")
    ch = cell_height or max(im.shape[0] for im in cells)
    cw = max(round(im.shape[1] * ch / im.shape[0]) for im in cells)
    ncols = max(len(r) for r in rows)
    style = Style.for_image(ch, cw)
    top_h = _title_height(style) if col_titles else 0
    left_w = 0
    if row_titles:
        left_w = max(cv2.getTextSize(t, FONT, style.font_scale, style.font_thickness)[0][0]
                     for t in row_titles) + 16
    width = left_w + ncols * cw + (ncols - 1) * gap
    height = top_h + len(rows) * ch + (len(rows) - 1) * gap
    canvas = np.zeros((height, width, 3), np.uint8)
    if col_titles:
        for j, t in enumerate(col_titles[:ncols]):
            x = left_w + j * (cw + gap)
            canvas[:top_h, x:x + cw] = _title_bar(t, cw, style, top_h)
    for i, row in enumerate(rows):
        y = top_h + i * (ch + gap)
        if row_titles and i < len(row_titles):
            band = np.full((ch, left_w, 3), 32, np.uint8)
            (tw, th), _ = cv2.getTextSize(row_titles[i], FONT, style.font_scale,
                                          style.font_thickness)
            cv2.putText(band, row_titles[i], (8, (ch + th) // 2), FONT, style.font_scale,
                        (255, 255, 255), style.font_thickness, cv2.LINE_AA)
            canvas[y:y + ch, :left_w] = band
        for j, im in enumerate(row):
            x = left_w + j * (cw + gap)
            canvas[y:y + ch, x:x + cw] = _fit(np.ascontiguousarray(im), ch, cw)
    return canvas


__all__ = ["draw_instances", "draw_panoptic", "draw_semantic", "side_by_side", "montage",
           "normalize_masks", "put_label", "draw_label", "label_rect", "instance_colors",
           "class_colors", "Style", "LabelLayout", "PlacedLabel"]
