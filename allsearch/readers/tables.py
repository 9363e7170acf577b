"""A results table rendered for people and programs: markdown, CSV, HTML, LaTeX, JSON.

Columns with a twin `<title> SD` show as mean ± sd (CSV and JSON keep both numbers); the
leaderboard, Table 1 and confirmations render through here.
"""

from __future__ import annotations

import json
from typing import Literal

import pandas as pd

from allsearch.core.space import HParams

__all__ = ["render", "markdown", "FORMATS", "Format", "SD"]

FORMATS = ("markdown", "csv", "html", "latex", "json")
Format = Literal["markdown", "csv", "html", "latex", "json"]
SD = " SD"  # the suffix of a column holding the sd of the column it extends


def render(table: pd.DataFrame, fmt: Format = "markdown", *, digits: int = 3) -> str:
    """CSV and JSON keep every number (sd in its own column); the others show mean ± sd."""
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt == "json":
        return json.dumps(json.loads(table.to_json(orient="records")), indent=2, ensure_ascii=False)
    shown = _display(table, digits)
    if fmt == "html":
        return shown.to_html(index=False, border=0, escape=True)
    if fmt == "latex":
        return shown.to_latex(index=False).replace("±", r"$\pm$").replace("Δ", r"$\Delta$")
    return markdown(shown)


def _display(table: pd.DataFrame, digits: int) -> pd.DataFrame:
    shown = table.copy()
    for title in [c for c in table.columns if c + SD in table.columns]:
        shown[title] = [_mean_sd(m, s, digits) for m, s in zip(shown[title], shown[title + SD], strict=True)]
        shown = shown.drop(columns=[title + SD])
    for column in shown.columns:
        if column in HParams.names() and shown[column].dtype.kind == "f":
            # A hyperparameter as it was set (a learning rate of 0.00022 is not "0.000").
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.4g}")
        elif shown[column].dtype.kind == "f":
            places = {"Epochs Run": 1, "Parameters": 0}.get(column, digits)  # a count: whole
            signed = column.startswith("Δ")
            shown[column] = shown[column].map(
                lambda v, p=places, sg=signed: "" if pd.isna(v) else (f"{v:+.{p}f}" if sg else f"{v:.{p}f}"))
    return shown


def _mean_sd(mean: float, sd: float, digits: int) -> str:
    if pd.isna(mean):
        return ""
    return f"{mean:.{digits}f}" if pd.isna(sd) else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def markdown(table: pd.DataFrame) -> str:
    """A table as GitHub markdown (no extra dependency such as tabulate)."""
    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    rows = ["| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |"
            for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *rows]) + "\n"
