"""The sensitivity scan: every prunable channel group at every ratio, without fine-tuning,
with the INT8 error per operator; cached; one-line errors."""

import json

import numpy as np
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


def test_a_reconstructed_scan_shows_the_smaller_cost_reconstruction_starts_from(trained,
                                                                                 test_set):
    data = test_set.take(100)
    plain, refit = (sensitivity.channel_sensitivity(trained[0], data, ratios=(0.5,),
                                                    preprocess="unit", reconstruct=r)
                    for r in (False, True))
    assert [r["group"] for r in plain] == [r["group"] for r in refit]
    assert np.mean([r["agreement"] for r in refit]) > np.mean([r["agreement"] for r in plain])


def test_sensitivity_command(trained, tmp_path, capsys):
    argv = ["sensitivity", str(trained[1]), "--data", "shapes", "--preprocess", "unit",
            "--samples", "50", "--no-quantisation", "--out", str(tmp_path / "s")]
    assert cli.main(argv) == 0
    assert "agreement" in capsys.readouterr().out
    assert cli.main(argv[:-2] + ["--ratios", "2", "--out", str(tmp_path / "t")]) == 2
    assert "ratios" in capsys.readouterr().err


@pytest.fixture(scope="module")
def useless_group(train_set):
    """A residual CNN whose block's second convolution is zero and frozen: the block is the
    identity, so its inner channels (the group of `inner`) carry nothing."""
    from edgecompress import train
    from edgecompress._tf import keras

    x = inputs = keras.Input(train_set.x.shape[1:])
    x = keras.layers.ReLU()(keras.layers.Conv2D(16, 3, padding="same", name="stem")(x))
    inner = keras.layers.ReLU()(keras.layers.Conv2D(16, 3, padding="same", name="inner")(x))
    dead = keras.layers.Conv2D(16, 3, padding="same", kernel_initializer="zeros",
                               trainable=False, name="dead")(inner)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Add()([x, dead]))
    outputs = keras.layers.Dense(len(train_set.classes), activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    train.fit(model, train_set, preprocess="unit", epochs=4, learning_rate=1e-2, verbose=0)
    return model


def test_a_planted_useless_group_ranks_last(useless_group, test_set):
    rows = sensitivity.channel_sensitivity(useless_group, test_set, preprocess="unit")
    agreement = {(r["group"], r["ratio"]): r["agreement"] for r in rows}
    assert {r["group"] for r in rows} == {"stem", "inner"}
    assert all(agreement["inner", ratio] == 1.0 for ratio in sensitivity.DEFAULT_RATIOS)
    assert agreement["stem", 0.75] < 1.0


def test_the_allocation_takes_the_useless_channels_first(useless_group, test_set):
    from edgecompress import models

    rows = sensitivity.channel_sensitivity(useless_group, test_set, preprocess="unit")
    ratios = sensitivity.allocate(useless_group, rows, params=0.6)
    measured = sorted((r["ratio"], 1 - r["agreement"]) for r in rows if r["group"] == "stem")
    stem_loss = np.interp(ratios["stem"], [0.0] + [r for r, _ in measured],
                          [0.0] + [loss for _, loss in measured])
    # the stem only as far as it measured free: a tiny model's stem sometimes loses nothing
    # at its first measured ratio, and then saves more weights per step than `inner`
    assert ratios["inner"] > 0 and stem_loss == 0, (ratios, measured)
    pruned = channels.apply(useless_group, channels.Config(ratio=0.0, ratios=ratios))
    assert pruned.count_params() <= 0.6 * useless_group.count_params()
    squeezed = sensitivity.allocate(useless_group, rows, params=0.05, max_ratio=0.5)
    assert squeezed == {"stem": 0.5, "inner": 0.5}  # as far as it may go, short of 5 %
    assert models.macs(pruned) < models.macs(useless_group)


def test_storage_sensitivity_stores_one_layer_at_a_time(trained, test_set):
    from edgecompress import models, storage

    model = trained[0]
    rows = sensitivity.storage_sensitivity(model, test_set.take(100),
                                           storages=("lut7", "lut2", "prune90", "int4"),
                                           preprocess="unit")
    layers = [layer.name for layer in model.layers if models.kernel(layer) is not None]
    by = {(r["layer"], r["storage"]): r for r in rows}
    assert list(by) == [(name, kind) for name in layers
                        for kind in ("lut7", "lut2", "prune90", "int4")
                        if (name, kind) != ("dense", "int4")]  # int4 stores Conv2D only
    for name in layers:  # 128 values a channel barely change; 4 or 10 % kept lose more
        assert by[name, "lut7"]["agreement"] >= by[name, "lut2"]["agreement"] - 0.02
        assert by[name, "lut2"]["bytes"] < by[name, "lut7"]["bytes"]
    conv = by["conv2d_1", "int4"]
    assert conv["bytes"] == storage.estimated_bytes(storage.Storage.parse("int4"),
                                                    conv["weights"], 16)
    assert min(r["agreement"] for r in rows) < 0.9  # something is lost somewhere


def _storage_rows(*rows) -> list[dict]:
    """storage_sensitivity's rows from (layer, weights, storage, bytes, agreement)."""
    return [dict(zip(("layer", "weights", "storage", "bytes", "agreement"), r)) for r in rows]


def test_uniform_storages_store_every_layer_alike_with_int8_where_a_kind_cannot():
    rows = _storage_rows(("conv", 1000, "int4", 500, 0.9), ("conv", 1000, "lut2", 350, 0.8),
                         ("dense", 100, "lut2", 60, 0.5))
    plans = {tuple(sorted(p.items())): size for size, p in sensitivity.uniform_storages(rows)}
    assert plans == {(("conv", "int4"), ("dense", "int8")): 600,
                     (("conv", "int8"), ("dense", "int8")): 1100,
                     (("conv", "lut2"), ("dense", "lut2")): 410}
    # without int8 a kind that cannot store every layer makes no plan
    assert sensitivity.uniform_storages(rows, kinds=("int4", "lut2")) == \
        [(410, {"conv": "lut2", "dense": "lut2"})]


def test_storage_allocation_meets_the_bytes_giving_up_the_least_agreement():
    rows = _storage_rows(("big", 1000, "lut4", 600, 0.99), ("big", 1000, "lut2", 350, 0.80),
                         ("small", 100, "lut4", 90, 0.50))
    assert sensitivity.allocate_storage(rows, 1100) == {"big": "int8", "small": "int8"}
    assert sensitivity.allocate_storage(rows, 800) == {"big": "lut4", "small": "int8"}
    assert sensitivity.allocate_storage(rows, 450) == {"big": "lut2", "small": "int8"}
    # out of reach: the cheapest plan, not an error
    assert sensitivity.allocate_storage(rows, 10) == {"big": "lut2", "small": "lut4"}
    assert sensitivity.allocate_storage(rows, 800, kinds=("lut2", "lut4")) == \
        {"big": "lut4", "small": "lut4"}
