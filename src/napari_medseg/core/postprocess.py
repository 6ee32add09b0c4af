"""Post-processing of label maps: components, islands, holes, instances, merging and relabelling.

Plain functions on napari-order label arrays (2D or 3D) that the segmentation engine, the label
tools widget and the command line all call. Rules they share:

* the input is never modified; a new array comes back, cast by the dtype rule of
  :func:`~napari_medseg.core.labels.label_dtype` (uint8, uint16 past 255 labels);
* ``labels`` picks the label values to work on: one value, several, or ``None`` for every label
  present; other labels are left exactly as they were;
* sizes that mean something physically (island volume) take ``spacing`` in mm per axis, so the
  same threshold means the same amount of tissue on a 0.8 mm and a 5 mm scan;
* ``connectivity`` is scipy's rank or a neighbour count (see
  :func:`~napari_medseg.core.regions.connectivity_structure`); the default is face-connected
  (6-connectivity in 3D);
* voxels a function removes become background (0), except for the judges of a component's shape
  and size or place (``remove_elongated``, ``remove_fragments``, ``keep_near``), whose rejected
  pieces take the label around them.

A model card's ``postprocess`` list runs through :func:`apply_postprocess`, the one dispatcher
from a step's ``op`` to the function here.

Distance-based morphology (dilate/erode by mm, smoothing, fill between slices) lives in
:mod:`napari_medseg.core.morphology`; semantic/instance/panoptic outputs in
:mod:`napari_medseg.core.outputs`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage

from napari_medseg.core.errors import InferenceError
from napari_medseg.core.regions import (
    check_axis,
    check_label_array,
    check_spacing,
    components,
    connectivity_structure,
    finish,
    label_boxes,
    pad_box,
    requested_labels,
)

logger = logging.getLogger(__name__)

Labels = int | Iterable[int] | None


def _label_components(array: np.ndarray, labels: Labels, connectivity: int, pad: int = 0):
    """The connected components of each chosen label present, label by label, each worked on in
    the label's bounding box (plus ``pad`` voxels) rather than the whole volume: yields
    ``(value, box, mask, comp, n)``, with ``mask`` the label inside ``array[box]`` and ``comp`` its
    component ids 1..n (0 elsewhere)."""
    boxes = label_boxes(array)
    for value in requested_labels(boxes, labels):
        box = boxes.get(value)
        if box is None:
            continue
        if pad:
            box = pad_box(box, array.shape, pad)
        mask = array[box] == value
        comp, n = components(mask, connectivity)
        yield value, box, mask, comp, n


def keep_largest_component(array: np.ndarray, labels: Labels = None,
                           connectivity: int = 1) -> np.ndarray:
    """Keep only the largest connected component of each chosen label.

    A network's false positives are mostly small detached blobs; for organs that are one piece
    (liver, spleen) the largest component is the organ. Ties go to the component met first in
    C order, so the result is deterministic.

    Args:
        array: label map.
        labels: label value(s) to clean, or None for every label present.
        connectivity: which neighbours join a component (default face-connected).

    Returns:
        A new label map where the other components of those labels are background.
    """
    array = check_label_array(array)
    out = array.copy()
    for value, box, mask, comp, n in _label_components(array, labels, connectivity):
        if n <= 1:
            continue
        keep = int(np.argmax(np.bincount(comp.ravel())[1:])) + 1
        out[box][mask & (comp != keep)] = 0
        logger.debug("label %d: kept 1 of %d components", value, n)
    return finish(out)


def remove_small_islands(array: np.ndarray, min_volume_ml: float,
                         spacing: Sequence[float] | None = None, labels: Labels = None,
                         connectivity: int = 1) -> np.ndarray:
    """Remove connected components smaller than ``min_volume_ml`` millilitres.

    Args:
        array: label map.
        min_volume_ml: components whose volume is strictly below this are removed; a component
            of exactly this volume stays.
        spacing: voxel size in mm per axis (None: 1 mm, so 1000 voxels make 1 mL).
        labels: label value(s), or None for every label present.
        connectivity: which neighbours join a component.

    Returns:
        A new label map without the small components.
    """
    array = check_label_array(array)
    sp = check_spacing(spacing, array.ndim)
    if not np.isfinite(min_volume_ml) or min_volume_ml < 0:
        raise ValueError(f"min_volume_ml={min_volume_ml} must be a finite volume >= 0 (mL)")
    voxel_ml = float(np.prod(sp)) / 1000.0
    # the threshold in voxels, with a tolerance so 4 x 0.125 mL counts as 0.5 mL
    min_voxels = min_volume_ml / voxel_ml * (1 - 1e-9)
    out = array.copy()
    removed = 0
    for _value, box, _mask, comp, n in _label_components(array, labels, connectivity):
        sizes = np.bincount(comp.ravel(), minlength=n + 1)
        small = sizes < min_voxels
        small[0] = False
        if small.any():
            out[box][small[comp]] = 0
            removed += int(small.sum())
    logger.info("removed %d islands smaller than %g mL", removed, min_volume_ml)
    return finish(out)


def _pieces(array: np.ndarray, labels: Labels, connectivity: int):
    """Each connected component of the chosen labels, for the judges below (``keep_inside``,
    ``remove_elongated``, ``remove_fragments``): yields ``(value, where, piece, around)`` with
    ``piece`` the component's mask inside the box ``where`` (a pair of slicings:
    ``array[where[0]][where[1]]``) and ``around`` the labels of its shell, the face neighbours just
    outside it."""
    shell_structure = connectivity_structure(array.ndim, 1)
    for value, box, mask, comp, _n in _label_components(array, labels, connectivity, pad=1):
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
              spacing: Sequence[float] | None = None, connectivity: int = 1) -> np.ndarray:
    """Remove components of ``labels`` lying farther than ``max_distance_mm`` from every voxel of an
    ``anchor`` label; they take the label that surrounds them.

    Peritumoral oedema lies around its tumour: an "oedema" component several centimetres from any
    tumour is grey or white matter the network misread (on ``mr-brain``'s T1 phantoms oedema is
    about as dark as grey matter). A component's distance is that of its nearest voxel to the
    nearest anchor voxel, in mm, so a fragment of the oedema that grey matter cuts off near the
    tumour stays. Where the map holds no anchor voxel nothing is judged: without a tumour there is
    nothing to measure from, and the other steps decide.

    Args:
        array: label map.
        labels: label value(s) to judge (e.g. oedema); None is not allowed here.
        anchor: the label value(s) distances are measured from (e.g. the tumour).
        max_distance_mm: components farther than this are removed; > 0.
        spacing: voxel size in mm per axis.
        connectivity: which neighbours join a component.

    Returns:
        A new label map.
    """
    array = check_label_array(array)
    if labels is None:
        raise ValueError("keep_near needs the label value(s) to judge, got labels=None")
    if not np.isfinite(max_distance_mm) or max_distance_mm <= 0:
        raise ValueError(f"max_distance_mm={max_distance_mm} must be a distance in mm > 0")
    sp = check_spacing(spacing, array.ndim)
    anchors = np.isin(array, np.asarray(requested_labels({}, anchor), dtype=np.int64))
    if not anchors.any():
        return finish(array.copy())
    # distances only matter up to max_distance_mm: measured in the anchors' box grown by that much,
    # where every voxel that close lies; a piece wholly outside it is far
    reach = np.ceil(max_distance_mm / sp).astype(int)
    hit = np.nonzero(anchors)
    near = pad_box(tuple(slice(int(a.min()), int(a.max()) + 1) for a in hit), array.shape, reach)
    close = ndimage.distance_transform_edt(~anchors[near], sampling=sp) <= max_distance_mm
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


def fill_holes(array: np.ndarray, labels: Labels = None, mode: str = "3d", axis: int = 0,
               overwrite: bool = False, connectivity: int = 1) -> np.ndarray:
    """Fill the holes of each chosen label: regions it encloses completely.

    Args:
        array: label map.
        labels: label value(s), or None for every label present.
        mode: ``"3d"`` fills cavities enclosed in 3D; ``"2d"`` fills holes slice by slice along
            ``axis`` (a vessel running through an organ is a 3D tunnel but a 2D hole).
        axis: the slicing axis for ``"2d"``.
        overwrite: when False (default) only background voxels are filled, so a lesion label
            inside an organ survives filling the organ; when True every enclosed voxel is taken.
        connectivity: how the background outside a label connects (default face-connected).

    Returns:
        A new label map.
    """
    array = check_label_array(array)
    if mode not in ("3d", "2d"):
        raise ValueError(f"mode={mode!r} must be '3d' or '2d'")
    if mode == "2d":
        if array.ndim != 3:
            raise ValueError(f"mode='2d' needs a 3D array, got {array.ndim}D")
        within = check_axis(axis, array.ndim)
    else:
        within = None
    structure = connectivity_structure(array.ndim, connectivity, within)
    out = array.copy()
    boxes = label_boxes(array)
    for value in requested_labels(boxes, labels):
        box = boxes.get(value)
        if box is None:
            continue
        box = pad_box(box, array.shape, 1)
        mask = array[box] == value
        holes = ndimage.binary_fill_holes(mask, structure=structure) & ~mask
        target = out[box]
        if not overwrite:
            holes &= target == 0
        target[holes] = value
    return finish(out)


def split_instances(array: np.ndarray, labels: Labels = None,
                    connectivity: int = 1) -> tuple[np.ndarray, int]:
    """Number every connected component of the chosen labels as its own instance.

    Components of different labels are separate instances even where they touch. Instances are
    numbered 1..n in order of label value, then in C order of their first voxel.

    Returns:
        ``(instances, n)``: a new array with instance ids (0 elsewhere) and the instance count.
        Which class an instance belongs to is ``array[instances == i]`` (see
        :func:`napari_medseg.core.outputs.make_output` for a table).
    """
    array = check_label_array(array)
    out = np.zeros(array.shape, dtype=np.int32)
    total = 0
    for _value, box, mask, comp, n in _label_components(array, labels, connectivity):
        out[box][mask] = comp[mask] + total
        total += n
    return finish(out), total


def split_label(array: np.ndarray, label: int, connectivity: int = 1) -> np.ndarray:
    """Give each connected component of ``label`` its own value, in place of the label map.

    The largest component keeps ``label``; the others get new values above the current maximum,
    in decreasing size, so the rest of the map (and the largest piece's name) is unchanged.
    """
    array = check_label_array(array)
    value = requested_labels({}, label)[0]
    boxes = label_boxes(array)
    out = array.copy()
    if value not in boxes:
        return finish(out)
    box = boxes[value]
    mask = array[box] == value
    comp, n = components(mask, connectivity)
    if n <= 1:
        return finish(out)
    sizes = np.bincount(comp.ravel())[1:]
    order = np.argsort(-sizes, kind="stable") + 1  # component ids, largest first
    lut = np.zeros(n + 1, dtype=np.int64)
    lut[order[0]] = value
    lut[order[1:]] = int(array.max()) + 1 + np.arange(n - 1)
    out = out.astype(np.result_type(out.dtype, np.min_scalar_type(int(lut.max()))), copy=False)
    out[box][mask] = lut[comp[mask]]
    return finish(out)


def relabel(array: np.ndarray, mapping: Mapping[int, int]) -> np.ndarray:
    """Change label values by a mapping ``{old: new}``; unmapped values stay, 0 erases a label.

    A lookup table does it in one pass whatever the number of labels.
    """
    array = check_label_array(array)
    for old, new in mapping.items():
        if int(old) != old or int(new) != new or old < 0 or new < 0:
            raise ValueError(
                f"relabel mapping {old!r} -> {new!r}: values must be whole numbers >= 0")
    top = int(array.max()) if array.size else 0
    lut = np.arange(top + 1, dtype=np.int64)
    for old, new in mapping.items():
        if int(old) <= top:
            lut[int(old)] = int(new)
    lut = finish(lut)
    return finish(lut[array])


def merge_labels(array: np.ndarray, sources: Iterable[int], target: int) -> np.ndarray:
    """Merge the ``sources`` label values into ``target`` (e.g. liver segments into liver)."""
    return relabel(array, {int(s): int(target) for s in sources})


def apply_postprocess(steps: Sequence[dict], array: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Run a card's ``postprocess`` steps (``largest_component``, ``remove_small``, ``fill_holes``,
    ``keep_inside``, ``remove_elongated``, ``remove_fragments``, ``keep_near``), as the engine does after
    segmenting; each is explained above. An unknown op raises :class:`~napari_medseg.core.errors.InferenceError`."""
    for step in steps:
        step = dict(step)
        op = step.pop("op", None)
        labels = step.pop("labels", None)
        if op == "largest_component":
            array = keep_largest_component(array, labels=labels)
        elif op == "remove_small":
            array = remove_small_islands(array, float(step.get("min_ml", 0.0)), spacing=spacing, labels=labels)
        elif op == "fill_holes":
            array = fill_holes(array, labels=labels)
        elif op == "keep_inside":
            array = keep_inside(array, labels, step["host"], float(step.get("min_fraction", 0.5)))
        elif op == "remove_elongated":
            width, breadth = step.get("max_width_mm"), step.get("max_breadth_mm")
            array = remove_elongated(array, float(step["max_elongation"]), spacing=spacing, labels=labels,
                                     max_width_mm=None if width is None else float(width),
                                     max_breadth_mm=None if breadth is None else float(breadth))
        elif op == "remove_fragments":
            array = remove_fragments(array, float(step["min_share"]), labels=labels)
        elif op == "keep_near":
            array = keep_near(array, labels, step["anchor"], float(step["max_distance_mm"]), spacing=spacing)
        else:
            raise InferenceError(f"postprocess op {op!r}: expected one of largest_component, remove_small, "
                                 "fill_holes, keep_inside, remove_elongated, remove_fragments, keep_near")
    return array
