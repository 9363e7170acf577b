"""Mistakes a user can make: one clear line and a non-zero exit, or a warning and work goes on;
never a traceback, never lost results."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from allsearch import study
from allsearch.core.space import load_space
from allsearch.data import __main__ as data_command
from allsearch.data.dataset import load_dataset
from allsearch.data.synthetic import write_dataset
from allsearch.engines import optuna_engine
from allsearch.engines import storage as storage_mod
from allsearch.tracking.store import resolve_tracking_uri
from conftest import fail_on_call, one_line_error, stale_in_copy, wait_for

SPACE = """
name: tiny
params:
  batch_size: {type: categorical, choices: [8, 16]}
  loss:       {type: categorical, choices: [categorical_crossentropy, binary_crossentropy]}
fixed: {epochs: 1, conv_layers: 5, learning_rate: 0.001, dropout: 0.5, dense_units: 32, features: pixels}
baseline: {batch_size: 8, loss: categorical_crossentropy}
"""


@pytest.fixture
def space_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(SPACE)
    return path


def test_folder_names_with_spaces_and_non_ascii(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "my data ü", classes=("Klasse ä", "class b c", "細胞"),
                         duplicate=False, junk=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = load_dataset(root)
    assert ds.class_names == ("Klasse ä", "class b c", "細胞")
    assert sum(ds.report.split_sizes.values()) == 36


def test_empty_class_folder(tiny_data: Path, capsys: pytest.CaptureFixture) -> None:
    (tiny_data / "Empty").mkdir()
    assert data_command.main([str(tiny_data)]) == 2
    assert "class folder(s) ['Empty']" in one_line_error(capsys)


def test_too_few_images_remain_after_skipping_corrupt_ones(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    root = write_dataset(tmp_path / "d", duplicate=False, junk=False)
    for f in sorted((root / "Pre").iterdir())[:8]:
        f.write_bytes(b"broken")
    assert data_command.main([str(root)]) == 2
    assert "class 'Pre'" in one_line_error(capsys)


def test_depth_the_input_cannot_take(tiny_data: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(SPACE.replace("conv_layers: 5", "conv_layers: 6"))
    assert study.main(["--space", str(path), "--data", str(tiny_data), "--no-progress"]) == 2
    assert "conv_layers [6] cannot be built on 100x100 images; allowed: 1 to 5" in one_line_error(capsys)


@pytest.mark.parametrize("flags, message", [
    (["--storage", "postgresql://alice:s3cret@127.0.0.1:1/optuna"], "cannot be opened"),
    (["--storage", "sqlite:///{tmp}/afile/optuna.db"], "cannot be opened"),
    (["--tracking-uri", "http://127.0.0.1:1"], "cannot be reached"),
    (["--tracking-uri", "foo://bar"], "is not a tracking URI"),
    (["--tracking-uri", "sqlite:///{tmp}/afile/mlflow.db"], "cannot be used"),
    (["--sampler", "grid", "--space", "paper"], None),
])
def test_unusable_stores_are_refused_before_training(flags: list[str], message: str | None,
                                                     tiny_data: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "afile").write_text("a file where a folder should be")
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    if message is None:  # grid over the paper space works: its params are all finite
        space = load_space("paper")

        def objective(trial: optuna.Trial) -> float:
            space.sample(trial)
            return 0.0

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            grid = optuna.create_study(sampler=optuna_engine.make_sampler("grid", space, 0))
            grid.optimize(objective, n_trials=1000)
        # Every configuration once, then the sampler stops the study: the whole grid.
        configurations = {tuple(sorted(t.params.items())) for t in grid.trials}
        assert len(grid.trials) == len(configurations) == 16 * 4 * 2 * 5
        return
    started = time.perf_counter()
    code = study.main([*flags, "--data", str(tiny_data), "--no-progress", "--trials", "1"])
    line = one_line_error(capsys)
    assert code == 2 and message in line
    assert "s3cret" not in line
    assert time.perf_counter() - started < 30
    assert not list(Path("mlruns").glob("artifacts/*/*/artifacts/*.png"))  # nothing trained


@pytest.mark.train
def test_ctrl_c_keeps_completed_trials_and_resumes(tiny_data: Path, space_file: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import allsearch.tracking.tracked as tracked_mod

    fail_on_call(monkeypatch, tracked_mod, "run_trial", 2, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        study.run(trials=3, space=str(space_file), data=str(tiny_data), progress=False,
                  trials_per_process=0, retrain_duplicates=True)
    client = MlflowClient(resolve_tracking_uri())
    exp = client.get_experiment_by_name("tiny")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert runs["trial-0000"].info.status == "FINISHED"
    assert runs["trial-0001"].info.status == "KILLED" and runs["trial-0001"].data.tags["state"] == "KILLED"
    assert runs["tiny"].info.status == "KILLED"

    resumed = study.run(trials=3, space=str(space_file), data=str(tiny_data), progress=False,
                        trials_per_process=0, retrain_duplicates=True)
    states = [t.state.name for t in resumed.trials]
    assert states.count("COMPLETE") == 3 and states[1] == "FAIL"  # the interrupted one is redone
    assert optuna_engine.counted_trials(resumed) == 3
    parent = client.search_runs([exp.experiment_id], filter_string="tags.`allsearch.role` = 'parent'")
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"


@pytest.mark.train
def test_disk_full_during_a_study_stops_it_with_one_line(tiny_data: Path, space_file: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    from allsearch.tracking.tracked import TrialRun

    fail_on_call(monkeypatch, TrialRun, "log_artifacts", 2,
                 OSError(errno.ENOSPC, "No space left on device"))
    code = study.main(["--trials", "4", "--space", str(space_file), "--data", str(tiny_data),
                       "--no-progress", "--trials-per-process", "0", "--retrain-duplicates"])
    line = one_line_error(capsys)
    assert code == 2 and "(disk full)" in line and "run the same command to resume" in line
    loaded = optuna.load_study(study_name="tiny", storage=f"sqlite:///{Path('mlruns/optuna.db').resolve()}")
    # The second run's files are written in the background while the third trial trains; the
    # failure stops the study when that trial has trained, instead of failing every trial.
    assert [t.state.name for t in loaded.trials] == ["COMPLETE", "COMPLETE", "FAIL"]


@pytest.mark.train
@pytest.mark.slow
def test_killed_worker_trial_is_not_counted_and_is_retried(tiny_data: Path, space_file: Path,
                                                           tmp_path: Path) -> None:
    env = {**os.environ, "ALLSEARCH_HEARTBEAT_S": "1", "ALLSEARCH_GRACE_S": "3",
           "PYTHONUNBUFFERED": "1"}
    slow_space = tmp_path / "slow.yaml"
    slow_space.write_text(SPACE.replace("epochs: 1", "epochs: 40"))
    command = [sys.executable, "-m", "allsearch.study", "--space", str(slow_space), "--data",
               str(tiny_data), "--trials", "2", "--no-progress", "--pruner", "none"]
    # Its own session, so the kill takes the study and its worker process, as a dead machine would.
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    storage = f"sqlite:///{(tmp_path / 'mlruns' / 'optuna.db')}"
    deadline = time.time() + 120
    running = False
    while time.time() < deadline and not running:
        time.sleep(1)
        try:
            trials = optuna.load_study(study_name="tiny", storage=storage).trials
            running = any(t.state.name == "RUNNING" and t.user_attrs.get("mlflow_run_id") for t in trials)
        except Exception:  # the study does not exist yet
            continue
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert running, "the worker never started a trial"
    left = optuna.load_study(study_name="tiny", storage=storage)
    assert optuna_engine.counted_trials(left) == 0  # a RUNNING trial of a dead worker is no result

    # Its heartbeat stopped with it: stale once the grace period has passed since the last.
    wait_for(lambda: stale_in_copy(tmp_path / "mlruns" / "optuna.db", "tiny", 0, grace_s=3),
             "the killed trial to be past the grace period")
    fast = subprocess.run([*command[:4], str(space_file), *command[5:]], env=env,
                          capture_output=True, text=True, timeout=300)
    assert fast.returncode == 0, fast.stderr[-2000:]
    final = optuna.load_study(study_name="tiny", storage=storage)
    states = [t.state.name for t in final.trials]
    assert states[0] == "FAIL" and states.count("COMPLETE") == 2
    retried = [t for t in final.trials if t.system_attrs.get("failed_trial") == 0]
    assert retried and retried[0].params == final.trials[0].params
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    killed = client.get_run(final.trials[0].user_attrs["mlflow_run_id"])
    assert killed.info.status == "KILLED"


@pytest.mark.parametrize("flag, value", [("--sampler", "annealing"), ("--pruner", "asha")])
def test_unknown_sampler_or_pruner(flag: str, value: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        study.main([flag, value])
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"invalid choice: '{value}'" in err and "Traceback" not in err
    with pytest.raises(study.ConfigError, match=f"--{flag[2:]} must be one of"):
        study.run(**{flag[2:]: value})


@pytest.mark.parametrize("flag, url", [
    ("--storage", "postgresql://allsearch:hunter2@127.0.0.1:1/optuna"),
    ("--tracking-uri", "http://allsearch:hunter2@127.0.0.1:1"),
])
def test_passwords_in_urls_are_never_printed(flag: str, url: str, tiny_data: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    code = study.main(["--trials", "1", "--space", "smoke", "--data", str(tiny_data),
                       "--no-progress", flag, url])
    line = one_line_error(capsys)
    assert code == 2 and "hunter2" not in line and "***" in line and "127.0.0.1:1" in line


def test_losing_the_schema_race_retries_other_errors_do_not(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers started together on an empty database race to create Optuna's tables; the
    losers retry. A real fault (here a refused login) is reported at once, not retried."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    real = optuna.storages.RDBStorage
    calls: list[int] = []

    def racing(*args, **kwargs):
        calls.append(1)
        if len(calls) <= 2:
            raise IntegrityError("INSERT INTO pg_type", {}, Exception(
                'duplicate key value violates unique constraint "pg_type_typname_nsp_index"'))
        return real(*args, **kwargs)

    monkeypatch.setattr(storage_mod.time, "sleep", lambda s: None)
    monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
    storage = storage_mod.open_storage(f"sqlite:///{tmp_path}/optuna.db")
    assert isinstance(storage, real) and len(calls) == 3

    calls.clear()

    def refused(*args, **kwargs):
        calls.append(1)
        raise OperationalError("connect", {}, Exception("password authentication failed"))

    monkeypatch.setattr(optuna.storages, "RDBStorage", refused)
    with pytest.raises(study.StoreError, match="password authentication failed"):
        storage_mod.open_storage("postgresql://u:pw@127.0.0.1:1/db")
    assert len(calls) == 1


def test_the_summary_names_why_trials_failed(tiny_data: Path, space_file: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture) -> None:
    """The closing summary says why trials failed (each reason once, with its count), not only
    the MLflow runs' `error` tags. A stand-in trainer (nothing trains) fails two of the four
    configurations, each for its own reason."""
    from allsearch.training import standin

    real = standin.stand_in

    def failing(seconds: float):
        run = real(seconds)

        def trainer(dataset, hparams, **kwargs):
            if hparams.batch_size == 16 and hparams.loss == "binary_crossentropy":
                raise ValueError("no memory left for batch 16\nsecond line never shown")
            if hparams.batch_size == 16:
                raise RuntimeError("the stand-in refuses batch 16")
            return run(dataset, hparams, **kwargs)

        return trainer

    monkeypatch.setattr(standin, "stand_in", failing)
    code = study.main(["--trials", "8", "--space", str(space_file), "--data", str(tiny_data),
                       "--trainer", "standin:0", "--no-progress", "--sampler", "random",
                       "--trials-per-process", "0", "--worker-memory-mb", "0",
                       "--retrain-duplicates"])
    out = capsys.readouterr().out
    assert code == 0, out
    loaded = optuna.load_study(study_name="tiny",
                               storage=f"sqlite:///{Path('mlruns/optuna.db').resolve()}")
    failed = [t.user_attrs["error"].splitlines()[0] for t in loaded.trials if t.state.name == "FAIL"]
    memory = failed.count("ValueError: no memory left for batch 16")
    refused = failed.count("RuntimeError: the stand-in refuses batch 16")
    assert memory and refused and memory + refused == len(failed), failed
    assert f"{len(failed)} failed" in out.splitlines()[0]
    assert f"\n  {memory} failed: ValueError: no memory left for batch 16\n" in out, out
    assert f"\n  {refused} failed: RuntimeError: the stand-in refuses batch 16\n" in out, out
    assert "second line" not in out and out.count("failed: ") == 2, out


def test_failures_without_a_reason_and_many_reasons_stay_short() -> None:
    """A trial failed by Ctrl-C or a dead worker has no error of its own; past five reasons,
    the rest are one line."""
    from optuna.trial import TrialState, create_trial

    from allsearch.engines.progress import failure_lines

    trials = [create_trial(state=TrialState.FAIL, user_attrs={"error": f"ValueError: case {i}"})
              for i in range(7) for _ in range(i + 1)]
    trials += [create_trial(state=TrialState.FAIL), create_trial(state=TrialState.FAIL)]
    assert failure_lines(trials) == [
        "  7 failed: ValueError: case 6", "  6 failed: ValueError: case 5",
        "  5 failed: ValueError: case 4", "  4 failed: ValueError: case 3",
        "  3 failed: ValueError: case 2",
        "  3 failed for 2 other reason(s); see the 'error' tag of their MLflow runs",
        "  2 failed without a recorded reason (interrupted, or their process stopped): not "
        "counted towards --trials"]
