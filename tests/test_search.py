"""The budgeted search on a tiny model and the shapes data: the winner meets the budgets,
the front is non-dominated, the study resumes, and an impossible budget says so."""

import dataclasses
import json

import pytest

from edgecompress import cli, search
from edgecompress.device import targets
from edgecompress.errors import OptionError

SHORT = dict(steps=2, qat_steps=1, max_ratio=0.75)


@pytest.fixture
def board(monkeypatch):
    """A microcontroller whose flash only some candidates fit (the tiny CNN is 5.5-7 KB)."""
    monkeypatch.setattr(targets, "_REGISTRY", dict(targets._REGISTRY))
    return targets.register(targets.Target(
        "tiny-board", "test board", runtime="tflm", int8_only=True, flash_bytes=6_100,
        clock_mhz=100, cycles_per_mac=(1.6, 6.8)))


def test_settings_are_json_and_refuse_what_they_cannot_mean():
    settings = search.Settings(target="mcu-cortex-m4", max_bytes=48_000, stored_as=("lut4",),
                               time_budget="25m")
    assert json.loads(json.dumps(dataclasses.asdict(settings)))["stored_as"] == ["lut4"]
    # storage finalists train ten times longer than QAT ones unless told
    assert settings.final_qat_steps == search.FINAL_STORAGE_STEPS
    assert search.Settings(target="mcu-cortex-m4").final_qat_steps == search.FINAL_QAT_STEPS
    assert dataclasses.replace(settings, final_qat_steps=7).final_qat_steps == 7
    for bad, match in ((dict(max_bytes=0), "max_bytes"), (dict(workers=3, trials=2), "workers"),
                       (dict(finalists=-1), "negative"), (dict(final_draws=0), "final_draws"),
                       (dict(minimise="size"), "minimise"),
                       (dict(time_budget="soon"), "30m"), (dict(max_drop=-1), "max_drop")):
        with pytest.raises(OptionError, match=match):
            search.Settings(target="mcu-cortex-m4", **bad)


