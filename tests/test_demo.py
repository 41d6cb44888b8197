import json

import pytest

from edgecompress import demo

pytestmark = pytest.mark.slow  # trains and evaluates end to end


def test_demo_writes_models_and_report(tmp_path, capsys):
    rows = demo.run(tmp_path / "demo", epochs=1, train_samples=200, test_samples=100,
                    verbose=0)
    printed = capsys.readouterr().out
    assert [r["variant"] for r in rows] == ["fp32", "int8"]
    assert rows[1]["bytes"] < rows[0]["bytes"] / 2  # int8 weights are a quarter of float's
    assert "[3/3] evaluating both" in printed and "gzip_bytes" in printed
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert report["results"]["int8"]["samples"] == 100
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == [
        "model.keras", "model_fp32.tflite", "model_int8.tflite", "report.json"]
