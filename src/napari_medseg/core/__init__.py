"""Qt-free core: volumes, labels, models and inference. Nothing here imports napari or Qt."""
