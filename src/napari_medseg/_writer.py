"""napari writer hooks: save a Labels layer aligned with its scan, or an Image with its geometry.

A layer read or produced by this plugin carries its scan's geometry in ``metadata["medseg"]``.
A Labels layer made by hand (napari's "new labels" button copies the image's shape, scale,
translate, rotate and affine) has none: the writer then looks in the current viewer for the Image
layer it belongs to (same shape and transform) and uses that scan's geometry, so the file lines up
with the scan. With no such image it says so and writes the layer's own transform.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np

from napari_medseg._layer_data import (
    METADATA_KEY,
    affine_from_transform,
    volume_from_metadata,
)
from napari_medseg.core.labels import LabelTable
from napari_medseg.core.volume import Volume
from napari_medseg.io import write_volume

log = logging.getLogger(__name__)


def _candidate_layers():
    try:
        import napari

        viewer = napari.current_viewer()
    except Exception:  # noqa: BLE001 - no napari session (scripts, tests without a viewer)
        return []
    return list(viewer.layers) if viewer is not None else []


def find_reference(data: np.ndarray, attributes: dict[str, Any], layers=None) -> Volume | None:
    """The geometry of the scan a hand-made layer belongs to: same shape and same transform."""
    layers = _candidate_layers() if layers is None else layers
    spatial = tuple(np.shape(data)[-3:])
    mine = affine_from_transform(attributes, np.ndim(data))
    for layer in layers:
        if layer.name == attributes.get("name") or METADATA_KEY not in (layer.metadata or {}):
            continue
        if tuple(layer.data.shape[-3:]) != spatial:
            continue
        theirs = affine_from_transform(
            {k: getattr(layer, k) for k in ("scale", "translate", "rotate", "affine")}
            | {"affine": layer.affine.affine_matrix}, layer.ndim)
        if not np.allclose(theirs, mine, atol=1e-4):
            continue
        reference = volume_from_metadata(layer.data, layer.metadata)
        if reference is not None:
            log.info("saving %s on the grid of %s", attributes.get("name"), layer.name)
            return reference
    return None


def label_table_from_attributes(attributes: dict[str, Any]) -> LabelTable:
    """Label names from the layer's features (index/name columns) and colours from its colormap."""
    md = (attributes.get("metadata") or {}).get(METADATA_KEY) or {}
    table = LabelTable.from_dict(md["labels"]) if md.get("labels") else LabelTable()
    features = attributes.get("features")
    if features is not None and len(features) and "index" in features and "name" in features:
        for value, name in zip(features["index"], features["name"]):
            if int(value) != 0 and isinstance(name, str):
                table.names[int(value)] = name
    colormap = attributes.get("colormap")
    color_dict = getattr(colormap, "color_dict", None)
    if color_dict:
        for value, rgba in color_dict.items():
            if value is None or int(value) == 0:
                continue
            table.colors.setdefault(int(value), tuple(int(round(c * 255)) for c in list(rgba)[:3]))
    return table


def _volume_for_layer(data, attributes: dict[str, Any], labels: LabelTable | None) -> Volume:
    array = np.asarray(data)
    volume = volume_from_metadata(array, attributes.get("metadata"))
    if volume is None and array.ndim >= 3:
        reference = find_reference(array, attributes)
        if reference is not None:
            volume = reference.with_array(array)
    if volume is None:
        if array.ndim == 2:
            array = array[None]
        warnings.warn(
            f"layer {attributes.get('name')!r}: no scan with the same shape and position was found, "
            "so it is saved with the layer's own scale and translation as its geometry",
            stacklevel=2,
        )
        volume = Volume(array=array, affine=affine_from_transform(attributes, array.ndim))
    volume.labels = labels
    return volume


def write_labels(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """npe2 writer for Labels layers: NIfTI/NRRD/MHA on the scan's grid plus label sidecars."""
    table = label_table_from_attributes(attributes)
    return write_volume(path, _volume_for_layer(data, attributes, table))


def write_image(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """npe2 writer for Image layers: the scan with its geometry (no label sidecars)."""
    return write_volume(path, _volume_for_layer(data, attributes, None))
