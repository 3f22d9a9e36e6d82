"""The last N verified bundles per model on disk, so a Pi restarted without network
serves its last good model, and a rollback needs no download.

Layout under ``--model-dir``::

    <name>/v<version>.tar       the verified bundle, byte for byte
    <name>/v<version>.json      its announcement (sha256, signature, key id)
    <name>/current              the version to serve
    <name>/rejected             versions rolled back by an operator, one per line

Bundles are re-verified against the public key when loaded from here, so a file changed
on disk is refused like one changed in transit.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from services.contract.models import ModelAnnouncement
from services.contract.topics import is_valid_id


@dataclass(frozen=True, slots=True)
class CachedBundle:
    name: str
    version: int
    path: Path
    announcement: ModelAnnouncement

    def read(self) -> bytes:
        return self.path.read_bytes()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(path)


class BundleCache:
    def __init__(self, root: Path, keep: int = 3) -> None:
        self.root = root
        self.keep = max(1, keep)

    def _dir(self, name: str) -> Path:
        if not is_valid_id(name):
            raise ValueError(f"invalid model name {name!r}")
        return self.root / name

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and is_valid_id(p.name))

    def store(self, data: bytes, ann: ModelAnnouncement) -> CachedBundle:
        """Keep a verified bundle and make it current; prune to the newest ``keep``."""
        d = self._dir(ann.name)
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"v{ann.version}.tar"
        _atomic_write(path, data)
        _atomic_write(d / f"v{ann.version}.json", ann.to_json())
        self.set_current(ann.name, ann.version)
        current = ann.version
        for v in self.versions(ann.name)[: -self.keep]:
            if v != current:
                for suffix in (".tar", ".json"):
                    with contextlib.suppress(FileNotFoundError):
                        (d / f"v{v}{suffix}").unlink()
        return CachedBundle(ann.name, ann.version, path, ann)

    def versions(self, name: str) -> list[int]:
        d = self._dir(name)
        if not d.is_dir():
            return []
        out = []
        for p in d.glob("v*.tar"):
            with contextlib.suppress(ValueError):
                out.append(int(p.stem[1:]))
        return sorted(v for v in out if (d / f"v{v}.json").exists())

    def get(self, name: str, version: int) -> CachedBundle | None:
        d = self._dir(name)
        path, meta = d / f"v{version}.tar", d / f"v{version}.json"
        if not (path.exists() and meta.exists()):
            return None
        try:
            ann = ModelAnnouncement.model_validate_json(meta.read_bytes())
        except ValueError:
            return None
        return CachedBundle(name, version, path, ann)

    def current(self, name: str) -> int | None:
        try:
            return int((self._dir(name) / "current").read_text().strip())
        except (OSError, ValueError):
            return None

    def set_current(self, name: str, version: int) -> None:
        d = self._dir(name)
        d.mkdir(parents=True, exist_ok=True)
        _atomic_write(d / "current", f"{version}\n".encode())

    def rejected(self, name: str) -> set[int]:
        try:
            text = (self._dir(name) / "rejected").read_text()
        except OSError:
            return set()
        return {int(t) for t in text.split() if t.isdigit()}

    def rollback(self, name: str, to: int | None = None) -> int:
        """Mark the current version rejected and make an older kept one current.

        Returns the version now current. A rejected version is not taken again from an
        announcement; a newer one is.
        """
        current = self.current(name)
        older = [v for v in self.versions(name) if current is None or v < current]
        older = [v for v in older if v not in self.rejected(name)]
        target = to if to is not None else (older[-1] if older else None)
        if target is None or self.get(name, target) is None:
            kept = ", ".join(map(str, self.versions(name))) or "none"
            raise ValueError(f"no earlier verified version of {name} to roll back to "
                             f"(kept: {kept})")
        if current is not None and current != target:
            d = self._dir(name)
            bad = sorted(self.rejected(name) | {current})
            _atomic_write(d / "rejected", ("\n".join(map(str, bad)) + "\n").encode())
        self.set_current(name, target)
        return target
