"""Screenshots of the MLflow UI on a study, taken in headless Chromium.

    python docs/ui_screenshot.py [--study paper-segmented] [--top 20] [--out docs/]

Starts `python -m allsearch.ui` on the default store (mlruns/), picks the study's `--top`
complete trials by validation accuracy through the tracking REST API, and saves
  ui-compare.png    those trials compared: the paper's knobs against val/test accuracy
  ui-runs.png       the study's parent run with its child runs (one per trial)
  ui-artifacts.png  the best trial's artifacts (confusion matrix, curves, model, ...)
Needs Playwright (`pip install -e ".[docs]"`) and a Chromium binary (Debian: apt-get install
chromium; Playwright's own download works too).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from allsearch import ui  # noqa: E402

KNOBS = ["epochs", "batch_size", "loss", "conv_layers"]
METRICS = ["val_accuracy", "test_accuracy"]
# The MLflow 3 UI opens an assistant panel on first load; a screenshot has no use for it.
HIDE_ASSISTANT = ("localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
                  "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');")


def api(base: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base}/api/2.0/mlflow/{path}", data=data,
                                     headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(request, timeout=60).read())


def choose(page, index: int, names: list[str]) -> None:
    """Replace the chips of the compare view's index-th multi-select with `names`."""
    select = page.get_by_role("combobox").nth(index)
    select.click(force=True)
    for name in names:
        page.keyboard.type(name)
        page.wait_for_timeout(400)
        page.keyboard.press("Enter")
        page.wait_for_timeout(300)
    page.keyboard.press("Escape")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="paper-segmented")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--port", type=int, default=5055)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent))
    args = parser.parse_args()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sys.exit("error: needs Playwright: pip install playwright")
    browser_path = shutil.which("chromium") or shutil.which("google-chrome")
    out = Path(args.out)
    with ui.start_ui(port=args.port, dashboard=False) as servers, sync_playwright() as pw:
        base = servers.mlflow_url
        experiment = api(base, f"experiments/get-by-name?experiment_name={args.study}")["experiment"]
        exp_id = experiment["experiment_id"]
        runs = api(base, "runs/search", {
            "experiment_ids": [exp_id], "max_results": args.top,
            "filter": "tags.state = 'COMPLETE' and tags.`allsearch.role` != 'parent'",
            "order_by": ["metrics.val_accuracy DESC"]})["runs"]
        ids = [r["info"]["run_id"] for r in runs]
        browser = pw.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        context.add_init_script(HIDE_ASSISTANT)
        page = context.new_page()

        query = urllib.parse.urlencode({"runs": json.dumps(ids), "experiments": json.dumps([exp_id])})
        page.goto(f"{base}/#/compare-runs?{query}")
        page.wait_for_timeout(5000)
        while (chip := page.query_selector("[class*=selection-item-remove]")) is not None:
            chip.click()
            page.wait_for_timeout(200)
        choose(page, 0, KNOBS)
        choose(page, 1, METRICS)
        page.mouse.click(1500, 60)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(out / "ui-compare.png"))

        page.goto(f"{base}/#/experiments/{exp_id}/runs")
        page.wait_for_selector("text=matching runs", timeout=60000)
        page.wait_for_timeout(6000)
        parent = page.query_selector(f"[role=row]:has-text('{args.study}')")
        if parent is not None and parent.query_selector("button") is not None:
            parent.query_selector("button").click()  # unfold its child runs
            page.wait_for_timeout(3000)
        page.screenshot(path=str(out / "ui-runs.png"))

        page.goto(f"{base}/#/experiments/{exp_id}/runs/{ids[0]}/artifacts/confusion_matrix.png")
        page.wait_for_timeout(5000)
        page.screenshot(path=str(out / "ui-artifacts.png"))
        browser.close()
    for name in ("ui-compare.png", "ui-runs.png", "ui-artifacts.png"):
        print(f"wrote {out / name} ({(out / name).stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
