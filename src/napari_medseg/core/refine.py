"""A cascade: a second, finer network inside the box of an organ, merged into the first answer.

A 3D network affordable on a CPU sees an abdomen at 1.5 x 1.5 x 2 mm, where a 6 mm liver lesion
is three or four voxels across. The card's ``refine`` section (:class:`~napari_medseg.core.card.
RefineSpec`) names a second card on a finer grid; :class:`~napari_medseg.core.inference.Segmenter`
runs it on the bounding box of the first pass's ``box_labels`` (the liver and its lesions), plus a
margin, and merges the two answers here, before the card's post-processing.

How they are merged: only where the first pass gave one of ``refine.labels`` (liver or lesion),
and only between those labels, the second network's answer replaces the first's. The second
network therefore cannot move an organ's outer border or add a lesion outside the liver; inside
it, it decides what is lesion. With ``refine.claim_background`` it may also take what the first
pass called background (never another organ): a slice-wise first pass can call a large lesion
bulging from the liver's edge background, and the second network, which sees it across slices,
then gives it back, with the liver around it. (Merging by confidence, the surer network winning,
would need both networks' probabilities; it has not been measured.)

One more way back, with ``refine.release_labels``: a whole connected piece of one of those labels
(after the merge) that the second network all but disowns, calling at least ``release_share`` of
it one of ``release_to``, takes the second network's answer on those voxels. ``mr-brain``'s
slice-wise first pass calls pieces of cortex oedema on T1 (both dark); its 3D second pass, which
sees the gyrus across slices, calls them grey matter (and so for the few false pieces of tumour
it calls tissue). The piece as a whole is judged, not voxel by voxel: voxel by voxel the second
network also nibbles at true oedema and breaks it up.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from napari_medseg.core.card import ModelCard, RefineSpec
from napari_medseg.core.errors import CardError


def refine_card(card: ModelCard) -> ModelCard:
    """The validated card of ``card``'s second (refining) network, read from its folder.

    Raises:
        CardError: no refine section, a missing or wrong second card, or one that names
            ``refine.labels`` differently from the first card (the answers are merged value by value).
    """
    from napari_medseg.core.models import load_card

    if card.refine is None:
        raise CardError(f"{card.name}: the card has no refine section")
    path = Path(card.refine.model)
    if not path.is_absolute():
        if card.folder is None:
            raise CardError(f"{card.name}: refine.model {card.refine.model!r} is relative, but the card has no "
                            "folder to resolve it against")
        path = card.folder / path
    if not path.is_file():
        raise CardError(f"{card.path or card.name}: refine.model: card file {str(path)!r} not found")
    second = load_card(path)
    if second.refine is not None:
        raise CardError(f"{path}: refine: a refining card cannot refine again")
    if any(second.labels.names.get(v) != card.labels.names.get(v) for v in card.refine.labels):
        raise CardError(f"{path}: labels: the refining card must name refine.labels {card.refine.labels} as "
                        f"{card.name} does ({ {v: card.labels.names.get(v) for v in card.refine.labels} })")
    return second


def refine_box(labels: np.ndarray, spec: RefineSpec, spacing) -> tuple[slice, ...] | None:
    """The box (napari index slices) the second network runs on: the bounding box of the first
    pass's ``spec.box_labels`` grown by ``spec.margin_mm`` on each side, clipped to the scan;
    None when the first pass found none of them."""
    mask = np.isin(labels, spec.box_labels)
    if not mask.any():
        return None
    box = []
    for axis, (n, step) in enumerate(zip(labels.shape, spacing)):
        hit = np.flatnonzero(mask.any(axis=tuple(k for k in range(labels.ndim) if k != axis)))
        pad = int(np.ceil(float(spec.margin_mm) / float(step)))
        box.append(slice(max(0, int(hit[0]) - pad), min(n, int(hit[-1]) + 1 + pad)))
    return tuple(box)


def merge_refined(first: np.ndarray, second: np.ndarray, box: tuple[slice, ...], labels,
                  claim_background: bool = False) -> np.ndarray:
    """Merge the second network's labels (on the box) into the first's (on the scan), in place:
    where the first pass gave one of ``labels`` (or, with ``claim_background``, background 0) and
    the second gives another of them, the second's is taken. Returns the mask (on the box) of the
    voxels that changed."""
    values = list(labels)
    part = first[box]
    takeable = np.isin(part, values + [0] if claim_background else values)
    changed = takeable & np.isin(second, values) & (second != part)
    part[changed] = second[changed]
    return changed


def release_components(first: np.ndarray, second: np.ndarray, box: tuple[slice, ...], labels, to,
                       min_share: float) -> np.ndarray:
    """Give the second network the connected pieces of ``labels`` it all but disowns, in place.

    A piece is a connected component of one of ``labels`` (26-connected in 3D) on the box of
    ``first``; where ``second`` gives one of ``to`` on at least ``min_share`` of its voxels, the
    piece takes ``second``'s label on those voxels; the rest of the piece, and every other piece,
    keeps its label. Each label's pieces are judged on their own, and a released voxel only ever
    becomes one of ``to``, so the order of ``labels`` does not matter. Returns the mask (on the
    box) of the voxels that changed.
    """
    part = first[box]
    claimed = np.isin(second, list(to))
    released = np.zeros(part.shape, bool)
    structure = np.ones((3,) * part.ndim, bool)
    for value in labels:
        pieces, n = ndimage.label(part == value, structure=structure)
        if n == 0:
            continue
        share = np.asarray(ndimage.mean(claimed, pieces, index=np.arange(1, n + 1)))
        released |= np.isin(pieces, np.flatnonzero(share >= min_share) + 1) & claimed
    part[released] = second[released]
    return released
