"""Regenerate firmware/models/factory_model.{h,c}: the model a device runs before its
first update (slot A on an erased flash).

``python firmware/tools/make_factory_model.py`` trains the workshop forecaster
(TensorFlow in a child process, seed 7) and writes the C export with the symbol
``factory_model``. Commit the result: the firmware build does not need TensorFlow.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from services.device.devmodels import load, train  # noqa: E402


def main() -> int:
    trained = train("fc-a", seed=7)
    factory = load("temp-forecast", trained.directory)
    exp = factory.export(REPO / "firmware" / "models", symbol="factory_model")
    print(f"factory model {factory.name}: {len(exp.blob)} bytes, hash {exp.blob_crc32:08x}, "
          f"expected outputs from {exp.reference}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
