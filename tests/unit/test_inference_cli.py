"""``edgeloop serve`` command line: config validation, rollback and listing the cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.inference.cli import main


def test_validate_config_and_errors_name_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--validate-config", "--mqtt-port", "1884", "--models", "a,b"]) == 0
    out = capsys.readouterr().out
    assert '"port": 1884' in out and '"a"' in out
    cfg = tmp_path / "c.toml"
    cfg.write_text("queue_max = 0\nnot_a_key = 1\n")
    assert main(["--validate-config", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "queue_max" in err and "not_a_key" in err
    cfg.write_text("[aalto]\nenabled = true\n")
    assert main(["--validate-config", "--config", str(cfg)]) == 2
    assert "aalto.model is required" in capsys.readouterr().err


def test_rollback_without_versions_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rollback", "tiny", "--model-dir", str(tmp_path)]) == 1
    assert "no earlier verified version" in capsys.readouterr().err
    assert main(["models", "--model-dir", str(tmp_path)]) == 0


def test_the_inference_service_never_imports_tensorflow() -> None:
    import subprocess
    import sys

    code = ("import sys, services.inference.service, services.inference.cli, "
            "services.inference.runtimes as r; r.create_runtime; "
            "print(any(m == 'tensorflow' or m.startswith('tensorflow.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "False"
