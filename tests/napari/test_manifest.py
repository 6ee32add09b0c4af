"""The npe2 manifest: one file, shipped in the package, valid, and exposing every contribution."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import napari_medseg

REPO = Path(__file__).resolve().parents[2]


def test_top_level_manifest_is_the_packaged_manifest():
    top = REPO / "napari.yaml"
    packaged = Path(napari_medseg.__file__).parent / "napari.yaml"
    assert top.read_bytes() == packaged.read_bytes()


def test_npe2_validates_the_installed_plugin():
    result = subprocess.run([sys.executable, "-m", "npe2", "validate", "napari-medseg"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout + result.stderr


def test_npe2_discovers_readers_writers_widgets_and_samples():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("napari-medseg")
    contrib = manifest.contributions
    assert any(r.accepts_directories for r in contrib.readers)
    assert {"labels", "image"} <= {t for w in contrib.writers for t in w.layer_types}
    assert contrib.widgets and contrib.sample_data
    for ext in (".nii.gz", ".nii", ".nrrd", ".mha"):
        assert any(ext in w.filename_extensions for w in contrib.writers)


def test_core_and_io_stay_free_of_qt_and_napari():
    """The import-linter contracts in pyproject.toml hold (core/io never import Qt or napari)."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
