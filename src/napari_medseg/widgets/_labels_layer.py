"""What the label widgets read from and write to a Labels layer besides its voxels.

* the label table (names for hovering, colours), read exactly as the writer reads it
  (:func:`napari_medseg._writer.label_table_from_attributes`) so the widgets, the sidecar and the
  status bar agree, and written back to the colormap, the features and the medseg metadata;
* the voxel spacing in mm, from the layer's recorded geometry or its scale/affine
  (:func:`napari_medseg._layer_data.volume_from_layer`);
* the segment table of instance outputs (``metadata[SEGMENTS_KEY]``);
* an edit fingerprint that changes whenever the voxels may have changed (a new array, a paint
  stroke, an undo or a redo), cheap enough to check on every refresh of the layer.
"""

from __future__ import annotations

import warnings

import numpy as np

from napari_medseg._layer_data import METADATA_KEY, label_layer_kwargs, volume_from_layer
from napari_medseg._writer import label_table_from_attributes
from napari_medseg.core.labels import LabelTable
from napari_medseg.core.regions import label_counts

#: layer metadata key of an instance/panoptic output's segment table (``Segment.to_dict()`` rows:
#: which class and instance number each ID is), read by the statistics widget
SEGMENTS_KEY = "medseg_segments"


def layer_label_table(layer) -> LabelTable:
    """Names and colours of a Labels layer (metadata, then features and colormap)."""
    return label_table_from_attributes(
        {"metadata": layer.metadata, "features": layer.features, "colormap": layer.colormap})


def present_values(data: np.ndarray) -> list[int]:
    """Label values present in ``data`` (background excluded), from one slab-wise bincount."""
    counts = label_counts(np.asarray(data))
    return [int(v) for v in np.flatnonzero(counts) if v != 0]


def set_layer_label_table(layer, table: LabelTable, present: list[int] | None = None) -> None:
    """Give the layer these names and colours (hover names, colormap, and the saved sidecar)."""
    present = present_values(layer.data) if present is None else present
    kwargs = label_layer_kwargs(table, present)
    layer.colormap = kwargs["colormap"]
    layer.features = kwargs["features"]
    md = (layer.metadata or {}).get(METADATA_KEY)
    if md is not None:
        md["labels"] = table.to_dict()


def layer_spacing(layer) -> np.ndarray:
    """Voxel size in mm along the layer's three spatial axes (napari order)."""
    return volume_from_layer(layer).spacing


def edit_fingerprint(layer) -> tuple:
    """Changes when the layer's voxels may have changed: new array, stroke, undo or redo.

    napari emits ``paint`` for strokes and ``data`` for a new array, but an undo only refreshes the
    layer (``set_data``, which every slider step emits too); the lengths of the undo and redo
    queues tell an undo from a slider step.
    """
    with warnings.catch_warnings():  # napari warns about private attributes read by plugins
        warnings.simplefilter("ignore", FutureWarning)
        undo = getattr(layer, "_undo_history", ())
        redo = getattr(layer, "_redo_history", ())
    return (id(layer.data), len(undo), len(redo), id(undo[-1]) if len(undo) else None)
