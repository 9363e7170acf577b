"""The package as it ships: the `allsearch` command lists and dispatches every command module,
and the wheel carries every module and every shipped search space.

Installing the wheel into a fresh environment and running a study from outside the checkout
is CI's `.ci/wheel-check` (a fresh virtual environment and a trained model: about 20 s), run
before this suite; here the wheel is only built and read.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from allsearch.__main__ import COMMANDS, main

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "allsearch"


def command_modules() -> set[str]:
    """Modules run as `python -m allsearch.X`: a main() and an `if __name__ == "__main__"`."""
    found = set()
    for path in [*PACKAGE.glob("*.py"), *PACKAGE.glob("*/__main__.py")]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        has_main = any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)
        guarded = any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body)
        if has_main and guarded and path != PACKAGE / "__main__.py":  # (allsearch's dispatcher)
            found.add(path.stem if path.parent == PACKAGE else path.parent.name)  # data/__main__
    return found


def test_every_command_module_is_an_allsearch_command() -> None:
    assert set(COMMANDS) == command_modules()


def test_help_lists_every_command_with_one_line(capsys: pytest.CaptureFixture) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, text in COMMANDS.items():
        assert f"  {name}  " in out and text in out and "\n" not in text


def test_unknown_or_missing_command_is_one_line_and_status_2(capsys: pytest.CaptureFixture) -> None:
    assert main(["studdy", "--trials", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown command 'studdy'")
    assert main([]) == 2
    assert "commands:" in capsys.readouterr().err


def test_the_first_word_picks_the_command(tiny_data: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", str(tiny_data), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert sorted(report["class_counts"]) == ["Benign", "Early", "Pre", "Pro"]


def test_python_dash_m_allsearch_is_the_same_command() -> None:
    done = subprocess.run([sys.executable, "-m", "allsearch", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and all(name in done.stdout for name in COMMANDS)


@pytest.mark.slow
def test_the_wheel_carries_every_module_and_space(tmp_path: Path) -> None:
    # Built from a copy of what the wheel is made of, as pip builds it (isolated, like
    # `pip install .`): a build/ folder left in the checkout cannot leak into it.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(PACKAGE, source / "allsearch", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                    str(tmp_path / "dist"), str(source)], check=True, timeout=300,
                   capture_output=True)
    [wheel] = (tmp_path / "dist").glob("allsearch-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names
                            if n.endswith(".dist-info/entry_points.txt"))
    modules = {f"allsearch/{p.name}" for p in PACKAGE.glob("*.py")}
    spaces = {f"allsearch/spaces/{p.name}" for p in (PACKAGE / "spaces").glob("*.yaml")}
    assert len(spaces) >= 10 and "allsearch/spaces/paper.yaml" in spaces
    assert modules | spaces <= names, sorted((modules | spaces) - names)
    # Nothing but the package and its metadata: no tests, docs or a second copy of the spaces.
    assert {n.split("/")[0] for n in names} == {"allsearch", wheel.name.split("-py3")[0] + ".dist-info"}
    assert "allsearch = allsearch.__main__:main" in entry_points
