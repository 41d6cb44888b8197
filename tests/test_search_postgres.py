"""A search shared through a real PostgreSQL server, as on several machines: two
separately started searches, one killed mid-trial, a resume, and the trials read back from
the server; and the one-line errors of a bad URL, an unreachable server and a wrong
password. Needs a server this process can create a database on as the `postgres` user
(CI starts Debian's); skips with the reason elsewhere."""

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time

import pytest

from edgecompress import cli, search
from edgecompress.errors import OptionError

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def _psql(sql: str) -> subprocess.CompletedProcess:
    command = ["psql", "-v", "ON_ERROR_STOP=1", "-qAtc", sql]
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--"] + command
    return subprocess.run(command, capture_output=True, text=True, cwd="/")


@pytest.fixture(scope="module")
def database():
    """A throw-away database and user on the local server: (URL, user, name)."""
    ready = shutil.which("psql") and _psql("select 1").returncode == 0
    if not ready:
        reason = "no PostgreSQL server to create a database on (.ci/run starts one)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    name = f"edgecompress_test_{secrets.token_hex(4)}"
    password = secrets.token_hex(8)
    for sql in (f"create role {name} login password '{password}'",
                f"create database {name} owner {name}"):
        done = _psql(sql)
        assert done.returncode == 0, done.stderr
    yield f"postgresql://{name}:{password}@127.0.0.1:5432/{name}", name
    _psql(f"select pg_terminate_backend(pid) from pg_stat_activity where datname = '{name}'")
    _psql(f"drop database if exists {name}")
    _psql(f"drop role if exists {name}")


def _argv(trained, out, url, *extra):
    return ["search", str(trained[1]), "--data", "shapes", "--eval-data", "shapes",
            "--preprocess", "unit", "--target", "phone-cpu-1t", "--max-drop", "100",
            "--steps", "2", "--qat-steps", "1", "--out", str(out), "--storage", url, *extra]


def test_two_machines_share_one_study_and_a_killed_one_loses_only_its_trial(
        trained, tmp_path, database, monkeypatch):
    import optuna

    url, _ = database
    # two searches started separately, as on two machines: each its own --out and --seed
    first = subprocess.Popen([sys.executable, "-m", "edgecompress.cli",
                              *_argv(trained, tmp_path / "a", url, "--trials", "3",
                                     "--seed", "1")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen([sys.executable, "-m", "edgecompress.cli",
                               *_argv(trained, tmp_path / "b", url, "--trials", "3",
                                      "--seed", "2")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in second.stdout:  # kill the second machine once a trial of its has ended
        seen.append(line)
        if line.startswith("trial "):
            time.sleep(3)  # inside its next trial
            second.send_signal(signal.SIGKILL)
            break
    second.wait()
    assert any(line.startswith("trial ") for line in seen), second.stderr.read()[-2000:]
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-1000:]
    assert "Warning" not in err and "Traceback" not in err
    time.sleep(4)  # past the grace period set below
    monkeypatch.setattr(search, "HEARTBEAT_SECONDS", 1)
    assert cli.main(_argv(trained, tmp_path / "c", url, "--trials", "1")) in (0, 1)
    study = optuna.load_study(study_name="edgecompress", storage=url)  # from the server
    states = [t.state.name for t in study.trials]
    assert states.count("FAIL") == 1 and "RUNNING" not in states, states
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) >= 5  # three, at least one of the killed machine's, and one more
    assert len({t.user_attrs["process"] for t in complete}) == 3
    firsts = {}
    for t in sorted(complete, key=lambda t: t.number):
        firsts.setdefault(t.user_attrs["process"], tuple(sorted(t.params.items())))
    assert len(set(firsts.values())) == len(firsts)  # the samplers' seeds differ


def test_a_wrong_password_is_one_line(trained, tmp_path, database, capsys):
    url, name = database
    password = url.split(":")[2].split("@")[0]
    wrong = url.replace(f":{password}@", ":not-the-password@")
    assert cli.main(_argv(trained, tmp_path, wrong, "--trials", "1")) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Cannot open the study storage" in errors[0]
    assert "password authentication failed" in errors[0]
    assert "not-the-password" not in errors[0]  # the URL is shown with *** for it


@pytest.mark.parametrize("url, message", [
    ("postgresql://nobody:x@127.0.0.1:1/none", "Connection refused"),
    ("postgresql+pg8000://nobody:x@127.0.0.1/none", "needs a database driver"),
    ("redis://localhost", "must be one of sqlite, postgresql, mysql"),
    ("not a url", "must be a database URL"),
])
def test_a_bad_url_or_an_unreachable_server_is_one_line(trained, tmp_path, url, message):
    with pytest.raises(OptionError, match=message):
        search._study(url, "edgecompress", 0)
