"""``napari-medseg convert INPUT OUTPUT``: any readable scan to NIfTI, NRRD or MetaImage."""

from __future__ import annotations

import os

from napari_medseg.core.errors import WriteError
from napari_medseg.io import read_volume, write_volume


def _run(args) -> int:
    if os.path.exists(args.output) and os.path.realpath(args.output) == os.path.realpath(args.input):
        raise WriteError(f"{args.output}: is the input; convert never modifies its input")
    if os.path.exists(args.output) and not args.force:
        raise WriteError(f"{args.output}: already exists (use --force to replace it)")
    volume = read_volume(args.input)
    written = write_volume(args.output, volume)
    for path in written:
        print(path)
    return 0


def register(sub) -> None:
    p = sub.add_parser("convert", help="convert a scan or label map (e.g. a DICOM series to NIfTI)")
    p.add_argument("input", help="NIfTI, NRRD, MetaImage file, DICOM file or DICOM folder")
    p.add_argument("output", help="output .nii.gz, .nii, .nrrd or .mha")
    p.add_argument("--force", action="store_true", help="replace OUTPUT if it exists")
    p.set_defaults(func=_run)
