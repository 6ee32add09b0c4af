"""napari sample data: synthetic scans made on the fly (no download, same in a wheel)."""

from __future__ import annotations

from napari_medseg._layer_data import layer_data_from_volume


def sample_ct() -> list[tuple]:
    """Abdominal CT phantom with its ground-truth labels."""
    from napari_medseg.core.phantoms import abdomen_ct

    phantom = abdomen_ct(seed=0)
    return [
        layer_data_from_volume(phantom.image, "CT phantom"),
        layer_data_from_volume(phantom.labels, "CT phantom labels", as_labels=True),
    ]
