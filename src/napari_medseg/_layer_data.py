"""Volume <-> napari layer data: the only place that knows how napari stores geometry.

A layer made from a Volume gets ``scale`` (spacing), ``translate`` (origin), ``rotate`` (residual
direction for oblique scans; identity otherwise), ``units`` mm and ``axis_labels``, and carries the
full geometry in ``metadata["medseg"]`` so the writer can put voxels back exactly where the file
had them. Going the other way, :func:`volume_from_layer` rebuilds a Volume from a layer's data and
attributes (what npe2 writers receive).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_medseg.core.labels import LabelTable
from napari_medseg.core.volume import FileGeometry, Volume

METADATA_KEY = "medseg"
AXIS_LABELS = ("I", "P", "L")  # world axes point to Inferior, Posterior, Left


def _transform_kwargs(volume: Volume) -> dict[str, Any]:
    """scale/translate/rotate (or a full affine when the direction has shear) for napari."""
    lead = volume.array.ndim - 3
    spacing = volume.spacing
    direction = volume.direction
    kwargs: dict[str, Any] = {
        "units": ("mm",) * 3 if not lead else ("",) * lead + ("mm",) * 3,
        "axis_labels": ((volume.channel_axis_name or "channel",) * lead) + AXIS_LABELS,
    }
    if np.allclose(direction.T @ direction, np.eye(3), atol=1e-6):
        kwargs["scale"] = tuple([1.0] * lead + spacing.tolist())
        kwargs["translate"] = tuple([0.0] * lead + volume.origin.tolist())
        if not np.allclose(direction, np.eye(3), atol=1e-9):
            rot = np.eye(3 + lead)
            rot[lead:, lead:] = direction
            kwargs["rotate"] = rot
    else:  # sheared grid: napari gets the whole affine
        aff = np.eye(4 + lead)
        aff[lead:, lead:] = volume.affine
        kwargs["affine"] = aff
    return kwargs


def geometry_metadata(volume: Volume) -> dict[str, Any]:
    """What a layer carries in ``metadata["medseg"]``: JSON-friendly geometry and facts."""
    return {
        "affine": volume.affine.tolist(),
        "source": volume.source.to_dict() if volume.source is not None else None,
        "meta": dict(volume.meta),
        "labels": volume.labels.to_dict() if volume.labels is not None else None,
    }


def label_layer_kwargs(table: LabelTable, present: np.ndarray | None = None) -> dict[str, Any]:
    """Colours (DirectLabelColormap dict) and hover names (features) for a Labels layer."""
    values = sorted(set(table.values()) | set(int(v) for v in (present if present is not None else [])))
    values = [v for v in values if v != 0]
    colors: dict[Any, Any] = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0)}
    for v in values:
        r, g, b = table.color(v)
        colors[v] = (r / 255.0, g / 255.0, b / 255.0, 1.0)
    features = {"index": [0] + values, "name": ["background"] + [table.name(v) for v in values]}
    return {"colormap": colors, "features": features}


def layer_data_from_volume(volume: Volume, name: str, as_labels: bool | None = None) -> tuple:
    """A napari LayerDataTuple ``(data, kwargs, "image" | "labels")`` for a Volume."""
    as_labels = volume.labels is not None if as_labels is None else as_labels
    kwargs = {"name": name, "metadata": {METADATA_KEY: geometry_metadata(volume)}}
    kwargs.update(_transform_kwargs(volume))
    if as_labels:
        from napari_medseg.core.labels import as_label_array

        data = as_label_array(volume.array)
        from napari_medseg.core.regions import label_counts

        # slab by slab: a whole-volume bincount would copy 512x512x300 labels to int64 (630 MB)
        present = np.flatnonzero(label_counts(data)) if data.size else np.array([])
        kwargs.update(label_layer_kwargs(volume.labels or LabelTable(), present))
        return data, kwargs, "labels"
    data = volume.array
    kwargs["colormap"] = "gray"
    lo, hi = _display_range(volume)
    kwargs["contrast_limits"] = (lo, hi)
    if data.ndim == 4:
        kwargs["metadata"][METADATA_KEY]["channel_axis_name"] = volume.channel_axis_name
    return data, kwargs, "image"


def _display_range(volume: Volume) -> tuple[float, float]:
    """A soft-tissue window for CT, the 0.5-99.5 percentile range otherwise."""
    arr = volume.array
    modality = str(volume.meta.get("Modality", "")).upper()
    lo, hi = float(arr.min()), float(arr.max())
    if modality == "CT" or (arr.dtype.kind == "i" and lo <= -900 and hi > 200):
        return (-160.0, 240.0)
    step = max(1, arr.size // 2_000_000)
    sample = arr.reshape(-1)[::step]
    p_lo, p_hi = np.percentile(sample, [0.5, 99.5])
    if p_hi <= p_lo:
        p_lo, p_hi = lo, hi if hi > lo else lo + 1
    return float(p_lo), float(p_hi)


def volume_from_metadata(array: np.ndarray, metadata: dict | None) -> Volume | None:
    """The Volume a layer's medseg metadata describes, holding ``array``; None if absent/mismatched."""
    md = (metadata or {}).get(METADATA_KEY)
    if not md:
        return None
    affine = np.asarray(md["affine"], dtype=float)
    source = FileGeometry.from_dict(md["source"]) if md.get("source") else None
    labels = LabelTable.from_dict(md["labels"]) if md.get("labels") else None
    if source is not None:
        # a layer whose array no longer fits its recorded file grid cannot use it
        expected = tuple(int(source.shape[int(a)]) for a in np.asarray(source.ornt)[:, 0].argsort())
        if tuple(array.shape[-3:]) != expected:
            return None
    return Volume(array=array, affine=affine, source=source, labels=labels,
                  meta=dict(md.get("meta") or {}))


