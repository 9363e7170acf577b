"""Rules of the Optuna engine: the pruners a study can name (each is Optuna's, set up for epochs
as steps), and when a process makes way for a fresh one."""

from __future__ import annotations

import optuna
import pytest

from allsearch.core.config import PRUNERS
from allsearch.core.space import load_space
from allsearch.engines.samplers import make_pruner


@pytest.mark.parametrize("name", ["median", "hyperband", "successive_halving"])
def test_each_pruner_stops_a_trial_far_behind_the_others(name: str) -> None:
    space = load_space("paper")
    # A fixed name: Hyperband puts a trial in a bracket by hashing the study's name with the
    # trial's number, and a generated name would make the bracket a matter of chance.
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0),
                                pruner=make_pruner(name, space), study_name="pruners")
    # Ten trials that reach 0.9 at every epoch, then one stuck at 0.1.
    for _ in range(10):
        trial = study.ask()
        for epoch in range(space.max_epochs()):
            trial.report(0.9, epoch)
            trial.should_prune()  # as the Keras callback does: the rungs record it
        study.tell(trial, 0.9)
    laggard = study.ask()
    stopped_at = None
    for epoch in range(space.max_epochs()):
        laggard.report(0.1, epoch)
        if laggard.should_prune():
            stopped_at = epoch
            break
    assert stopped_at is not None and stopped_at < space.max_epochs() - 1


def test_no_pruner_never_stops_a_trial() -> None:
    assert isinstance(make_pruner("none", load_space("paper")), optuna.pruners.NopPruner)
    assert set(PRUNERS) == {"median", "hyperband", "successive_halving", "none"}


def test_a_process_retires_before_a_next_trial_would_pass_its_memory_limit(monkeypatch) -> None:
    """--worker-memory-mb is a bound: the process stops taking trials when the next one, growing
    as the last did, would pass it, not after it has."""
    from allsearch.core.config import StudyConfig
    from allsearch.engines import optuna_engine

    readings = iter([1000.0, 1100.0, 1200.0, 1300.0])  # resident MB after trials 1-4
    monkeypatch.setattr(optuna_engine, "resident_mb", lambda: next(readings))
    retire = optuna_engine.Retire(StudyConfig(worker_memory_mb=256))
    stopped: list[int] = []

    class Study:
        def stop(self) -> None:
            stopped.append(retire.done)

    for _ in range(3):
        retire(Study(), None)
    # After trial 3 the process is 200 MB past trial 1 and grew 100 MB a trial: a fourth
    # would reach 300 MB, past the 256 MB bound.
    assert stopped == [3]
