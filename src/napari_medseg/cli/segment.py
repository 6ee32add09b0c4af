"""``napari-medseg segment INPUT -o OUTPUT --model NAME_OR_CARD_OR_BUNDLE``: segment one scan.

Reads the scan (any format :func:`napari_medseg.io.read_volume` reads), loads the model once
(:func:`napari_medseg.core.models.load_model`: a built-in name, a card file or a MONAI bundle
folder), runs :class:`~napari_medseg.core.inference.Segmenter` with a progress bar on a terminal,
turns the semantic labels into the requested output mode (:mod:`napari_medseg.core.outputs`) and
writes them on the scan's own grid with label-name sidecars (:func:`napari_medseg.io.write_labels`).
For instance and panoptic output a table of segments (ID, class, instance, voxels, mL) is written
beside the labels as ``<output>.segments.json``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)


class _Bar:
    """A one-line progress bar on stderr when it is a terminal (tqdm if installed), else silent."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stderr.isatty()
        self.bar = None
        self.t0 = time.perf_counter()

    def __call__(self, done: int, total: int, message: str) -> None:
        if not self.enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:  # pragma: no cover - tqdm comes with napari's dependencies
            tqdm = None
        if tqdm is not None:
            if self.bar is None:
                self.bar = tqdm(total=total, unit="win", desc="segment", leave=False, file=sys.stderr)
            self.bar.total = total
            self.bar.n = done
            self.bar.refresh()
            return
        width = 30
        filled = int(width * done / max(total, 1))
        sys.stderr.write(f"\rsegment [{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
                         f"{time.perf_counter() - self.t0:5.1f} s")
        sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            sys.stderr.write("\n")


def _instance_labels(text: str | None, names) -> list[int] | None:
    """``--instance-labels 3,tumor`` -> label values (names looked up in the model's label table)."""
    if not text:
        return None
    values = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if item.isdigit():
            values.append(int(item))
            continue
        value = names.value_of(item)
        if value is None:
            raise ValueError(f"--instance-labels: {item!r} is not a label of this model "
                             f"({', '.join(names.names.values()) or 'no names'})")
        values.append(value)
    return values


def _table_path(output: str) -> Path:
    from napari_medseg.io.atomic import split_suffix

    stem, _ = split_suffix(output)
    return Path(f"{stem}.segments.json")


def _run(args) -> int:
    from napari_medseg.core.inference import Segmenter
    from napari_medseg.core.models import load_model
    from napari_medseg.core.outputs import make_output
    from napari_medseg.io import read_volume, write_labels

    volume = read_volume(args.input)
    extra = [read_volume(p) for p in (args.extra or [])]
    from napari_medseg.core.machine import resolve_device

    device = resolve_device(args.device)  # falls back to the CPU with a message
    card, network = load_model(args.model, device=device)
    if args.overlap is not None:
        if not 0 <= args.overlap < 1:
            raise ValueError(f"--overlap {args.overlap}: must be in [0, 1)")
        card.inference.overlap = float(args.overlap)
    segmenter = Segmenter(card, network, device=device, precision=args.precision,
                          batch_size=args.batch_size)
    bar = _Bar(enabled=not args.quiet)
    try:
        result = segmenter.predict(volume, progress=bar, mode=args.mode, extra_channels=extra or None)
    finally:
        bar.close()
    labels = result.labels
    table = None
    if args.output_mode != "semantic":
        instances = _instance_labels(args.instance_labels, result.names)
        if args.output_mode == "panoptic" and instances is None:
            raise ValueError("--output panoptic: name the classes to split into instances with "
                             "--instance-labels (values or names, comma-separated)")
        out = make_output(labels.array, mode=args.output_mode, spacing=volume.spacing, names=result.names,
                          instance_labels=instances)
        labels = volume.with_array(out.array, labels=out.label_table(result.names))
        table = out.rows()
    written = write_labels(args.output, labels)
    if table is not None:
        path = _table_path(args.output)
        path.write_text(json.dumps(table, indent=2))
        written.append(str(path))
    present = sorted(int(v) for v in set(labels.array.ravel()[:: max(1, labels.array.size // 2_000_000)]) - {0})
    if not args.quiet:
        print(f"{args.output}: {len(present)} labels, {result.seconds:.1f} s on {result.device} ({result.precision})")
        for p in written[1:]:
            print(f"  + {p}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("segment", help="segment a scan with a built-in model, a model card or a MONAI bundle")
    p.add_argument("input", help="scan: NIfTI, NRRD, MetaImage, DICOM file or folder")
    p.add_argument("-o", dest="output", metavar="OUTPUT", required=True,
                   help="label file to write (.nii.gz, .nii, .nrrd, .mha)")
    p.add_argument("--model", required=True, help="built-in model name, card file (.yaml/.json) or bundle folder")
    p.add_argument("--mode", choices=("2d", "3d"), default=None, help="slice-wise or sliding window (default: card)")
    p.add_argument("--device", default="cpu", help="cpu, cuda (cuda:N) or mps; falls back to cpu when missing")
    p.add_argument("--overlap", type=float, default=None, help="sliding-window overlap in [0, 1) (default: card)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="auto: bf16 on CPUs with native bf16, fp16 on CUDA, else fp32")
    p.add_argument("--batch-size", type=int, default=None, help="windows per forward pass (default: card)")
    p.add_argument("--output", dest="output_mode", choices=("semantic", "instance", "panoptic"),
                   default="semantic", help="semantic classes, instances or panoptic (classes + instances)")
    p.add_argument("--instance-labels", default=None,
                   help="classes to split into instances (values or names, comma-separated)")
    p.add_argument("--extra", action="extend", nargs="+", default=None, metavar="SCAN",
                   help="the other input volumes of a multi-channel model, in the model's channel order "
                        "(repeat --extra or list several; same grid as INPUT)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=_run)
