"""napari sample data: synthetic scans made on the fly (no download, same in a wheel).

The samples use coarse grids so that they open in about a second; ``scripts/make_sample_data.py``
writes the same volumes to ``sample_data/``.
"""

from __future__ import annotations

from napari_medseg._layer_data import layer_data_from_volume

#: arguments of the sample phantoms (seed 0; a few million voxels each, small files)
CT_SAMPLE = {"seed": 0, "spacing": (5.0, 2.0, 2.0)}
MR_SAMPLE = {"seed": 0, "contrast": "flair", "spacing": (3.0, 1.5, 1.5), "tumour": True}


def sample_ct() -> list[tuple]:
    """Abdominal CT phantom with its ground-truth labels."""
    from napari_medseg.core.phantoms import abdomen_ct

    phantom = abdomen_ct(**CT_SAMPLE)
    return [
        layer_data_from_volume(phantom.image, "CT phantom"),
        layer_data_from_volume(phantom.labels, "CT phantom labels", as_labels=True),
    ]


def sample_mr() -> list[tuple]:
    """Brain MRI phantom (FLAIR-like, with a tumour) with its ground-truth labels."""
    from napari_medseg.core.phantoms import brain_mr

    phantom = brain_mr(**MR_SAMPLE)
    return [
        layer_data_from_volume(phantom.image, "MR phantom"),
        layer_data_from_volume(phantom.labels, "MR phantom labels", as_labels=True),
    ]
