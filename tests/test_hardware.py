"""Precision selection: 'auto' follows the CPU's native bf16, and the choice is recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from allsearch import hardware
from allsearch.errors import ConfigError


def test_auto_is_bf16_only_with_native_support(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "bf16_support", lambda: "avx512_bf16")
    assert hardware.resolve_precision("auto") == ("bfloat16", "auto: the CPU has avx512_bf16")
    monkeypatch.setattr(hardware, "bf16_support", lambda: "")
    assert hardware.resolve_precision("auto")[0] == "float32"
    assert hardware.resolve_precision("bfloat16") == ("bfloat16", "asked for")
    with pytest.raises(ConfigError, match="--precision must be one of"):
        hardware.resolve_precision("fp16")


def test_bf16_support_reads_cpu_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 amx_bf16\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: real_open(
        cpuinfo if path == "/proc/cpuinfo" else path, *a, **k))
    assert hardware.bf16_support() == "amx_bf16 avx512_bf16"
    cpuinfo.write_text("flags\t\t: fpu sse2 avx2\n")
    assert hardware.bf16_support() == ""


def test_study_records_the_resolved_precision(tiny_data: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    from allsearch import study
    from allsearch.tracking import Tracker

    monkeypatch.setattr(hardware, "bf16_support", lambda: "")
    done = study.run(trials=1, space="smoke", data=str(tiny_data), study_name="precision",
                     pruner="none", log_models="none", progress=False)
    tracker = Tracker("precision")
    parent = tracker.client.get_run(done.user_attrs["mlflow_parent_run_id"])
    assert parent.data.params["precision"] == "float32"
    assert parent.data.params["precision_reason"] == "auto: the CPU has no native bf16"
    child = tracker.client.get_run(done.trials[0].user_attrs["mlflow_run_id"])
    assert child.data.params["precision"] == "float32"
