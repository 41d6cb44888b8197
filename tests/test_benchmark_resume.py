"""The search benchmark's resume keeps the winner's recipe run when it is the same one."""

import json
import os
import sys

from conftest import REPO


def _ran_before():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from search_resnet8 import _ran_before
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return _ran_before


def test_a_finished_run_of_the_same_recipe_and_seed_is_kept(tmp_path):
    ran_before = _ran_before()
    out, recipe_file = tmp_path / "winner_rerun", tmp_path / "trial_5.json"
    out.mkdir()
    recipe_file.write_text(json.dumps([{"technique": "storage", "steps": 300}]))
    (out / "recipe.json").write_text(recipe_file.read_text())
    (out / "model_int8.tflite").write_bytes(b"file")
    assert not ran_before(out, recipe_file, seed=0)  # no report: it stopped
    (out / "report.json").write_text(json.dumps({"provenance": {"seed": 0}}))
    assert ran_before(out, recipe_file, seed=0)
    assert not ran_before(out, recipe_file, seed=1)
    recipe_file.write_text(json.dumps([{"technique": "storage", "steps": 3000}]))
    assert not ran_before(out, recipe_file, seed=0)
    # another recipe's run started after the report and stopped before writing its own
    (out / "recipe.json").write_text(recipe_file.read_text())
    later = (out / "report.json").stat().st_mtime + 10
    os.utime(out / "recipe.json", (later, later))
    assert not ran_before(out, recipe_file, seed=0)
