"""The README's set-up, run and test commands are the ones CI runs, and they work."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _commands(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines()
            if ln.strip() and not ln.lstrip().startswith(("#", "set ", "cd ", "trap "))]


def test_ci_runs_exactly_the_readme_set_up_and_test_commands():
    readme = (REPO / "README.md").read_text()
    ci = _commands(REPO / ".ci" / "run")
    assert "bash scripts/setup.sh" in ci and ".venv/bin/python -m pytest" in ci
    for command in ci:
        if command.startswith("bash scripts/check_wheel.sh"):
            continue
        assert f"```bash\n{command}\n```" in readme, f"{command!r} is not a README command"


def test_the_readme_main_job_runs_on_the_bundled_sample_data(tmp_path):
    readme = (REPO / "README.md").read_text()
    block = readme.split("## Run it", 1)[1].split("```bash\n", 1)[1].split("\n```", 1)[0]
    assert "sample_data/" in block
    result = subprocess.run(["bash", "-c", block], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    # the evaluation table: every organ matched by name and segmented well above chance
    rows = {ln.split()[1]: float(ln.split()[2]) for ln in result.stdout.splitlines()
            if ln.strip()[:1].isdigit()}
    assert {"liver", "spleen", "kidney_left", "kidney_right", "aorta", "vertebrae"} <= set(rows), result.stdout
    assert rows["liver"] > 0.6 and rows["vertebrae"] > 0.6, result.stdout


def test_the_readme_accuracy_tables_are_the_recorded_evaluation():
    """Every Dice, organ mean and detection count in benchmarks/results/eval_*.json appears in the
    README's accuracy section, so the tables cannot drift from the last evaluation run."""
    import json

    readme = (REPO / "README.md").read_text()
    section = readme.split("**Accuracy**", 1)[1].split("**Retraining from scratch**", 1)[0]
    rows = {ln.split("|")[1].strip(): ln for ln in section.splitlines() if ln.startswith("| ")}
    for path in sorted((REPO / "benchmarks" / "results").glob("eval_*.json")):
        for entry in json.loads(path.read_text()):
            model = entry["model"]
            assert f"{entry['mean_organ_dice']:.3f}" in section, (model, "organ mean")
            for label, dice in entry["dice"].items():
                row = next((r for name, r in rows.items() if name == label or name.startswith(f"{label} Dice")
                            or name.startswith(f"{label}s ") or name.startswith(f"{label} ")), None)
                assert row is not None and f"{dice:.3f}" in row, (model, label, dice)
            for label, groups in entry.get("lesion_dice_by", {}).items():
                for key, g in groups.items():  # where the lesion Dice is lost: by lesion size, contrast, phase
                    assert f"{g['dice']:.3f} ({g['n']})" in section, (model, label, key)
            if "lesion_union_dice" in entry:
                assert f"{entry['lesion_union_dice']['dice']:.3f}" in section, (model, "lesion union")
            for key in ("lesions", "lesions_union"):  # union: each lesion alone, the rule before session 17
                for label, det in entry.get(key, {}).items():
                    assert f"({det['found']}/{det['n_ref']}" in section, (model, key, label, "sensitivity")
                    assert f"({det['true_pred']}/{det['n_pred']}" in section, (model, key, label, "precision")
            # the 95% intervals the README gives: organ mean, lesion Dice, detection (grouped rule)
            lo, hi = entry["mean_organ_dice_ci95"]
            assert f"{lo:.3f}–{hi:.3f}" in section, (model, "organ mean interval")
            for label, det in entry["lesions"].items():
                lo, hi = entry["dice_ci95"][label]
                assert f"{lo:.3f}–{hi:.3f}" in rows_of(rows, label), (model, label, "Dice interval")
                for rate, count in (("sensitivity", f"{det['found']}/{det['n_ref']}"),
                                    ("precision", f"{det['true_pred']}/{det['n_pred']}")):
                    lo, hi = det[f"{rate}_10mm_ci95"]
                    assert f"({count}; {lo:.2f}–{hi:.2f})" in section, (model, label, rate, "interval")


def rows_of(rows: dict[str, str], label: str) -> str:
    """The README table rows about ``label`` (its Dice row and its breakdowns), joined."""
    return "\n".join(r for name, r in rows.items() if name == label or name.startswith(f"{label} "))