def affine_from_transform(attributes: dict[str, Any], ndim: int) -> np.ndarray:
    """World affine (napari order, spatial part) from a layer's scale/translate/rotate/affine."""
    lead = ndim - 3
    scale = np.asarray(attributes.get("scale", np.ones(ndim)), dtype=float)[lead:]
    translate = np.asarray(attributes.get("translate", np.zeros(ndim)), dtype=float)[lead:]
    rotate = np.asarray(attributes.get("rotate", np.eye(ndim)), dtype=float)
    rotate = rotate[lead:, lead:] if rotate.shape == (ndim, ndim) else np.eye(3)
    shear = attributes.get("shear")
    base = np.eye(4)
    base[:3, :3] = rotate @ np.diag(scale)
    if shear is not None and np.any(np.asarray(shear)):
        raise ValueError("layers with shear are not supported for saving")
    base[:3, 3] = translate
    extra = np.asarray(attributes.get("affine", np.eye(ndim + 1)), dtype=float)
    if extra.shape == (ndim + 1, ndim + 1):
        e = np.eye(4)
        e[:3, :3] = extra[lead:ndim, lead:ndim]
        e[:3, 3] = extra[lead:ndim, ndim]
        base = e @ base
    return base


def volume_from_layer(layer) -> Volume:
    """A Volume for any napari Image/Labels layer: its recorded scan geometry, else its transform.

    A layer opened by this plugin carries the file geometry in its metadata (so a result can be
    saved on the scan's own grid); any other layer with a scale (and translate, rotate, affine) is
    placed in the world by those, in millimetres.

    Raises:
        GeometryError: a layer that is not a 3D volume (optionally with one leading channel axis),
            an RGB or multiscale layer, or one with shear.
    """
    from napari_medseg.core.errors import GeometryError

    if getattr(layer, "multiscale", False):
        raise GeometryError(f"layer {layer.name!r}: multiscale layers cannot be segmented; open the full-resolution "
                            "scan")
    if getattr(layer, "rgb", False):
        raise GeometryError(f"layer {layer.name!r}: an RGB image is not a scan")
    array = np.asarray(layer.data)
    if array.ndim not in (3, 4):
        raise GeometryError(f"layer {layer.name!r}: a scan needs 3 spatial axes (or a channel axis and 3), "
                            f"got shape {array.shape}")
    volume = volume_from_metadata(array, layer.metadata)
    if volume is not None:
        return volume
    attributes = {"scale": layer.scale, "translate": layer.translate, "rotate": layer.rotate,
                  "shear": layer.shear, "affine": layer.affine.affine_matrix}
    try:
        affine = affine_from_transform(attributes, array.ndim)
    except ValueError as exc:
        raise GeometryError(f"layer {layer.name!r}: {exc}") from exc
    return Volume(array=array, affine=affine)


def layer_transform_kwargs(layer) -> dict[str, Any]:
    """The spatial transform of ``layer`` as layer kwargs, so a new 3D layer sits exactly on it.

    Copies scale, translate, rotate, shear, affine, units and axis labels of the last three axes
    (a leading channel axis of the scan is dropped), whatever the layer's origin: a result layer
    then overlays its scan in every view even when the scan was placed by hand.
    """
    lead = layer.ndim - 3
    affine = np.asarray(layer.affine.affine_matrix, dtype=float)
    spatial = list(range(lead, layer.ndim)) + [layer.ndim]
    return {
        "scale": tuple(float(v) for v in layer.scale[lead:]),
        "translate": tuple(float(v) for v in layer.translate[lead:]),
        "rotate": np.asarray(layer.rotate, dtype=float)[lead:, lead:],
        "shear": np.asarray(layer.shear, dtype=float)[-3:],  # upper-triangle order: spatial pairs last
        "affine": affine[np.ix_(spatial, spatial)],
        "units": tuple(str(u) for u in layer.units[lead:]),
        "axis_labels": tuple(layer.axis_labels[lead:]),
    }
