"""`napari-medseg phantom`: files and sidecars, summary line, overwrite refusal, one-line errors."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from napari_medseg.cli import main
from napari_medseg.io import read_volume


@pytest.mark.parametrize("kind, extra, names", [
    ("ct-abdomen", ["--orientation", "RAS"], {"liver", "liver_lesion", "vertebrae"}),
    ("mr-brain", ["--contrast", "FLAIR", "--orientation", "LPS"], {"csf", "tumour", "oedema"}),
])
def test_phantom_writes_the_scan_and_labels_with_sidecars(tmp_path, capsys, kind, extra, names):
    image, labels = tmp_path / "scan.nii.gz", tmp_path / "scan_labels.nii.gz"
    rc = main(["phantom", "--kind", kind, "--seed", "4", "--spacing", "6", "4", "4",
               "-o", str(image), "--labels", str(labels), *extra])
    assert rc == 0
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1
    assert out.startswith(f"{kind} seed 4") and "spacing 6.00x4.00x4.00 mm" in out
    assert f"stored {extra[-1]}" in out
    for path in (image, labels, tmp_path / "scan_labels.labels.json",
                 tmp_path / "scan_labels.itksnap.txt"):
        assert path.exists() and str(path) in out
    table = json.loads((tmp_path / "scan_labels.labels.json").read_text())
    assert names <= set(json.dumps(table).replace('"', " ").split())
    assert "".join(nib.aff2axcodes(nib.load(image).affine)) == extra[-1]
    scan, seg = read_volume(image), read_volume(labels)
    assert seg.same_grid(scan) and np.allclose(scan.spacing, (6, 4, 4))
    assert seg.array.dtype == np.uint8 and seg.array.max() >= 3
    if kind == "mr-brain":
        assert "flair" in out


def test_phantom_phase_option_fixes_the_ct_contrast_phase(tmp_path, capsys):
    out = {}
    for phase in ("unenhanced", "arterial"):
        image = tmp_path / f"{phase}.nii.gz"
        assert main(["phantom", "--kind", "ct-abdomen", "--seed", "1", "--spacing", "6", "4", "4",
                     "--phase", phase.upper(), "-o", str(image)]) == 0
        out[phase] = capsys.readouterr().out
        assert f", {phase}, " in out[phase]
    plain, arterial = (read_volume(tmp_path / f"{p}.nii.gz").array for p in ("unenhanced", "arterial"))
    assert plain.shape == arterial.shape and (plain != arterial).any()


def test_phantom_refuses_to_overwrite_without_force(tmp_path, capsys):
    image = tmp_path / "ct.nii.gz"
    image.write_bytes(b"precious")
    args = ["phantom", "--kind", "ct-abdomen", "--spacing", "8", "5", "5", "-o", str(image)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert image.read_bytes() == b"precious"
    assert main(args + ["--force", "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    assert read_volume(image).array.dtype == np.int16


@pytest.mark.parametrize("args, message", [
    (["--kind", "ct-brain"], "--kind 'ct-brain' is not a phantom kind"),
    (["--kind", "ct-abdomen", "--contrast", "t1"], "--contrast applies to --kind mr-brain"),
    (["--kind", "mr-brain", "--contrast", "t2"], "contrast must be one of t1, flair"),
    (["--kind", "ct-abdomen", "--phase", "delayed"], "--phase 'delayed' is not a CT contrast phase"),
    (["--kind", "mr-brain", "--phase", "arterial"], "--phase applies to --kind ct-abdomen"),
    (["--kind", "ct-abdomen", "--orientation", "ABC"], "orientation 'ABC'"),
    (["--kind", "ct-abdomen", "-o", "x.png"], "cannot write this format"),
])
def test_bad_options_give_one_line_errors_and_write_nothing(tmp_path, capsys, args, message):
    if "-o" not in args:
        args = args + ["-o", str(tmp_path / "x.nii.gz")]
    rc = main(["phantom", *args, "--spacing", "8", "5", "5"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert err.startswith("napari-medseg: error:") and message in err
    assert not list(tmp_path.iterdir())


def test_labels_cannot_replace_the_image(tmp_path, capsys):
    path = str(tmp_path / "same.nii.gz")
    assert main(["phantom", "--kind", "ct-abdomen", "-o", path, "--labels", path]) == 2
    assert "cannot go to the image file" in capsys.readouterr().err
