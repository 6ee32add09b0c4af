"""Regenerate the files in sample_data/ (deterministic): a synthetic abdominal CT and its labels.

Usage: python scripts/make_sample_data.py [OUTPUT_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

from napari_medseg.core.phantoms import abdomen_ct
from napari_medseg.io import write_labels, write_volume


def main(out: str = "sample_data") -> None:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    phantom = abdomen_ct(seed=0)
    for path in write_volume(folder / "ct_phantom.nii.gz", phantom.image):
        print(path)
    for path in write_labels(folder / "ct_phantom_labels.nii.gz", phantom.labels):
        print(path)


if __name__ == "__main__":
    main(*sys.argv[1:2])
