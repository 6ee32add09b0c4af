"""Judges of a label's connected components: by host, shape, share of the largest, or distance.

Each function looks at every connected component of the chosen labels on its own and removes
the ones that fail a test a radiologist would apply by eye: a lesion must lie inside its organ
(``keep_inside``), a vessel-like sliver is not a lesion (``remove_elongated``), a crumb beside a
tumour is not a second tumour (``remove_fragments``), oedema far from every tumour is not oedema
(``keep_near``). Unlike the removals in :mod:`napari_medseg.core.postprocess`, whose voxels become
background, a rejected component takes the label that surrounds it, so a false lesion inside the
liver becomes liver and not a hole.

The rules of :mod:`napari_medseg.core.postprocess` hold here too: the input is never modified,
``labels`` picks the label values, sizes and distances take ``spacing`` in mm, and a card's
``postprocess`` steps reach these functions through its ``apply_postprocess``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np
from scipy import ndimage

from napari_medseg.core.regions import (
    Labels,
    check_label_array,
    check_spacing,
    connectivity_structure,
    finish,
    label_components,
    pad_box,
    requested_labels,
)

logger = logging.getLogger(__name__)


def _pieces(array: np.ndarray, labels: Labels, connectivity: int):
    """Each connected component of the chosen labels, for the judges here (``keep_inside``,
    ``remove_elongated``, ``remove_fragments``): yields ``(value, where, piece, around)`` with
    ``piece`` the component's mask inside the box ``where`` (a pair of slicings:
    ``array[where[0]][where[1]]``) and ``around`` the labels of its shell, the face neighbours just
    outside it."""
    shell_structure = connectivity_structure(array.ndim, 1)
    for value, box, mask, comp, _n in label_components(array, labels, connectivity, pad=1):
        for i, sub in enumerate(ndimage.find_objects(comp), start=1):
            sub = pad_box(sub, mask.shape, 1)
            piece = comp[sub] == i
            shell = ndimage.binary_dilation(piece, structure=shell_structure) & ~piece
            yield value, (box, sub), piece, array[box][sub][shell]


def keep_inside(array: np.ndarray, labels: Labels, host: int | Iterable[int], min_fraction: float = 0.5,
                connectivity: int = 1) -> np.ndarray:
    """Remove components of ``labels`` that do not lie inside a ``host`` label.

    A liver lesion is inside the liver; a "lesion" in the gallbladder or bowel beside it is a false
    positive that no threshold on the lesion class can tell apart. Each connected component of the
    chosen labels is judged by its shell, the voxels just outside it (face neighbours): the
    component is kept when at least ``min_fraction`` of the shell belongs to a host label. A lesion
    on the liver's edge keeps part of its shell outside, hence a fraction rather than "all".

    Args:
        array: label map.
        labels: label value(s) to judge (e.g. the lesion label); None is not allowed here,
            because "every label inside a host" has no meaning.
        host: the label value(s) the components must lie in (e.g. the liver).
        min_fraction: share of the shell that must be host, in [0, 1].
        connectivity: which neighbours join a component (default face-connected).

    Returns:
        A new label map where the components outside their host are background.
    """
    array = check_label_array(array)
    if labels is None:
        raise ValueError("keep_inside needs the label value(s) to judge, got labels=None")
    hosts = np.asarray(requested_labels({}, host), dtype=np.int64)
    if not np.isfinite(min_fraction) or not 0.0 <= min_fraction <= 1.0:
        raise ValueError(f"min_fraction={min_fraction} must be a share between 0 and 1")
    out = array.copy()
    dropped = 0
    for _value, (box, sub), piece, around in _pieces(array, labels, connectivity):
        inside = float(np.isin(around, hosts).mean()) if around.size else 0.0
        if inside < min_fraction:
            out[box][sub][piece] = 0
            dropped += 1
    logger.info("keep_inside: removed %d components outside labels %s", dropped, hosts.tolist())
    return finish(out)


def principal_axes_mm(mask: np.ndarray, spacing: Sequence[float] | None = None) -> np.ndarray:
    """Full axis lengths in mm, longest first, of the solid ellipsoid with the mask's second moments.

    A uniform solid ellipsoid with semi-axis ``a`` has variance ``a**2 / 5`` along it, so each
    axis is ``2 * sqrt(5 * eigenvalue)`` of the covariance of the voxel centres in mm plus each
    voxel's own extent (``s**2 / 12`` per axis, the variance of a uniform voxel). Without that
    term a lesion seen on one thick slice would have a zero-length axis; with it, a disc on one
    5 mm slice and a 12 mm ball on three 5 mm slices both stay close to round.
    """
    sp = check_spacing(spacing, mask.ndim)
    pts = np.argwhere(mask) * sp
    if not len(pts):
        raise ValueError("principal axes of an empty mask")
    cov = np.diag(sp ** 2 / 12.0)
    if len(pts) > 1:
        cov = cov + np.cov(pts.T, bias=True)
    return 2.0 * np.sqrt(5.0 * np.linalg.eigvalsh(cov)[::-1])


def remove_elongated(array: np.ndarray, max_elongation: float, spacing: Sequence[float] | None = None,
                     labels: Labels = None, max_width_mm: float | None = None,
                     max_breadth_mm: float | None = None, connectivity: int = 1) -> np.ndarray:
    """Remove tube-like components: longer than ``max_elongation`` times their width (and, with
    ``max_width_mm``, narrower than that); they take the label that surrounds them.

    Tumours and cysts are round or ovoid; a vessel that a network mistakes for a lesion is a tube.
    The ratio of a component's longest to its shortest principal axis
    (:func:`principal_axes_mm`) separates them where intensity cannot. A large lesion that the
    network found only in part can be elongated too, but it is wider than any vessel, which is
    what ``max_width_mm`` keeps (the portal vein, the widest vessel in the liver, is about 13 mm).
    On this project's CT tuning phantoms, ratio 2 and width 12 mm removed 13 of the 17 false
    >= 10 mm lesions of ``ct-abdomen-3d`` and none of its true ones (``scripts/model_recipes.py``).
    A vessel is narrow across in both directions; a large lesion found on a few slices only is a
    flat disc, broad in two. ``max_breadth_mm`` keeps a component whose middle axis reaches it
    (``ct-abdomen-2d`` lost such a lesion, 28 x 24 x 12 mm, to the filter without it).
    A removed component becomes the most common label of its shell (the face neighbours just
    outside it), so a rejected "lesion" inside the liver becomes liver instead of a hole;
    background when the shell holds nothing else.

    Args:
        array: label map.
        max_elongation: components whose axis ratio is strictly above this are removed (>= 1).
        spacing: voxel size in mm per axis (None: 1 mm); the axes are measured in mm.
        labels: label value(s), or None for every label present.
        max_width_mm: only components whose shortest axis is below this are removed; None: any.
        max_breadth_mm: only components whose middle axis is below this are removed (a flat
            disc broader than any vessel stays); None: any.
        connectivity: which neighbours join a component.

    Returns:
        A new label map.
    """
    array = check_label_array(array)
    sp = check_spacing(spacing, array.ndim)
    if not np.isfinite(max_elongation) or max_elongation < 1:
        raise ValueError(f"max_elongation={max_elongation} must be a finite ratio >= 1")
    if max_width_mm is not None and not (np.isfinite(max_width_mm) and max_width_mm > 0):
        raise ValueError(f"max_width_mm={max_width_mm} must be a width in mm > 0")
    if max_breadth_mm is not None and not (np.isfinite(max_breadth_mm) and max_breadth_mm > 0):
        raise ValueError(f"max_breadth_mm={max_breadth_mm} must be a breadth in mm > 0")
    out = array.copy()
    removed = 0
    for value, (box, sub), piece, around in _pieces(array, labels, connectivity):
        axes = principal_axes_mm(piece, sp)
        if (axes[0] <= max_elongation * axes[-1] or (max_width_mm is not None and axes[-1] >= max_width_mm)
                or (max_breadth_mm is not None and axes[1] >= max_breadth_mm)):
            continue
        out[box][sub][piece] = _surrounding_label(around, value)
        removed += 1
    logger.info("remove_elongated: removed %d components longer than %g times their width", removed, max_elongation)
    return finish(out)


def _surrounding_label(around: np.ndarray, value: int) -> int:
    """The most common label of a component's shell other than its own (0 when there is none):
    what a removed component becomes, so a rejected piece inside an organ is not left a hole."""
    around = around[around != value]
    return int(np.bincount(around).argmax()) if around.size else 0


def remove_fragments(array: np.ndarray, min_share: float, labels: Labels = None,
                     connectivity: int = 1) -> np.ndarray:
    """Remove components smaller than ``min_share`` of the largest component of their label; they
    take the label that surrounds them.

    A network that finds a tumour often also calls tumour a few scattered pieces of the oedema
    around it: each a millilitre or so, a tenth or less of the tumour itself, yet each counts as a false
    lesion. An absolute size (``remove_small``) cannot drop them without dropping small true tumours
    in other scans; a share of the largest piece in the same scan can. On ``mr-brain``'s tuning
    phantoms a tenth removed 10 of its 13 false >= 10 mm tumours and no true one
    (``scripts/model_recipes.py``). Its price, written where a card uses it: a second, separate
    lesion under that share of the first (a small metastasis beside a large one) is removed too.
    A removed piece becomes the most common label of its shell (oedema, for a piece inside it),
    background when the shell holds nothing else.

    Args:
        array: label map.
        min_share: components with fewer voxels than this share of their label's largest
            component are removed; in [0, 1] (0 removes nothing; the largest always stays).
        labels: label value(s), or None for every label present.
        connectivity: which neighbours join a component.

    Returns:
        A new label map.
    """
    array = check_label_array(array)
    if not np.isfinite(min_share) or not 0.0 <= min_share <= 1.0:
        raise ValueError(f"min_share={min_share} must be a share between 0 and 1")
    out = array.copy()
    removed = 0
    pieces: dict[int, list] = {}
    for value, where, piece, around in _pieces(array, labels, connectivity):
        pieces.setdefault(value, []).append((int(np.count_nonzero(piece)), where, piece, around))
    for value, found in pieces.items():
        largest = max(size for size, *_ in found)
        for size, (box, sub), piece, around in found:
            if size < min_share * largest:
                out[box][sub][piece] = _surrounding_label(around, value)
                removed += 1
    logger.info("remove_fragments: removed %d components under %g of their label's largest", removed, min_share)
    return finish(out)


def keep_near(array: np.ndarray, labels: Labels, anchor: int | Iterable[int], max_distance_mm: float,
              spacing: Sequence[float] | None = None, connectivity: int = 1,
              without_anchor: str = "keep") -> np.ndarray:
    """Remove components of ``labels`` lying farther than ``max_distance_mm`` from every voxel of an
    ``anchor`` label; they take the label that surrounds them.

    Peritumoral oedema lies around its tumour: an "oedema" component several centimetres from any
    tumour is grey or white matter the network misread (on ``mr-brain``'s T1 phantoms oedema is
    about as dark as grey matter). A component's distance is that of its nearest voxel to the
    nearest anchor voxel, in mm, so a fragment of the oedema that grey matter cuts off near the
    tumour stays. Where the map holds no anchor voxel, ``without_anchor`` decides: ``"keep"`` judges
    nothing (without a tumour there is nothing to measure from, and the other steps decide);
    ``"remove"`` takes every component as too far, for a model whose label only exists around its
    anchor (``mr-brain``'s peritumoral oedema, which its phantoms never hold without a tumour; in the
    clinic oedema without a tumour in view, after a stroke or a resection, would go too).

    Args:
        array: label map.
        labels: label value(s) to judge (e.g. oedema); None is not allowed here.
        anchor: the label value(s) distances are measured from (e.g. the tumour).
        max_distance_mm: components farther than this are removed; > 0.
        spacing: voxel size in mm per axis.
        connectivity: which neighbours join a component.
        without_anchor: ``"keep"`` or ``"remove"``: what becomes of the components where the map
            holds no anchor voxel.

    Returns:
        A new label map.
    """
    array = check_label_array(array)
    if labels is None:
        raise ValueError("keep_near needs the label value(s) to judge, got labels=None")
    if without_anchor not in ("keep", "remove"):
        raise ValueError(f"without_anchor={without_anchor!r}: expected 'keep' or 'remove'")
    if not np.isfinite(max_distance_mm) or max_distance_mm <= 0:
        raise ValueError(f"max_distance_mm={max_distance_mm} must be a distance in mm > 0")
    sp = check_spacing(spacing, array.ndim)
    anchors = np.isin(array, np.asarray(requested_labels({}, anchor), dtype=np.int64))
    if not anchors.any() and without_anchor == "keep":
        return finish(array.copy())
    if anchors.any():
        # distances only matter up to max_distance_mm: measured in the anchors' box grown by that
        # much, where every voxel that close lies; a piece wholly outside it is far
        reach = np.ceil(max_distance_mm / sp).astype(int)
        hit = np.nonzero(anchors)
        near = pad_box(tuple(slice(int(a.min()), int(a.max()) + 1) for a in hit), array.shape, reach)
        close = ndimage.distance_transform_edt(~anchors[near], sampling=sp) <= max_distance_mm
    else:  # no anchor, and without_anchor="remove": an empty box, which no piece reaches
        near = tuple(slice(0, 0) for _ in array.shape)
        close = np.zeros((0,) * array.ndim, bool)
    out = array.copy()
    removed = 0
    for value, (box, sub), piece, around in _pieces(array, labels, connectivity):
        start = [b.start + s.start for b, s in zip(box, sub)]  # the piece's corner on the scan
        lo = [max(a, n.start) for a, n in zip(start, near)]
        hi = [min(a + k, n.stop) for a, k, n in zip(start, piece.shape, near)]
        overlap = all(x < y for x, y in zip(lo, hi)) and bool(
            (piece[tuple(slice(x - a, y - a) for x, y, a in zip(lo, hi, start))]
             & close[tuple(slice(x - n.start, y - n.start) for x, y, n in zip(lo, hi, near))]).any())
        if not overlap:
            out[box][sub][piece] = _surrounding_label(around, value)
            removed += 1
    logger.info("keep_near: removed %d components farther than %g mm from labels %s", removed, max_distance_mm,
                requested_labels({}, anchor))
    return finish(out)
