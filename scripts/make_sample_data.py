"""Regenerate the files in sample_data/ (deterministic): a synthetic abdominal CT and a brain MRI,
each with its ground-truth labels and label-name sidecars. The phantoms are the napari samples'.

Usage: python scripts/make_sample_data.py [OUTPUT_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

from napari_medseg._sample_data import CT_SAMPLE, MR_SAMPLE
from napari_medseg.core.phantoms import abdomen_ct, brain_mr
from napari_medseg.io import write_labels, write_volume


def main(out: str = "sample_data") -> None:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    samples = (("ct_phantom", abdomen_ct(**CT_SAMPLE)), ("mr_phantom", brain_mr(**MR_SAMPLE)))
    for stem, phantom in samples:
        for path in write_volume(folder / f"{stem}.nii.gz", phantom.image):
            print(path)
        for path in write_labels(folder / f"{stem}_labels.nii.gz", phantom.labels):
            print(path)


if __name__ == "__main__":
    main(*sys.argv[1:2])
