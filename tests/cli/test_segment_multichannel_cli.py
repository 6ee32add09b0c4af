"""``napari-medseg segment T1C -o OUT --model BRATS --extra T1 --extra T2 --extra FLAIR``: the four
volumes of the real BraTS bundle config (random weights) go through the command line in order."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.cli import main
from napari_medseg.core.volume import Volume
from tests.core.test_bundle_runs import AFFINE, brats_bundle, mr_channels


@pytest.fixture()
def four_scans(tmp_path):
    from napari_medseg.io import write_volume

    paths = []
    for name, arr in zip(("t1c", "t1", "t2", "flair"), mr_channels()):
        path = tmp_path / f"{name}.nii.gz"
        write_volume(path, Volume(arr, AFFINE))
        paths.append(str(path))
    return paths


@pytest.mark.realdata
def test_segment_takes_the_other_three_volumes_with_repeated_extra(realdata, tmp_path, four_scans):
    from napari_medseg.core.inference import Segmenter
    from napari_medseg.core.models import load_model
    from napari_medseg.io import read_volume

    bundle = brats_bundle(realdata, tmp_path)
    t1c, t1, t2, flair = four_scans
    out = tmp_path / "brats.nii.gz"
    assert main(["segment", t1c, "-o", str(out), "--model", str(bundle), "--precision", "fp32",
                 "--extra", t1, "--extra", t2, "--extra", flair, "-q"]) == 0
    labels = read_volume(out)
    scans = [read_volume(p) for p in four_scans]
    assert labels.same_grid(scans[0]) and labels.array.dtype == np.uint8
    card, net = load_model(bundle)
    expected = Segmenter(card, net, precision="fp32").predict(scans[0], extra_channels=scans[1:]).labels.array
    np.testing.assert_array_equal(labels.array, expected)
    assert labels.labels.name(2) == "Whole tumor"
    # one --extra with three files is the same run
    listed = tmp_path / "listed.nii.gz"
    assert main(["segment", t1c, "-o", str(listed), "--model", str(bundle), "--precision", "fp32",
                 "--extra", t1, t2, flair, "-q"]) == 0
    np.testing.assert_array_equal(read_volume(listed).array, labels.array)


@pytest.mark.realdata
def test_segment_with_too_few_volumes_says_how_many_and_writes_nothing(realdata, tmp_path, four_scans, capsys):
    bundle = brats_bundle(realdata, tmp_path)
    t1c, t1, t2, _ = four_scans
    out = tmp_path / "none.nii.gz"
    assert main(["segment", t1c, "-o", str(out), "--model", str(bundle), "--extra", t1, "--extra", t2, "-q"]) == 2
    err = capsys.readouterr().err
    assert "needs 4 input volumes (MR), got 3" in err and "extra" in err
    assert not out.exists()
