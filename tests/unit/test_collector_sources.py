"""Recordings (CSV, Edge Impulse JSON), config validation, command lines, CLI checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.collector.cli import main
from services.collector.commands import CommandError, serial_line
from services.collector.config import CollectorConfig, InjectionKind, parse_injection
from services.collector.parsers import ParseError
from services.collector.replay import RecordingError, load_csv, load_recording
from services.common.config import ConfigError, load_config
from services.contract.models import Command, CommandName

REPO = Path(__file__).resolve().parents[2]
WORKSHOP = REPO / "data" / "aiot-workshop" / "aiot_workshop_data.csv"
FREE_FALL = REPO / "data" / "free-fall"


def test_workshop_csv_loads_with_recorded_times() -> None:
    rec = load_csv(WORKSHOP)
    data_lines = [ln for ln in WORKSHOP.read_text().splitlines()[1:] if ln.strip()]
    assert len(rec.rows) == len(data_lines) > 17_000
    assert rec.times_ns is not None
    assert rec.times_ns[0] == 1573194378 * 10**9
    assert set(rec.rows[0][0]) == {"temp", "humidity", "pressure"}
    assert rec.errors == {}


def test_csv_bad_rows_are_counted(tmp_path: Path) -> None:
    f = tmp_path / "x.csv"
    f.write_text("ts,a,b\n1000,1,2\n1001,1\n1002,x,2\n1003,nan,1\nnope,1,2\n1004,3,4\n")
    rec = load_csv(f)
    assert [r[0] for r in rec.rows] == [{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 4.0}]
    assert rec.times_ns == [1000 * 10**9, 1004 * 10**9]
    assert rec.errors == {
        ParseError.PARTIAL: 2,  # the short row, and "x,2" (a torn number)
        ParseError.NON_FINITE: 1,
        ParseError.MALFORMED: 1,  # the time "nope"
    }
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(RecordingError):
        load_csv(empty)


def test_edge_impulse_directory_plays_in_time_order() -> None:
    rec = load_recording(FREE_FALL / "training")
    assert rec.times_ns is not None
    assert set(rec.rows[0][0]) == {"accX", "accY", "accZ"}
    assert all(b > a for a, b in zip(rec.times_ns, rec.times_ns[1:], strict=False))
    files = list((FREE_FALL / "training").glob("*.json"))
    total = sum(len(json.loads(f.read_text())["payload"]["values"]) for f in files)
    assert len(rec.rows) == total
    one = load_recording(files[0])
    assert one.times_ns is not None and one.times_ns[1] - one.times_ns[0] == 16_000_000


def test_config_requires_source_settings() -> None:
    with pytest.raises(ConfigError, match="serial_port is required"):
        load_config(CollectorConfig, env={}, overrides={"device": "d", "source": "serial"})
    with pytest.raises(ConfigError, match="csv is required"):
        load_config(CollectorConfig, env={}, overrides={"device": "d", "source": "replay"})
    with pytest.raises(ConfigError, match="device"):
        load_config(CollectorConfig, env={}, overrides={"device": "bad id"})
    with pytest.raises(ConfigError, match="inject"):
        load_config(CollectorConfig, env={}, overrides={"device": "d", "inject": ("smoke@3",)})
    with pytest.raises(ConfigError, match="fire needs profile=climate"):
        load_config(CollectorConfig, env={},
                    overrides={"device": "d", "profile": "accel", "inject": ("fire@3",)})
    cfg = load_config(CollectorConfig, env={"EDGELOOP_MQTT__PORT": "1999"},
                      overrides={"device": "d", "inject": ("fire@60",)})
    assert cfg.client_id == "collector-default-d"
    assert cfg.mqtt.port == 1999
    assert cfg.injections[0].kind is InjectionKind.FIRE
    assert parse_injection("stuck@1.5").at_s == 1.5


def test_validate_config_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--validate-config", "--device", "d1", "--source", "replay",
                 "--csv", str(WORKSHOP), "--speed", "0"]) == 0
    assert '"device": "d1"' in capsys.readouterr().out
    assert main(["--validate-config", "--source", "serial", "--device", "d1"]) == 2


def _cmd(name: CommandName, **args: str | int | float) -> Command:
    return Command(id="c1", device="d", site="s", command=name, args=args)


def test_commands_become_serial_lines() -> None:
    assert serial_line(_cmd(CommandName.PING)) == "PING"
    assert serial_line(_cmd(CommandName.INFO)) == "INFO"
    assert serial_line(_cmd(CommandName.RATE, ms=250)) == "RATE 250"
    assert serial_line(_cmd(CommandName.MODE, mode="filter")) == "MODE filter"
    assert serial_line(_cmd(CommandName.FAULT, kind="stuck", field="temp")) == "FAULT stuck temp"
    with pytest.raises(CommandError):
        serial_line(_cmd(CommandName.MODE, mode="all\nRATE 1"))
    with pytest.raises(CommandError):
        serial_line(_cmd(CommandName.FAULT, kind="x y"))
    with pytest.raises(CommandError):
        serial_line(_cmd(CommandName.RATE, ms=0))
    with pytest.raises(CommandError):
        serial_line(_cmd(CommandName.UPDATE_MODEL))
