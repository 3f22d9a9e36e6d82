"""A model bundle: one deterministic, uncompressed tar with the model and its card.

Contents: ``card.json`` (a :class:`services.contract.card.ModelCard`), the file the card
names in ``model_file`` (usually the int8 ``model.tflite``) and any extra files (the float
model, the C export, the report). One file means one sha256 and one signature cover the
model and the card that says how to run it.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from services.contract.card import ModelCard

CARD = "card.json"
#: Bundles are small; anything bigger is refused before extraction.
MAX_BUNDLE_BYTES = 64 * 1024 * 1024


class BundleError(ValueError):
    pass


def write_bundle(path: Path, card: ModelCard, files: dict[str, bytes]) -> Path:
    """Write a bundle. ``files`` maps names to contents and must include the model file."""
    if card.model_file not in files:
        raise BundleError(f"bundle is missing the model file {card.model_file!r}")
    entries = {CARD: card.to_json(), **files}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(entries):
            _check_name(name)
            data = entries[name]
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0  # deterministic: the same inputs give the same sha256
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(path)
    return path


def _check_name(name: str) -> None:
    # Relative POSIX paths only: the report (``report/...``) and the C export (``c/...``)
    # live in folders, but nothing may escape the bundle or alias another entry.
    p = PurePosixPath(name)
    if (
        not name or p.is_absolute() or "\\" in name or str(p) != name
        or any(part in {"", ".", ".."} for part in p.parts)
    ):
        raise BundleError(f"unsafe name in bundle: {name!r}")


@dataclass(frozen=True)
class Bundle:
    card: ModelCard
    files: dict[str, bytes]

    @property
    def model_bytes(self) -> bytes:
        return self.files[self.card.model_file]


def read_bundle(data: bytes) -> Bundle:
    """Parse a bundle from bytes (verify its signature first)."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError(f"bundle of {len(data)} bytes exceeds {MAX_BUNDLE_BYTES}")
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar.getmembers():
                if not member.isfile():
                    raise BundleError(f"unexpected entry {member.name!r} in bundle")
                _check_name(member.name)
                f = tar.extractfile(member)
                if f is None:
                    raise BundleError(f"cannot read {member.name!r}")
                files[member.name] = f.read()
    except tarfile.TarError as exc:
        raise BundleError(f"not a model bundle: {exc}") from None
    if CARD not in files:
        raise BundleError("bundle has no card.json")
    card = ModelCard.model_validate_json(files.pop(CARD))
    if card.model_file not in files:
        raise BundleError(f"bundle is missing its model file {card.model_file!r}")
    return Bundle(card, files)
