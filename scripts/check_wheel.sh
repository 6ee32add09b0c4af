#!/usr/bin/env bash
# Build the wheel, install it into a fresh virtual environment and check that napari finds the
# plugin's readers, writers, widgets and sample data there and that the manifest ships inside it.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
.venv/bin/python -m build --wheel --outdir "$WORK/dist" . >/dev/null
WHEEL="$(ls "$WORK"/dist/napari_medseg-*.whl)"
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --upgrade pip
"$WORK/venv/bin/python" -m pip install -q "torch==2.13.0" "$WHEEL" npe2
cd "$WORK"
"$WORK/venv/bin/python" -m npe2 validate napari-medseg
"$WORK/venv/bin/python" - "$OLDPWD/sample_data/ct_phantom.nii.gz" <<'PY'
import sys, pathlib
import napari_medseg
from npe2 import PluginManager
pkg = pathlib.Path(napari_medseg.__file__).parent
assert "site-packages" in str(pkg), pkg
assert (pkg / "napari.yaml").is_file(), "manifest missing from the wheel"
pm = PluginManager.instance(); pm.discover()
c = pm.get_manifest("napari-medseg").contributions
print("readers", len(c.readers), "writers", len(c.writers), "widgets", len(c.widgets), "samples", len(c.sample_data))
assert c.readers and c.writers and c.widgets and c.sample_data
from napari_medseg._reader import get_reader
layers = get_reader(sys.argv[1])(sys.argv[1])
assert layers[0][0].ndim == 3, layers[0][0].shape
from napari_medseg._sample_data import sample_ct, sample_mr
assert len(sample_ct()) == 2 and len(sample_mr()) == 2
from napari_medseg.core.registry import PACKAGE_MODELS, list_models
models = {m.name: m for m in list_models()}
for name in ("ct-abdomen-3d", "ct-abdomen-2d", "mr-brain"):
    assert name in models and models[name].has_weights, (name, sorted(models))
    assert str(pkg) in models[name].path, models[name].path
from napari_medseg.core.inference import Segmenter  # the second networks come along
from napari_medseg.core.models import load_model
# the 2D CT card names the 3D CT model's second network; mr-brain has its own
for name in ("ct-abdomen-3d", "ct-abdomen-2d", "mr-brain"):
    refiner = Segmenter(*load_model(name)).refiner
    assert refiner is not None and str(pkg) in str(refiner.card.path), (name, refiner)
print("wheel OK:", pkg, "models:", ", ".join(sorted(models)))
PY
# the shipped weights run from the installed wheel: the main job on the sample scan
"$WORK/venv/bin/napari-medseg" segment "$OLDPWD/sample_data/ct_phantom.nii.gz" -o "$WORK/seg.nii.gz" --model ct-abdomen-2d -q
"$WORK/venv/bin/napari-medseg" evaluate "$WORK/seg.nii.gz" "$OLDPWD/sample_data/ct_phantom_labels.nii.gz"
