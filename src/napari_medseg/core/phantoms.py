"""Synthetic scans with ground truth, for sample data, tests and training the shipped models.

* :func:`abdomen_ct` (:mod:`~napari_medseg.core.phantom_ct`): abdominal CT in HU with liver,
  spleen, kidneys, aorta, vertebrae and liver lesions (:data:`CT_LABELS`).
* :func:`brain_mr` (:mod:`~napari_medseg.core.phantom_mr`): T1-like or FLAIR-like brain MRI with
  CSF, grey and white matter, tumour and oedema (:data:`MR_LABELS`).

Every phantom is deterministic by seed, on an axis-aligned grid in napari order (world I, P, L),
with its storage orientation in ``meta["storage_orientation"]`` (honoured by ``io.write_volume``).
The shared machinery (grid, smooth random fields, deformed shapes) is in
:mod:`~napari_medseg.core.phantom_common`.
"""

from __future__ import annotations

from napari_medseg.core.phantom_common import Phantom
from napari_medseg.core.phantom_ct import CT_LABELS, abdomen_ct
from napari_medseg.core.phantom_mr import MR_LABELS, brain_mr

__all__ = ["CT_LABELS", "MR_LABELS", "Phantom", "abdomen_ct", "brain_mr"]
