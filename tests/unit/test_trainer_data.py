"""Trainer data handling without TensorFlow: loading, windows, splits, gate, metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from services.common.config import ConfigError, load_config
from services.trainer.config import ModelSpec, TrainerSettings
from services.trainer.datasets import (
    load_csv,
    load_edge_impulse,
    parse_source,
    parse_time,
    split_gaps,
)
from services.trainer.errors import DataError
from services.trainer.evaluate import classification, regression
from services.trainer.gate import baseline_gate
from services.trainer.stats import field_range
from services.trainer.windowing import (
    fixed_windows,
    grouped_folds,
    grouped_split,
    lookback_windows,
    time_split,
)
from tests.conftest import DATASETS

WORKSHOP = DATASETS / "aiot-workshop" / "aiot_workshop_data.csv"
FREE_FALL = DATASETS / "free-fall"


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n")
    return path


def test_workshop_csv_is_cut_at_its_gaps_and_no_window_crosses_one() -> None:
    series = load_csv(WORKSHOP, ["temp"])
    assert series.samples == 17214
    assert series.interval_s == 3.0
    # The recording has a 46 h hole and a 6 h one (and a few ~2 min ones).
    assert series.gaps >= 2
    lb = lookback_windows(series, ["temp"], "temp", 10, 1)
    # Windows are cut inside segments only (window + target = 11 consecutive samples), and
    # no segment holds a step longer than the gap threshold.
    assert len(lb) == sum(max(0, len(s) - 10) for s in series.segments)
    assert np.all(np.diff(lb.t) >= 0)  # ordered by time: splits are time-ordered
    longest_step = max(float(np.diff(s.ts).max()) for s in series.segments if len(s) > 1)
    assert longest_step <= 10 * series.interval_s
    assert max(float(np.diff(load_csv(WORKSHOP, ["temp"], gap_factor=1e9).segments[0].ts)
                     .max()), 0.0) > 46 * 3600  # the gap the segments avoid is really there
    # persistence target alignment: `last` is the window's final target value
    np.testing.assert_array_equal(lb.last, lb.x[:, -1, 0])


def test_missing_column_nan_and_empty_csv_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing column\(s\) \['nope'\]"):
        load_csv(WORKSHOP, ["nope"])
    nan = write_csv(tmp_path / "nan.csv", ["time,temp", "1,20.0", "4,NaN", "7,20.5"])
    with pytest.raises(DataError, match=r"'temp' has 1 NaN.*line 3"):
        load_csv(nan, ["temp"])
    empty = write_csv(tmp_path / "empty.csv", [])
    with pytest.raises(DataError, match="empty"):
        load_csv(empty, ["temp"])
    text = write_csv(tmp_path / "text.csv", ["time,temp", "1,warm"])
    with pytest.raises(DataError, match="non-number"):
        load_csv(text, ["temp"])
    with pytest.raises(DataError, match="does not exist"):
        load_csv(tmp_path / "none.csv", ["temp"])


def test_window_longer_than_the_data_and_too_short_ranges(tmp_path: Path) -> None:
    rows = ["time,temp"] + [f"{i * 3},{20 + (i % 3) * 0.0625}" for i in range(30)]
    series = load_csv(write_csv(tmp_path / "short.csv", rows), ["temp"])
    with pytest.raises(DataError, match="longer than the data"):
        lookback_windows(series, ["temp"], "temp", 40, 1)
    lb = lookback_windows(series, ["temp"], "temp", 10, 1)
    with pytest.raises(DataError, match="too little data"):
        time_split(len(lb), 0.2, 0.1)


def test_time_split_is_ordered_and_disjoint() -> None:
    s = time_split(1000, 0.2, 0.1)
    assert s.train.max() < s.val.min() <= s.val.max() < s.test.min()
    assert len(s.test) == 200 and len(s.val) == 80 and len(s.train) == 720


def test_unsorted_times_are_sorted_and_backwards_steps_cut() -> None:
    ts = np.array([0.0, 3.0, 6.0, 200.0, 203.0, 206.0])
    series = split_gaps("d", ts[::-1].copy(), {"v": np.arange(6.0)}, source="x",
                        gap_factor=10)
    assert [len(s) for s in series.segments] == [3, 3]


def test_edge_impulse_recordings_and_grouped_splits() -> None:
    data = load_edge_impulse(FREE_FALL)
    assert data.axes == ["accX", "accY", "accZ"]
    assert data.interval_ms == 16
    assert len(data.recordings) == 95
    assert {r.label for r in data.recordings} == {"freefall", "idle", "unknown"}
    w = fixed_windows(data, 62, 16)
    train, test = grouped_split(w, 0.2, seed=0)
    assert set(w.group[train]).isdisjoint(set(w.group[test]))
    assert set(w.label[test]) == {0, 1, 2}
    folds = grouped_folds(w, 5, seed=0)
    used = folds[np.unique(w.group)]
    assert set(used.tolist()) == set(range(5))
    # every window of a recording sits in its recording's fold
    for g in np.unique(w.group):
        assert len({int(folds[g])}) == 1


def test_single_class_and_short_recordings_are_refused(tmp_path: Path) -> None:
    for i in range(3):
        payload = {"payload": {"interval_ms": 16, "sensors": [{"name": "accX"}],
                               "values": [[0.1 * j] for j in range(100)]}}
        (tmp_path / f"idle.{i}.json").write_text(json.dumps(payload))
    data = load_edge_impulse(tmp_path)
    with pytest.raises(DataError, match="at least two classes"):
        fixed_windows(data, 62, 16)
    with pytest.raises(DataError, match="longer than every recording"):
        fixed_windows(data, 500, 16)
    (tmp_path / "bad.0.json").write_text("{}")
    with pytest.raises(DataError, match="not an Edge Impulse"):
        load_edge_impulse(tmp_path)


def test_baseline_gate_refuses_a_weak_model() -> None:
    ok = baseline_gate("ar", 0.0700, 0.0698, 0.05)
    assert ok.passed and ok.limit == pytest.approx(0.0698 * 1.05)
    weak = baseline_gate("mlp", 0.0812 * 2, 0.0698, 0.05)
    assert not weak.passed
    assert "REFUSED" in weak.describe()
    assert not baseline_gate("nan", float("nan"), 0.0698, 0.05).passed
    with pytest.raises(ValueError):
        baseline_gate("x", 0.1, 0.1, -0.1)


def test_metrics_on_a_hand_checked_example() -> None:
    r = regression([1.0, 2.0, 3.0], [1.0, 2.0, 5.0])
    assert r["mae"] == pytest.approx(2 / 3)
    assert r["rmse"] == pytest.approx(np.sqrt(4 / 3))
    c = classification([0, 0, 1, 2], [0, 1, 1, 2], ["a", "b", "c"])
    assert c["accuracy"] == 0.75
    assert c["confusion"] == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert c["per_class"]["b"]["precision"] == 0.5
    assert c["per_class"]["a"]["recall"] == 0.5
    assert c["per_class"]["c"]["f1"] == 1.0


def test_field_range_reports_the_sensor_step() -> None:
    rng = field_range(np.array([20.0, 20.0625, 20.125, 20.0625, 21.0]))
    assert rng.step == pytest.approx(0.0625)
    assert rng.min == 20.0 and rng.max == 21.0
    assert rng.p01 is not None and rng.p99 is not None


def test_sources_and_times_parse() -> None:
    assert parse_source("csv:a.csv") == ("csv", "a.csv")
    assert parse_source("ei:dir") == ("ei", "dir")
    assert parse_source("sqlite:///x.db") == ("storage", "sqlite:///x.db")
    with pytest.raises(DataError):
        parse_source("a.csv")
    assert parse_time("2019-11-08T00:00:00Z") == 1573171200 * 10**9
    assert parse_time("5") == 5
    with pytest.raises(DataError):
        parse_time("yesterday")


def test_config_rejects_models_without_what_they_need(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="target"):
        load_config(TrainerSettings, overrides={"models": [{"task": "forecast",
                                                            "source": "csv:x"}]}, env={})
    cfg = tmp_path / "models.toml"
    cfg.write_text('out = "o"\n[[models]]\ntask = "classify"\nsource = "ei:d"\n'
                   '[[models]]\ntask = "forecast"\nsource = "csv:x"\ntarget = "temp"\n'
                   'colour = "red"\n')
    with pytest.raises(ConfigError, match="colour"):
        load_config(TrainerSettings, file=cfg, env={})
    spec = ModelSpec(task="regress", source="csv:x", target="humidity",  # type: ignore[arg-type]
                     fields=["temp"])
    assert spec.model_name == "humidity-regress"
