"""The sensitivity scan: every prunable channel group at every ratio, without fine-tuning,
with the INT8 error per operator; cached; one-line errors."""

import json

import pytest

from edgecompress import cli, sensitivity
from edgecompress.errors import OptionError
from edgecompress.techniques import channels


def test_scan_measures_every_group_and_caches(trained, test_set, tmp_path, monkeypatch):
    model, data = trained[0], test_set.with_preprocess("unit")
    result = sensitivity.scan(model, data, tmp_path, ratios=(0.25, 0.75), samples=100,
                              key="tiny")
    groups = [g for g in channels.analyse(model) if not g.fixed_by]
    assert len(result["channels"]) == 2 * len(groups) > 0
    for row in result["channels"]:
        assert 0 <= row["agreement"] <= 1 and row["kept"] < row["channels"]
    assert result["quantisation"][0]["rmse_per_scale"] > 0
    assert {p.name for p in tmp_path.iterdir()} == {"sensitivity.json", "sensitivity.md",
                                                    "sensitivity.png"}
    monkeypatch.setattr(sensitivity, "channel_sensitivity", None)  # must not be called
    assert sensitivity.scan(model, data, tmp_path, ratios=(0.25, 0.75), samples=100,
                            key="tiny") == json.loads((tmp_path / "sensitivity.json")
                                                      .read_text())


def test_removing_nothing_would_change_nothing(trained, test_set):
    rows = sensitivity.channel_sensitivity(trained[0], test_set.take(50), ratios=(0.01,),
                                           preprocess="unit")
    untouched = [row for row in rows if row["kept"] == row["channels"]]  # 1 % rounds to 0
    assert untouched and all(row["agreement"] == 1.0 for row in untouched)
    with pytest.raises(OptionError, match="ratios"):
        sensitivity.channel_sensitivity(trained[0], test_set, ratios=(1.5,),
                                        preprocess="unit")


def test_sensitivity_command(trained, tmp_path, capsys):
    argv = ["sensitivity", str(trained[1]), "--data", "shapes", "--preprocess", "unit",
            "--samples", "50", "--no-quantisation", "--out", str(tmp_path / "s")]
    assert cli.main(argv) == 0
    assert "agreement" in capsys.readouterr().out
    assert cli.main(argv[:-2] + ["--ratios", "2", "--out", str(tmp_path / "t")]) == 2
    assert "ratios" in capsys.readouterr().err
