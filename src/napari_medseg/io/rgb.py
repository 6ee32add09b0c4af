"""RGB pictures (endoscopy, microscopy, photographs) as Volumes, and their labels back as 2D arrays.

A napari RGB image layer holds ``(H, W, 3)`` (or RGBA ``(H, W, 4)``). The engine works on
:class:`~napari_medseg.core.volume.Volume`, whose array is channel first and three-dimensional, so
an RGB picture becomes a **one-slice, three-channel volume** ``(3, 1, H, W)``: channels first,
a single slice on napari axis 0, rows on axis 1, columns on axis 2. Shown in napari this is the
picture as it was.

The file order is the one MONAI's image readers give a picture (PIL and ITK index ``x`` first):
``(W, H, 1)``, width first. It is recorded in the volume's
:class:`~napari_medseg.core.volume.FileGeometry`, so a card or bundle that feeds "file order"
(``orientation: null``, such as endoscopic_tool_segmentation with its ``resize: [736, 480]``,
width 736, height 480) sees the picture exactly as the bundle's own pipeline does, and the
labels come back as ``(1, H, W)`` on the picture's grid.
"""

from __future__ import annotations

import numpy as np

from napari_medseg.core.volume import RAS_FROM_WORLD, FileGeometry, Volume

# file axis x (width) -> napari axis 2, y (height) -> napari axis 1, the one slice -> napari axis 0
_RGB_ORNT = np.array([[2.0, 1.0], [1.0, 1.0], [0.0, 1.0]])


def rgb_volume(image: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0), name: str | None = None) -> Volume:
    """A ``(H, W, 3)`` or ``(H, W, 4)`` picture as a channel-first one-slice Volume ``(3, 1, H, W)``.

    Args:
        image: the picture as napari's RGB image layer holds it; an alpha channel is dropped.
        spacing: pixel size (rows, columns) in mm, when known (napari layer ``scale``).
        name: where it came from, kept in the file geometry's ``path``.

    Raises:
        ValueError: not an ``(H, W, 3|4)`` array.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise ValueError(f"RGB image: expected an array (H, W, 3) or (H, W, 4), got shape {image.shape}")
    h, w = image.shape[:2]
    array = np.moveaxis(image[..., :3], -1, 0)[:, None]  # (3, 1, H, W), a view
    sy, sx = (float(s) for s in spacing)
    affine = np.diag([1.0, sy, sx, 1.0])
    # file index (x, y, z) -> napari index (z, y, x) -> world -> RAS: the header a writer would use
    napari_from_file = np.zeros((4, 4))
    for i, (axis, _) in enumerate(_RGB_ORNT):
        napari_from_file[int(axis), i] = 1.0
    napari_from_file[3, 3] = 1.0
    affine_ras = RAS_FROM_WORLD @ affine @ napari_from_file
    source = FileGeometry(ornt=_RGB_ORNT.copy(), shape=(w, h, 1), affine_ras=affine_ras, format="rgb",
                          header={"channels": "RGB"}, path=name)
    return Volume(array, affine, source=source, meta={"rgb": True}, channel_axis_name="channel")


def labels_2d(labels: Volume | np.ndarray) -> np.ndarray:
    """The ``(H, W)`` label image of a one-slice result (what a napari Labels layer over the picture takes)."""
    array = labels.array if isinstance(labels, Volume) else np.asarray(labels)
    if array.ndim != 3 or array.shape[0] != 1:
        raise ValueError(f"labels of an RGB picture: expected shape (1, H, W), got {array.shape}")
    return array[0]