@pytest.mark.slow
def test_a_finalist_is_a_second_draw_not_a_replay(trained, train_set, test_set, tmp_path,
                                                  board, capsys):
    train, judge = train_set.with_preprocess("unit"), test_set.with_preprocess("unit")
    lines = []
    result = search.run(trained[0], train, judge, tmp_path, search.Settings(
        target=board, max_drop=100, trials=1, finalists=1, final_steps=SHORT["steps"],
        final_qat_steps=SHORT["qat_steps"], final_draws=2, strip_names=True,  # names differ
        minimise="drop", **SHORT), progress=lines.append)
    assert capsys.readouterr().out == ""  # every line went to the callback
    assert [line.split(":")[0] for line in lines[-3:]] == ["trial 0", "finalist", "finalist"]
    (trial,), (final,) = result["trials"], result["finalists"]
    assert final["trial"] == trial["trial"] and final["bytes"] == trial["bytes"]
    # the same recipe at the same length with the next seeds: other weights (with the same
    # seed, the very same file)
    draws = sorted((tmp_path / "finalists").glob("trial_0_draw_*.tflite"))
    assert len(draws) == 2 and final["file"] in map(str, draws)
    contents = {trial["file"]: open(trial["file"], "rb").read()} | {
        str(d): d.read_bytes() for d in draws}
    assert len(set(contents.values())) == 3
    # judged by the mean of its draws, its file the better draw's
    assert final["mean_drop_points"] == pytest.approx(sum(final["draw_drops"]) / 2, abs=0.01)
    assert final["drop_points"] == min(final["draw_drops"])
    assert final["fits"] and final["draw_fits"]  # a 100-point budget
    # with minimise="drop" the study's first objective is the drop, not the bytes
    import optuna

    study = optuna.load_study(study_name="edgecompress",
                              storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert study.trials[0].values[0] == pytest.approx(trial["drop_points"])


@pytest.mark.slow  # a minute: the fast tier keeps the search's budget and naming tests
def test_the_winner_meets_the_budget_and_the_study_resumes(trained, train_set, test_set,
                                                           tmp_path, board):
    model, out = trained[0], tmp_path / "search"
    train, judge = train_set.with_preprocess("unit"), test_set.with_preprocess("unit")
    result = search.run(model, train, judge, out,
                        search.Settings(target=board, max_drop=100, trials=4, finalists=1,
                                        final_steps=6, final_qat_steps=2, **SHORT))
    assert len(result["trials"]) == 4 and 0 < result["feasible"] < 4, result["trials"]
    smallest = min((r for r in result["trials"] if r["fits"]), key=lambda r: r["bytes"])
    (final,) = result["finalists"]  # the smallest trial within budget, trained longer
    best = result["best"]
    assert final["trial"] == smallest["trial"] and final["fits"] and best is final
    assert best["bytes"] <= 6_100 and "finalists" in best["file"]
    front = result["front"]
    figures = [(r["bytes"], r["latency_ms"], r["drop_points"]) for r in front]
    assert not [a for a in figures for b in figures
                if b != a and all(x <= y for x, y in zip(b, a))]  # non-dominated
    assert min(front, key=lambda r: r["drop_points"])["drop_points"] == min(
        r["drop_points"] for r in result["trials"] if r["fits"])  # the most accurate is on it
    assert (out / "best" / "model_int8.tflite").read_bytes() == open(best["file"], "rb").read()
    assert json.loads((out / "best" / "recipe.json").read_text())["stages"][0][
        "technique"] == "channels"
    page = (out / "report.html").read_text()
    assert f"Best: trial {best['trial']}" in page and page.count("<img") == 1
    assert "as a finalist (6 channels + 2 qat steps, the next seed)" in page
    assert "among 4 trial(s)" in page and "never saw" in (out / "report.md").read_text()
    assert page.count("<tr>") == (1 + len(front)) + (1 + 1) + (1 + 4)  # front, finalist, all
    again = search.run(model, train, judge, out,
                       search.Settings(target=board, max_drop=100, trials=1, **SHORT))
    assert len(again["trials"]) == 5  # the four kept in the study, and one more
    with pytest.raises(OptionError, match="max_drop 100 -> 50"):
        search.run(model, train, judge, out,
                   search.Settings(target=board, max_drop=50, trials=1, **SHORT))
    with pytest.raises(OptionError, match="strip_names None -> True"):
        search.run(model, train, judge, out,
                   search.Settings(target=board, max_drop=100, trials=1, strip_names=True, **SHORT))


def test_reconstruction_is_in_every_trials_recipe_and_a_study_keeps_to_it():
    import types

    import optuna

    settings = search.Settings(target="mcu-cortex-m4", reconstruct=True)
    shrink, qat = search.trial_stages(settings, {"conv2d": 0.5}, steps=7)
    assert shrink.technique == "channels" and shrink.config.reconstruct
    assert shrink.fit.steps == 7 and qat.technique == "qat"
    target, study = types.SimpleNamespace(name="mcu-cortex-m4"), optuna.create_study()
    search._same_settings(study, search._judged_by(settings, target, ["conv2d"]))
    with pytest.raises(OptionError, match="reconstruct True -> None"):
        search._same_settings(study, search._judged_by(
            dataclasses.replace(settings, reconstruct=False), target, ["conv2d"]))


def test_a_reconstructing_studys_seeds_come_from_a_reconstructed_scan(monkeypatch):
    import types

    scans = []
    monkeypatch.setattr(search.sensitivity, "channel_sensitivity",
                        lambda model, data, **kw: scans.append(kw) or [])
    monkeypatch.setattr(search.sensitivity, "allocate", lambda *a, **kw: {"conv2d": 0.5})
    objective = types.SimpleNamespace(
        model=None, train=types.SimpleNamespace(take=lambda n, seed: None),
        budget_fractions=lambda: (0.5, 0.5), progress=lambda line: None)
    for reconstruct in (False, True):
        objective.settings = search.Settings(target="mcu-cortex-m4", reconstruct=reconstruct)
        assert search._seeds(objective) == [{"conv2d": 0.5}]
    assert [scan["reconstruct"] for scan in scans] == [False, True]


def test_budgets_seed_the_first_trials_and_bound_the_winner(trained, train_set, test_set,
                                                            int8_file, tmp_path, capsys):
    train, judge = train_set.with_preprocess("unit"), test_set.with_preprocess("unit")
    max_bytes = int(0.7 * int8_file.stat().st_size)
    result = search.run(trained[0], train, judge, tmp_path,
                        search.Settings(target="phone-cpu-1t", max_drop=100, trials=2,
                                        max_bytes=max_bytes, **SHORT))
    seeded = capsys.readouterr().out.count("seeded from the sensitivity scan")
    assert seeded in (1, 2)  # one when the budget and 90 % of it allocate alike
    rows = result["trials"]
    assert [r["fits"] for r in rows] == [r["bytes"] <= max_bytes for r in rows]
    assert any(r["fits"] for r in rows), rows  # the seeds aim at the budget
    assert result["best"]["bytes"] <= max_bytes
    seeds = [json.loads((tmp_path / "trials" / f"trial_{i}.json").read_text())
             for i in range(seeded)]
    assert all(s["stages"][0]["config"]["ratios"] for s in seeds)  # channels removed
    with pytest.raises(OptionError, match="max_ms"):
        search.run(trained[0], train, judge, tmp_path / "x",
                   search.Settings(target="phone-cpu-1t", max_ms=0, **SHORT))


@pytest.mark.slow  # half a minute: six trials
def test_a_trial_with_the_choices_of_a_completed_one_takes_its_figures(
        trained, train_set, test_set, tmp_path, monkeypatch):
    from collections import Counter

    built, build = Counter(), search._Objective.build
    monkeypatch.setattr(search._Objective, "build", lambda self, stages, path, **kw: (
        built.update([json.dumps([s.describe() for s in stages])]),
        build(self, stages, path, **kw))[1])
    # two channel groups with two ratios each: six trials must choose something twice
    result = search.run(trained[0], train_set.with_preprocess("unit"),
                        test_set.with_preprocess("unit"), tmp_path,
                        search.Settings(target="phone-cpu-1t", trials=6, max_drop=100,
                                        steps=2, qat_steps=1, max_ratio=0.125))
    rows = {row["trial"]: row for row in result["trials"]}
    repeats = [row for row in rows.values() if "repeats" in row]
    assert len(rows) == 6 and repeats and len(built) == sum(built.values()) == 6 - len(repeats)
    for row in repeats:
        twin = rows[row["repeats"]]
        assert (row["bytes"], row["drop_points"]) == (twin["bytes"], twin["drop_points"])
        assert row["file"] != twin["file"]
        assert open(row["file"], "rb").read() == open(twin["file"], "rb").read()


def test_a_twin_is_a_completed_trial_of_the_same_choices_and_seed_with_its_file(tmp_path):
    import optuna

    file, study = tmp_path / "trial.tflite", optuna.create_study()
    file.write_bytes(b"a trial's file")
    ratio = {"ratio conv2d": optuna.distributions.FloatDistribution(0, 0.5, step=0.125)}
    for seed in (1, 0):  # trial 0 trained with another machine's seed
        study.add_trial(optuna.trial.create_trial(
            params={"ratio conv2d": 0.25}, distributions=ratio, value=1.0,
            user_attrs={"row": {"file": str(file)}, "seed": seed}))

    def twin_of(choice, seed):
        study.enqueue_trial({"ratio conv2d": choice})
        trial = study.ask()
        trial.suggest_float("ratio conv2d", 0, 0.5, step=0.125)
        trial.set_user_attr("seed", seed)
        twin = search._twin(trial)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return twin and twin.number

    assert twin_of(0.25, 0) == 1
    assert twin_of(0.25, 2) is None and twin_of(0.5, 0) is None
    file.unlink()  # trained on another machine
    assert twin_of(0.25, 0) is None


def test_trials_are_written_without_names_and_parsed_once(trained, train_set, test_set,
                                                          tmp_path, monkeypatch):
    from collections import Counter

    from edgecompress.device import inspect

    opened, open_file = Counter(), inspect.open
    monkeypatch.setattr(inspect, "open", lambda path: opened.update([str(path)]) or
                        open_file(path))
    result = search.run(trained[0], train_set.with_preprocess("unit"),
                        test_set.with_preprocess("unit"), tmp_path,
                        search.Settings(target="phone-cpu-1t", trials=1, strip_names=True, **SHORT))
    (trial,) = result["trials"]
    assert opened[trial["file"]] == 1, opened
    assert not any(t.name for t in inspect.open(trial["file"]).tensors)


def test_an_impossible_budget_is_exit_1_with_the_trials_written(trained, tmp_path, capsys,
                                                                monkeypatch):
    monkeypatch.setattr(targets, "_REGISTRY", dict(targets._REGISTRY))
    targets.register(targets.Target("no-flash", "10 bytes of flash", runtime="tflm",
                                    int8_only=True, flash_bytes=10))
    argv = ["search", str(trained[1]), "--data", "shapes", "--eval-data", "shapes",
            "--preprocess", "unit", "--trials", "1", "--steps", "2", "--qat-steps", "1"]
    assert cli.main(argv + ["--target", "no-flash", "--out", str(tmp_path / "s")]) == 1
    assert "no candidate fit" in capsys.readouterr().err
    assert "No candidate fit every budget" in (tmp_path / "s" / "report.md").read_text()
    assert "No candidate fit every budget" in (tmp_path / "s" / "report.html").read_text()
    assert cli.main(argv + ["--target", "arduino", "--out", str(tmp_path / "t")]) == 2
    assert cli.main(argv + ["--target", "no-flash", "--max-bytes", "-5", "--out",
                            str(tmp_path / "u")]) == 2
    assert "`max_bytes` is a budget" in capsys.readouterr().err
    with pytest.raises(OptionError, match="90s, 30m or 2h"):
        search.parse_duration("soon")
    assert search.parse_duration("2h") == 7200


def test_4_bit_trials_export_int4_weights(trained, train_set, test_set, tmp_path, board):
    from edgecompress.device import inspect

    train, judge = train_set.with_preprocess("unit"), test_set.with_preprocess("unit")
    result = search.run(trained[0], train, judge, tmp_path,
                        search.Settings(target="phone-cpu-1t", max_drop=100, trials=1,
                                        weight_bits=(4,), **SHORT))
    (row,) = result["trials"]
    assert row["weight_bits"] == 4
    assert "INT4" in {t.dtype for t in inspect.open(row["file"]).tensors}
    assert (tmp_path / "best" / "model_int4w.tflite").exists()
    both = search.run(trained[0], train, judge, tmp_path / "both",
                      search.Settings(target="phone-cpu-1t", max_drop=100, trials=1,
                                      weight_bits=(8, 4), **SHORT))
    chosen = json.loads((tmp_path / "both" / "trials" / "trial_0.json").read_text())
    bits = chosen["stages"][-1]["config"]["weight_bits"]
    assert both["trials"][0]["weight_bits"] == bits in (8, 4)
    with pytest.raises(OptionError, match="need --emulate"):
        search.run(trained[0], train, judge, tmp_path / "mcu",
                   search.Settings(target=board, weight_bits=(8, 4), **SHORT))
    with pytest.raises(OptionError, match="8, 4 or both"):
        search.run(trained[0], train, judge, tmp_path / "x",
                   search.Settings(target="phone-cpu-1t", weight_bits=(2,), **SHORT))


@pytest.mark.slow
def test_two_workers_share_the_trials_without_repeating_one(trained, train_set, test_set,
                                                          tmp_path):
    import optuna

    train, judge = train_set.with_preprocess("unit"), test_set.with_preprocess("unit")
    result = search.run(trained[0], train, judge, tmp_path,
                        search.Settings(target="phone-cpu-1t", max_drop=100, trials=4, workers=2,
                                        **SHORT))
    study = optuna.load_study(study_name="edgecompress",
                              storage=f"sqlite:///{tmp_path / 'study.db'}")
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(finished) == 4 == len(result["trials"])
    assert len({t.number for t in finished}) == 4
    assert len({tuple(sorted(t.params.items())) for t in finished}) == 4  # no repeat
    assert len({t.user_attrs["process"] for t in finished}) == 2


@pytest.mark.slow
def test_a_killed_search_loses_only_its_running_trial(trained, tmp_path, monkeypatch):
    import optuna
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "s"
    argv = ["search", str(trained[1]), "--data", "shapes", "--eval-data", "shapes",
            "--preprocess", "unit", "--target", "phone-cpu-1t", "--max-drop", "100",
            "--steps", "2", "--qat-steps", "1", "--out", str(out)]
    process = subprocess.Popen([sys.executable, "-m", "edgecompress.cli", *argv, "--trials",
                                "3"], stdout=subprocess.PIPE, text=True)
    for line in process.stdout:  # kill it once trial 1 has started
        if line.startswith("trial 0:"):
            time.sleep(3)
            process.send_signal(signal.SIGKILL)
            break
    process.wait()
    time.sleep(4)  # past the grace period set below
    monkeypatch.setattr(search, "HEARTBEAT_SECONDS", 1)
    assert cli.main(argv + ["--trials", "1"]) == 0
    study = optuna.load_study(study_name="edgecompress", storage=f"sqlite:///{out / 'study.db'}")
    states = {t.number: t.state.name for t in study.trials}
    assert states == {0: "COMPLETE", 1: "FAIL", 2: "COMPLETE"}, states


@pytest.mark.slow
def test_storage_per_layer_is_a_dimension_and_the_bytes_are_the_stored_files(
        trained, train_set, test_set, tmp_path, board):
    from pathlib import Path

    from edgecompress.device import inspect

    train, judge = train_set.with_preprocess("unit"), test_set.with_preprocess("unit")
    result = search.run(trained[0], train, judge, tmp_path,
                        search.Settings(target=board, max_drop=100, trials=3, steps=2, qat_steps=4,
                                        max_ratio=0.0, stored_as=("int8", "lut3", "prune75"),
                                        strip_names=True))
    layers = ["conv2d", "conv2d_1", "dense"]
    for row in result["trials"]:
        assert sorted(row["storage"]) == layers
        file = inspect.open(row["file"])
        assert row["bytes"] == Path(row["file"]).stat().st_size == file.size
        assert file.metadata["storage"] == row["storage"]
        stored = [k["storage"] for k in file.parts["kernels"]]
        assert stored == [{"prune75": "prune"}.get(row["storage"][name], row["storage"][name])
                          for name in layers]
    with pytest.raises(OptionError, match="runs LiteRT, which cannot decode them"):
        search.run(trained[0], train, judge, tmp_path / "phone",
                   search.Settings(target="phone-cpu-1t", trials=1, stored_as=("lut3",), **SHORT))
    with pytest.raises(OptionError, match="latency budget with stored kernels needs --emulate"):
        search.run(trained[0], train, judge, tmp_path / "timed",
                   search.Settings(target=board, trials=1, stored_as=("lut3",), max_ms=50.0,
                                   **SHORT))


@pytest.mark.slow
def test_trials_in_a_hopeless_region_are_pruned_and_the_winner_comes_from_elsewhere(
        trained, train_set, test_set, tmp_path, board, monkeypatch):
    import dataclasses

    import optuna

    monkeypatch.setattr(search, "PRUNE_AFTER", 2)
    stages = search.trial_stages

    def planted(settings, ratios, *args, **kwargs):  # the hopeless region: conv2d >= 0.5
        made = stages(settings, ratios, *args, **kwargs)
        if ratios.get("conv2d", 0) >= 0.5:  # a learning rate that wrecks the weights
            made[0] = dataclasses.replace(made[0], fit=dataclasses.replace(
                made[0].fit, learning_rate=10.0))
        return made

    monkeypatch.setattr(search, "trial_stages", planted)
    train, judge = train_set.with_preprocess("unit"), test_set.with_preprocess("unit")
    roomy = dataclasses.replace(board, flash_bytes=12_000)  # the accuracy decides, not flash
    result = search.run(trained[0], train, judge, tmp_path,
                        search.Settings(target=roomy, max_drop=30, trials=10, finalists=1,
                                        final_steps=2, final_qat_steps=1, **SHORT))
    study = optuna.load_study(study_name="edgecompress",
                              storage=f"sqlite:///{tmp_path / 'study.db'}")
    hopeless = [t for t in study.trials if t.params["ratio conv2d"] >= 0.5]
    completed = sorted(t.number for t in study.trials if t.state.name == "COMPLETE")
    after_startup = [t for t in hopeless if t.number > completed[1]]
    assert after_startup and all(t.state.name == "PRUNED" for t in after_startup), \
        [(t.number, t.state.name, t.user_attrs["reports"]) for t in hopeless]
    assert len(result["pruned"]) == len(study.trials) - len(result["trials"]) > 0
    assert all(len(p["interim_drops"]) == 1 for p in result["pruned"])  # after the first
    assert result["best"]["trial"] in completed
    assert study.trials[result["best"]["trial"]].params["ratio conv2d"] < 0.5
    assert {f["trial"] for f in result["finalists"]}.isdisjoint(
        p["trial"] for p in result["pruned"])
    assert "pruned early" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_a_storage_search_with_a_bytes_budget_starts_from_the_storage_scan(
        trained, train_set, test_set, tmp_path, board, capsys):
    from pathlib import Path

    train, judge = train_set.with_preprocess("unit"), test_set.with_preprocess("unit")
    untouched = search.tflite.export(trained[0], tmp_path / "int8.tflite", mode="int8",
                                     data=train, strip_names=True).stat().st_size
    budget = untouched - 500
    result = search.run(trained[0], train, judge, tmp_path / "s",
                        search.Settings(target=board, max_drop=100, trials=1, steps=2, qat_steps=4,
                                        max_ratio=0.0, max_bytes=budget,
                                        stored_as=("int8", "int4", "lut2"), strip_names=True))
    (seeded,) = result["trials"]
    assert set(seeded["storage"].values()) != {"int8"}, seeded["storage"]
    assert Path(seeded["file"]).stat().st_size <= budget, (untouched, seeded)
    (uniform,) = [line.split("(one kind everywhere): ")[1]
                  for line in capsys.readouterr().out.splitlines() if "one kind everywhere" in line]
    assert len({part.split()[1] for part in uniform.split(", ")} - {"int8"}) == 1, uniform


def _study_of(tmp_path, drops):
    """A study whose trials made files of 1,000, 2,000, ... bytes with these drops, judged
    against a 1-point budget (the constraints as the objective sets them)."""
    import optuna

    study = optuna.create_study(directions=["minimize", "minimize"])
    for number, drop in enumerate(drops):
        file = tmp_path / f"trial_{number}.tflite"
        file.write_bytes(b"x" * 8)
        file.with_suffix(".json").write_text("{}")
        row = {"trial": number, "bytes": 1000 * (number + 1), "latency_ms": 1.0,
               "accuracy": 0.9, "drop_points": drop, "drop_95": "", "file": str(file)}
        study.add_trial(optuna.trial.create_trial(
            values=[row["bytes"], 1.0],
            user_attrs={"row": row, "constraints": [(drop - 1) / 100, 0.0]}))
    return study


def test_a_winner_no_finalist_confirmed_comes_with_a_warning(tmp_path):
    study = _study_of(tmp_path, [0.8, 0.5])
    for name in "abc":
        (tmp_path / name).mkdir()
    confirmed = search.summarise(study, tmp_path / "a", [
        {"trial": 1, "bytes": 2000, "latency_ms": 1.0, "drop_points": 0.9, "drop_95": "",
         "fits": True, "steps": "300 storage", "file": str(tmp_path / "trial_1.tflite")}])
    assert confirmed["best"]["trial"] == 1 and confirmed["unconfirmed"] is None
    lucky = search.summarise(study, tmp_path / "b", [
        {"trial": 0, "bytes": 1000, "latency_ms": 1.0, "drop_points": 2.4, "drop_95": "",
         "fits": False, "steps": "300 storage", "file": str(tmp_path / "trial_0.tflite")}])
    assert lucky["best"]["trial"] == 0 and "lucky one" in lucky["unconfirmed"]
    assert "a trial within them" in lucky["unconfirmed"]
    assert "**Warning:** none of the 1 finalist(s)" in (tmp_path / "b" / "report.md").read_text()
    assert search.summarise(study, tmp_path / "c")["unconfirmed"] is None  # none asked
    # a finalist whose mean over its draws broke the budget but whose kept draw fits wins
    # over the trial: the same kind of lucky draw, trained at the finalist length
    (tmp_path / "d").mkdir()
    drawn = search.summarise(study, tmp_path / "d", [
        {"trial": 0, "bytes": 1000, "latency_ms": 1.0, "drop_points": 0.9, "drop_95": "",
         "mean_drop_points": 1.6, "draw_drops": [0.9, 2.3], "fits": False, "draw_fits": True,
         "steps": "3000 storage", "file": str(tmp_path / "trial_0.tflite")}])
    assert drawn["best"]["steps"] == "3000 storage"
    assert "one finalist draw that fits" in drawn["unconfirmed"]
    assert "mean drop is +1.60, beyond the budget" in (tmp_path / "d" / "report.md").read_text()


def test_minimising_the_drop_picks_the_most_accurate_file_within_the_budgets(tmp_path):
    study = _study_of(tmp_path, [0.8, 0.5, 1.5])  # the third breaks the 1-point budget
    for name in "ab":
        (tmp_path / name).mkdir()
    assert search.summarise(study, tmp_path / "a")["best"]["trial"] == 0  # the smallest
    assert search.summarise(study, tmp_path / "a", minimise="drop")["best"]["trial"] == 1
    # finalists by their mean drop, not their kept (best) draw's
    finals = [{"trial": n, "bytes": 1000 * (n + 1), "latency_ms": 1.0, "drop_points": best,
               "mean_drop_points": mean, "drop_95": "", "fits": True, "steps": "",
               "file": str(tmp_path / f"trial_{n}.tflite")}
              for n, best, mean in ((0, 0.1, 0.6), (1, 0.4, 0.5))]
    assert search.summarise(study, tmp_path / "b", finals, "drop")["best"]["trial"] == 1


def _stand_in_objective(out, built, final_draws=1, fit_steps=3):
    """The parts of a search's objective that `_finalists` uses; `build` writes a file of
    the row's bytes and appends its name to `built`."""
    import types

    def build(stages, path, seed):
        built.append(path.name)
        path.write_bytes(bytes(1000))
        return {"bytes": 1000, "latency_ms": 1.0, "drop_points": 0.1 * seed,
                "file": str(path)}, {"accuracy drop": -1}

    return types.SimpleNamespace(
        settings=search.Settings(target="mcu-cortex-m4", final_draws=final_draws,
                                 final_qat_steps=fit_steps), groups=[],
        layers={"conv2d": ["int8", "lut4"]}, out=out, progress=lambda line: None, build=build)


def _storage_study(kinds):
    import optuna

    choice = optuna.distributions.CategoricalDistribution(["int8", "lut4"])
    study = optuna.create_study(directions=["minimize", "minimize"])
    for kind in kinds:
        row = {"bytes": 1000 if kind == "lut4" else 2000, "latency_ms": 1.0,
               "drop_points": 0.5}
        study.add_trial(optuna.trial.create_trial(
            params={"storage conv2d": kind}, distributions={"storage conv2d": choice},
            values=[row["bytes"], 1.0], user_attrs={"row": row, "constraints": [-0.1, 0.0]}))
    return study


def test_a_plan_proposed_twice_is_one_finalist(tmp_path):
    """The sampler may propose one plan twice; training it again twice with the same
    seeds would only repeat the same draws."""
    built = []
    finals = search._finalists(_stand_in_objective(tmp_path, built),
                               _storage_study(["lut4", "lut4", "int8"]), 2)
    assert [f["trial"] for f in finals] == [0, 2] and built == ["trial_0.tflite",
                                                                "trial_2.tflite"]


def test_a_resumed_search_trains_only_the_finalist_draws_it_lacks(tmp_path):
    study, built = _storage_study(["lut4"]), []
    objective = _stand_in_objective(tmp_path, built, final_draws=3)
    build = objective.build

    def stopped_at_the_third(stages, path, seed):
        if seed == 3:
            raise KeyboardInterrupt
        return build(stages, path, seed)

    objective.build = stopped_at_the_third
    with pytest.raises(KeyboardInterrupt):  # stopped during the third draw
        search._finalists(objective, study, 1)
    assert built == ["trial_0_draw_1.tflite", "trial_0_draw_2.tflite"]
    (tmp_path / "finalists" / "trial_0_draw_2.tflite").unlink()  # a draw whose file is gone
    objective.build = build
    (final,) = search._finalists(objective, study, 1)
    assert built[2:] == ["trial_0_draw_2.tflite", "trial_0_draw_3.tflite"]
    assert final["draw_drops"] == pytest.approx([0.1, 0.2, 0.3])
    # finalists of another length are other draws
    search._finalists(_stand_in_objective(tmp_path, built, final_draws=3, fit_steps=4), study, 1)
    assert len(built) == 7


def test_a_search_that_loses_the_race_to_create_the_tables_tries_again(tmp_path,
                                                                         monkeypatch):
    """Two searches started together on a new PostgreSQL database: the second's CREATE
    TABLE fails with "relation ... already exists" (seen in CI); it must open the study
    the first made, not stop."""
    import optuna
    import sqlalchemy

    calls = []

    class Racing(optuna.storages.RDBStorage):
        def __init__(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 1:
                raise sqlalchemy.exc.ProgrammingError(
                    "CREATE TABLE studies", {}, Exception('relation "studies" already exists'))
            super().__init__(*args, **kwargs)

    class Refused(optuna.storages.RDBStorage):
        def __init__(self, *args, **kwargs):
            raise sqlalchemy.exc.ProgrammingError("SELECT", {}, Exception("permission denied"))

    monkeypatch.setattr(search.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(optuna.storages, "RDBStorage", Racing)
    study = search._study(f"sqlite:///{tmp_path / 'study.db'}", "edgecompress", 0)
    assert len(calls) == 2 and study.study_name == "edgecompress"
    monkeypatch.setattr(optuna.storages, "RDBStorage", Refused)  # not a race: one line
    with pytest.raises(OptionError, match="permission denied"):
        search._study(f"sqlite:///{tmp_path / 'other.db'}", "edgecompress", 0)
