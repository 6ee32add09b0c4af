"""``napari-medseg phantom``: write a synthetic scan and its ground truth (with label sidecars).

Examples::

    napari-medseg phantom --kind ct-abdomen --seed 3 -o ct3.nii.gz --labels ct3_labels.nii.gz
    napari-medseg phantom --kind ct-abdomen --seed 3 --phase unenhanced -o ct3u.nii.gz
    napari-medseg phantom --kind mr-brain --seed 7 --contrast flair -o mr7.nii.gz \
        --labels mr7_seg.nii.gz
"""

from __future__ import annotations

import os

from napari_medseg.core.errors import WriteError

KINDS = ("ct-abdomen", "mr-brain")


def make_phantom(kind: str, seed: int, *, contrast: str | None = None, spacing=None, shape=None,
                 orientation: str | None = None, phase: str | None = None):
    """The phantom the command line asks for (checked here so errors name the option)."""
    from napari_medseg.core.phantom_ct_tissues import PHASES
    from napari_medseg.core.phantoms import abdomen_ct, brain_mr

    if kind not in KINDS:
        raise ValueError(f"--kind {kind!r} is not a phantom kind; choose {' or '.join(KINDS)}")
    if kind == "ct-abdomen":
        if contrast is not None:
            raise ValueError("--contrast applies to --kind mr-brain only")
        if phase is not None and phase not in PHASES:
            raise ValueError(f"--phase {phase!r} is not a CT contrast phase; choose {', '.join(PHASES)}")
        return abdomen_ct(seed, shape=shape, spacing=spacing, orientation=orientation, phase=phase)
    if phase is not None:
        raise ValueError("--phase applies to --kind ct-abdomen only")
    return brain_mr(seed, contrast=contrast, shape=shape, spacing=spacing, orientation=orientation)


def summary(kind: str, phantom) -> str:
    """One line: grid, spacing, storage orientation, contrast and lesions."""
    image = phantom.image
    shape = "x".join(str(n) for n in image.spatial_shape)
    spacing = "x".join(f"{s:.2f}" for s in image.spacing)
    facts = phantom.facts
    parts = [f"{kind} seed {facts['seed']}", f"{shape} voxels", f"spacing {spacing} mm",
             f"stored {facts['orientation']}"]
    for key in ("contrast", "phase"):  # MR contrast, CT contrast phase
        if key in facts:
            parts.append(facts[key].replace("_", " "))
    sizes = ", ".join(f"{les['equivalent_diameter_mm']:.0f}" for les in phantom.lesions)
    name = "liver lesion" if kind == "ct-abdomen" else "tumour"
    count = len(phantom.lesions)
    parts.append(f"{count} {name}{'s' if count != 1 else ''}" + (f" ({sizes} mm)" if sizes else ""))
    return ", ".join(parts)


def _run(args) -> int:
    from napari_medseg.io import write_labels, write_volume
    from napari_medseg.io.writer import output_format

    outputs = [args.output] + ([args.labels] if args.labels else [])
    for path in outputs:
        output_format(path)  # refuse an unknown suffix before any work
        if os.path.exists(path) and not args.force:
            raise WriteError(f"{path}: already exists (use --force to replace it)")
    if args.labels and os.path.realpath(args.labels) == os.path.realpath(args.output):
        raise WriteError(f"{args.labels}: the labels cannot go to the image file")
    phantom = make_phantom(args.kind, args.seed, contrast=args.contrast, spacing=args.spacing,
                           shape=args.shape, orientation=args.orientation, phase=args.phase)
    written = write_volume(args.output, phantom.image)
    if args.labels:
        written += write_labels(args.labels, phantom.labels)
    if not args.quiet:
        print(summary(args.kind, phantom) + " -> " + ", ".join(written))
    return 0


def register(sub) -> None:
    p = sub.add_parser("phantom", help="write a synthetic CT or MRI scan with its ground truth",
                       description="Write a deterministic synthetic scan (by seed) and its "
                                   "ground-truth labels with label-name sidecars.")
    p.add_argument("--kind", required=True, help=f"phantom kind: {' or '.join(KINDS)}")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("-o", "--output", required=True, help="image file (.nii.gz, .nii, .nrrd, .mha)")
    p.add_argument("--labels", help="ground-truth label file (same formats)")
    p.add_argument("--contrast", type=str.lower,
                   help="MRI contrast, t1 or flair (default: drawn from the seed)")
    p.add_argument("--phase", type=str.lower,
                   help="CT contrast phase: unenhanced, portal_venous or arterial (default: drawn)")
    p.add_argument("--spacing", type=float, nargs=3, metavar=("SLICE", "ROW", "COL"),
                   help="voxel size in mm (default: drawn from the seed)")
    p.add_argument("--shape", type=int, nargs=3, metavar=("SLICES", "ROWS", "COLS"),
                   help="grid size (default: field of view / spacing)")
    p.add_argument("--orientation", help="storage orientation, e.g. RAS or LPS (default: drawn)")
    p.add_argument("--force", action="store_true", help="replace existing output files")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(func=_run)
