"""``make demo`` on this machine, short: the summary says the whole loop happened.

This is the first-run path: the demo installs its own venv profile, uses Mosquitto when it
is installed (it is, in CI), SQLite storage and a local registry, trains from storage in a
child process, and writes demo-report/ with its plots.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_make_demo_short_run(tmp_path: Path) -> None:
    out, work = tmp_path / "report", tmp_path / "work"
    args = f"--duration 5 --requests 50 --out {out} --workdir {work}"
    proc = subprocess.run(
        ["make", "demo", f"DEMO_ARGS={args}"], cwd=REPO, capture_output=True, text=True,
        timeout=900, env={**os.environ, "TERM": "dumb"},
    )
    print(proc.stdout[-6000:])
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    checks = summary["checks"]
    assert checks == {name: True for name in checks}, checks
    # Nothing lost, and the counts are real: every device published and stored readings.
    assert summary["lost"] == 0
    for device in summary["devices"]:
        assert device["published"] > 0
        assert device["stored"] >= device["published"], device
    models = {m["name"]: m for m in summary["models"]}
    assert models["temp-forecast"]["published"] and models["temp-forecast"]["loaded"]
    assert models["motion-classifier"]["loaded"]
    fire = [a for a in summary["alerts"] if a["kind"] == "forecast_deviation"]
    assert fire and fire[0]["device"] == "temp-2"
    assert any(e["label"] == "freefall" and e["truth"] == "freefall" for e in summary["events"])
    html = (out / "index.html").read_text()
    for image in summary["images"].values():
        path = out / image
        assert path.stat().st_size > 5_000, f"{image} is empty"
        assert image in html
    assert any(p.name.endswith("confusion.png") or "confusion" in p.name
               for p in out.glob("*.png")), sorted(p.name for p in out.glob("*.png"))
