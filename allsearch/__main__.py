"""The `allsearch` command: `allsearch COMMAND [ARGS]` is `python -m allsearch.COMMAND [ARGS]`.

Thin by design: the first word picks a command module and its main(argv) does everything else
(its own --help, errors and exit status). `allsearch --help` lists the commands. Installed as a
console script (pyproject.toml, [project.scripts]); `python -m allsearch COMMAND` works too.
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["COMMANDS", "main", "usage"]

# name -> what it does (one line); the module is allsearch.<name> (a package's: its
# __main__), with main(argv) -> int.
COMMANDS: dict[str, str] = {
    "study": "run or resume a study (`allsearch study import DIR` replays a --record folder)",
    "confirm": "re-train a study's best configurations on fresh seeds and splits",
    "leaderboard": "a study's trials ranked beside the paper's Table 1",
    "predict": "classify images with a study's champion model",
    "table1": "the paper's Table 1 over seeds, beside the paper's numbers",
    "data": "what the pipeline sees in a folder of class folders; --bundle packs it",
    "ui": "MLflow's UI on the local store (and optuna-dashboard when installed)",
    "proxy": "Optuna's gRPC storage proxy, for workers on many machines",
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()]
    return ("usage: allsearch COMMAND [ARGS]   (the same as python -m allsearch.COMMAND [ARGS])\n\n"
            "Hyperparameter search for small medical-imaging CNNs, tracked in MLflow.\n\n"
            "commands:\n" + "\n".join(lines) +
            "\n\n`allsearch COMMAND --help` describes a command's options.")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        print(usage(), file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        import allsearch

        print(f"allsearch {allsearch.__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command '{name}'; the commands are {', '.join(COMMANDS)} "
              f"(allsearch --help)", file=sys.stderr)
        return 2
    module = importlib.import_module(f"allsearch.{name}")
    if hasattr(module, "__path__"):  # a package's command is its __main__ (allsearch.data)
        module = importlib.import_module(f"allsearch.{name}.__main__")
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
