"""Putting a finished segmentation into the viewer: a new layer, or one undoable edit of an old one.

Everything costly was done in the worker (:mod:`._segment_job`); what is left here runs on the main
thread and is short: ``viewer.add_labels`` with ready data and kwargs, or writing one
:class:`~napari_medseg.core.merge.LabelChange` into an existing layer.

An edit goes into the layer's own undo history as one item, exactly like a paint stroke, so Ctrl+Z
restores the layer as it was before the run. The public way is ``data_setitem`` inside
``block_history``; it stores three int64 index arrays per changed voxel and gathers and scatters
through them on the main thread, fine for a few organs but about 1 s and 2 GB for a whole 512x512x300
map replaced. Edits above ``MASKED_EDIT_VOXELS`` therefore go in as napari 0.9's own masked history
atom (bounding box, mask, old values, new values: a bool per voxel of the box), which the undo and
redo code replays both ways. That uses the private ``_save_history`` (napari warns that plugins lose
private access in 0.10); where it is gone, the public path is taken for every edit.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from napari_medseg._layer_data import METADATA_KEY, label_layer_kwargs
from napari_medseg.core.labels import LabelTable
from napari_medseg.core.merge import LabelChange

log = logging.getLogger(__name__)


#: changes above this many voxels use the lean masked history atom (see the module docstring)
MASKED_EDIT_VOXELS = 2_000_000


def _masked_atom_class():
    try:
        from napari.layers.labels.labels import _MaskedPaintAtom
    except ImportError:  # pragma: no cover - napari before or after the masked history atoms
        return None
    return _MaskedPaintAtom


def apply_change_undoable(layer, change: LabelChange) -> None:
    """Write ``change`` into a Labels layer as one undoable step (Ctrl+Z restores the old values)."""
    data = layer.data
    if not isinstance(data, np.ndarray):
        raise TypeError(f"layer {layer.name!r}: only in-memory (numpy) label layers can be edited in place")
    atom = _masked_atom_class() if change.voxels > MASKED_EDIT_VOXELS else None
    save = getattr(layer, "_save_history", None) if atom is not None else None
    if save is None:
        mask = np.ones(data[change.box].shape, bool) if change.mask is None else change.mask
        index = tuple(i + b.start for i, b in zip(np.nonzero(mask), change.box))
        with layer.block_history():
            layer.data_setitem(index, change.values.ravel())
        return
    old = change.old_values(data)
    change.apply(data)  # data first: listeners of the paint event see the new labels
    with layer.block_history():
        save(atom(change.box, change.mask, old, change.values))
    layer.refresh()


def update_label_names(layer, names: LabelTable, present: list[int]) -> None:
    """Give an edited layer colours and hover names for labels the run added (kept ones stay)."""
    table = LabelTable()
    md = (layer.metadata or {}).get(METADATA_KEY) or {}
    if md.get("labels"):
        table = LabelTable.from_dict(md["labels"])
    features = layer.features
    if len(features) and "index" in features and "name" in features:
        for value, name in zip(features["index"], features["name"]):
            if int(value) != 0:
                table.names.setdefault(int(value), str(name))
    color_dict = getattr(layer.colormap, "color_dict", None) or {}
    for value, rgba in color_dict.items():
        if value is not None and int(value) != 0:
            table.colors.setdefault(int(value), tuple(int(round(c * 255)) for c in list(rgba)[:3]))
    new = [v for v in present if v not in table.names]
    if not new and all(v in color_dict for v in present):
        return
    for v in present:
        table.names.setdefault(v, names.name(v))
        table.colors.setdefault(v, names.color(v))
    kwargs = label_layer_kwargs(table)
    layer.colormap = kwargs["colormap"]
    layer.features = kwargs["features"]
    if md:
        md["labels"] = table.to_dict()


def add_labels_layer(viewer, data: np.ndarray, kwargs: dict):
    """Add the result as a Labels layer; returns the layer and the seconds the main thread spent."""
    t0 = time.perf_counter()
    layer = viewer.add_labels(data, **kwargs)
    seconds = time.perf_counter() - t0
    log.info("added %s (%s %s) in %.3f s", layer.name, data.shape, data.dtype, seconds)
    return layer, seconds


def put_probability(viewer, data: np.ndarray, kwargs: dict):
    """Add the probability layer, or replace the data of the one a previous run made."""
    name = kwargs["name"]
    from napari.layers import Image

    old = viewer.layers[name] if name in viewer.layers else None
    if isinstance(old, Image) and old.data.shape == data.shape:
        old.data = data
        return old
    return viewer.add_image(data, **kwargs)
