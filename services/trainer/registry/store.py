"""The registry's model store: a directory tree, versioned, content-addressed and signed.

Layout::

    <root>/<name>/<version>/bundle.tar   the bundle, with the registry's version in its card
    <root>/<name>/<version>/meta.json    sha256, signature, key id, size, state, card summary
    <root>/<name>/channel.json           current approved version + promotion history
    <root>/<name>/.lock                  flock: one writer per model at a time
    <root>/.keys/<key_id>.pub            public keys that signed something here

A version appears by renaming a fully written staging directory into place, so a crash
mid-publish leaves no half-made version (only a staging directory the next publish
removes). ``channel.json`` is the commit point for what is approved: a version's state is
``approved`` when it is in the history, ``retired`` when its meta says so, else
``candidate``. The ``state`` in meta.json mirrors that and is rewritten after the channel.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import ValidationError

from services.contract.card import ModelCard
from services.contract.topics import is_valid_id
from services.modelkit.bundle import CARD, MAX_BUNDLE_BYTES, BundleError, read_bundle, write_bundle
from services.modelkit.signing import (
    SigningError,
    key_id,
    load_private_key,
    load_public_key,
    sha256_file,
    sign_digest,
    verify_digest,
)
from services.trainer.registry.errors import (
    BadBundle,
    ModelNotFound,
    RegistryConflict,
    SigningUnavailable,
    TamperedBundle,
    TooLarge,
)
from services.trainer.registry.fsutil import atomic_write, file_lock, fsync_dir, fsync_file
from services.trainer.registry.models import (
    CardSummary,
    Channel,
    ModelState,
    ModelSummary,
    PublishedModel,
    VersionMeta,
)

log = logging.getLogger(__name__)

BUNDLE_FILE = "bundle.tar"
META_FILE = "meta.json"
CHANNEL_FILE = "channel.json"
LOCK_FILE = ".lock"
STAGING_PREFIX = ".staging-"
KEYS_DIR = ".keys"
UPLOADS_DIR = ".uploads"

#: (offset of the data in the tar, size) per member name
MemberIndex = dict[str, tuple[int, int]]


class RegistryStore:
    """Publish, list, promote, roll back and retire signed model bundles in ``root``.

    ``signing_key`` is the Ed25519 private key (PEM) that signs what is published; without
    one the store is read-only and ``publish`` raises :class:`SigningUnavailable`. A path
    that is given but missing or unreadable fails here, before anything is written.
    """

    def __init__(
        self,
        root: Path,
        signing_key: Path | None = None,
        *,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.root = root
        self._clock = clock
        self._private: Ed25519PrivateKey | None = None
        self.key_id: str | None = None
        if signing_key is not None:
            try:
                self._private = load_private_key(signing_key)
            except SigningError as exc:
                raise SigningUnavailable(str(exc)) from None
            self.key_id = key_id(self._private.public_key())
        root.mkdir(parents=True, exist_ok=True)
        self._index_lock = threading.Lock()
        self._indexes: dict[tuple[str, int, str], MemberIndex] = {}

    # ------------------------------------------------------------------ paths
    def _model_dir(self, name: str) -> Path:
        # Names come from URLs and uploads: only contract ids ever touch the file system.
        if not is_valid_id(name):
            raise ModelNotFound(f"no model {name!r}")
        return self.root / name

    def _version_dir(self, name: str, version: int) -> Path:
        return self._model_dir(name) / str(int(version))

    def bundle_path(self, name: str, version: int) -> Path:
        path = self._version_dir(name, version) / BUNDLE_FILE
        if not path.is_file():
            raise ModelNotFound(f"no version {version} of model {name!r}")
        return path

    @property
    def upload_dir(self) -> Path:
        """Where the HTTP API spools uploads: same file system, so no cross-device copies."""
        path = self.root / UPLOADS_DIR
        path.mkdir(exist_ok=True)
        return path

    @contextlib.contextmanager
    def locked(self, name: str) -> Iterator[None]:
        """Hold the model's write lock (also used to order its announcements)."""
        model_dir = self._model_dir(name)
        if not model_dir.is_dir():  # publish creates it; nothing else may
            raise ModelNotFound(f"no model {name!r}")
        with file_lock(model_dir / LOCK_FILE):
            yield

    def clean_uploads(self, max_age_s: float = 3600.0) -> int:
        """Remove upload spool files a crashed server left behind; returns how many."""
        cutoff = time.time() - max_age_s
        removed = 0
        for p in self.upload_dir.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if p.is_file() and p.stat().st_mtime < cutoff:
                    p.unlink()
                    removed += 1
        return removed

    # ------------------------------------------------------------------ reading
    def _version_numbers(self, name: str) -> list[int]:
        model_dir = self._model_dir(name)
        if not model_dir.is_dir():
            return []
        return sorted(
            int(p.name) for p in model_dir.iterdir()
            if p.name.isdigit() and (p / META_FILE).is_file()
        )

    def _read_meta(self, name: str, version: int) -> VersionMeta:
        path = self._version_dir(name, version) / META_FILE
        try:
            return VersionMeta.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise ModelNotFound(f"no version {version} of model {name!r}") from None

    def channel(self, name: str) -> Channel:
        if not self._version_numbers(name):
            raise ModelNotFound(f"no model {name!r}")
        path = self._model_dir(name) / CHANNEL_FILE
        try:
            return Channel.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return Channel(name=name)

    @staticmethod
    def _effective(meta: VersionMeta, channel: Channel) -> ModelState:
        if meta.state is ModelState.RETIRED:
            return ModelState.RETIRED
        if meta.version in channel.history:
            return ModelState.APPROVED
        return ModelState.CANDIDATE

    def meta(self, name: str, version: int) -> VersionMeta:
        """A version's metadata with its effective state."""
        meta = self._read_meta(name, version)
        state = self._effective(meta, self.channel(name))
        return meta if state is meta.state else meta.model_copy(update={"state": state})

    def versions(self, name: str) -> list[VersionMeta]:
        numbers = self._version_numbers(name)
        if not numbers:
            raise ModelNotFound(f"no model {name!r}")
        channel = self.channel(name)
        out = []
        for v in numbers:
            meta = self._read_meta(name, v)
            state = self._effective(meta, channel)
            out.append(meta if state is meta.state else meta.model_copy(update={"state": state}))
        return out

    def list_models(self) -> list[ModelSummary]:
        out = []
        for entry in sorted(self.root.iterdir()):
            if not entry.is_dir() or not is_valid_id(entry.name):
                continue
            numbers = self._version_numbers(entry.name)
            if not numbers:
                continue
            latest = self._read_meta(entry.name, numbers[-1])
            out.append(ModelSummary(
                name=entry.name, current=self.channel(entry.name).current,
                latest=numbers[-1], versions=len(numbers), task=latest.card.task,
            ))
        return out

    def current(self, name: str) -> VersionMeta | None:
        current = self.channel(name).current
        return None if current is None else self.meta(name, current)

    def resolve(self, name: str, version: int | None) -> int:
        """``version``, or the current approved one when None."""
        if version is not None:
            self._read_meta(name, version)
            return version
        current = self.channel(name).current
        if current is None:
            raise ModelNotFound(f"model {name!r} has no approved version")
        return current

    # ------------------------------------------------------------------ bundle contents
    def members(self, name: str, version: int) -> MemberIndex:
        """Files in a stored bundle, indexed once (bundles never change after publish)."""
        meta = self._read_meta(name, version)
        key = (name, version, meta.sha256)
        with self._index_lock:
            cached = self._indexes.get(key)
        if cached is not None:
            return cached
        index: MemberIndex = {}
        with tarfile.open(self.bundle_path(name, version), "r:") as tar:
            for m in tar.getmembers():
                if m.isfile():
                    index[m.name] = (m.offset_data, m.size)
        with self._index_lock:
            if len(self._indexes) > 256:
                self._indexes.clear()
            self._indexes[key] = index
        return index

    def read_member(self, name: str, version: int, member: str) -> bytes:
        entry = self.members(name, version).get(member)
        if entry is None:
            raise ModelNotFound(f"model {name!r} version {version} has no file {member!r}")
        offset, size = entry
        with self.bundle_path(name, version).open("rb") as f:
            f.seek(offset)
            return f.read(size)

    def card(self, name: str, version: int) -> ModelCard:
        return ModelCard.model_validate_json(self.read_member(name, version, CARD))

    # ------------------------------------------------------------------ integrity
    def _public_key_for(self, kid: str) -> Ed25519PublicKey:
        if self._private is not None and kid == self.key_id:
            return self._private.public_key()
        path = self.root / KEYS_DIR / f"{kid}.pub"
        try:
            return load_public_key(path)
        except SigningError:
            raise SigningUnavailable(
                f"no public key for key id {kid} (expected {path})"
            ) from None

    def _remember_public_key(self, private: Ed25519PrivateKey) -> None:
        keys = self.root / KEYS_DIR
        path = keys / f"{key_id(private.public_key())}.pub"
        if path.exists():
            return
        keys.mkdir(exist_ok=True)
        atomic_write(path, private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo,
        ))

    def verify(self, name: str, version: int) -> VersionMeta:
        """Re-hash the stored bundle and check its signature; raise TamperedBundle if not."""
        meta = self.meta(name, version)
        path = self.bundle_path(name, version)
        size = path.stat().st_size
        if size != meta.size_bytes:
            raise TamperedBundle(
                f"{name} v{version}: bundle is {size} bytes, meta.json says {meta.size_bytes}"
            )
        digest = sha256_file(path)
        if digest != meta.sha256:
            raise TamperedBundle(
                f"{name} v{version}: bundle sha256 {digest[:12]}… does not match "
                f"meta.json {meta.sha256[:12]}…"
            )
        try:
            verify_digest(self._public_key_for(meta.key_id), digest, meta.signature)
        except SigningError:
            raise TamperedBundle(f"{name} v{version}: signature does not verify") from None
        return meta

    # ------------------------------------------------------------------ writing
    def _require_key(self) -> Ed25519PrivateKey:
        if self._private is None:
            raise SigningUnavailable(
                "no signing key configured (signing_key / EDGELOOP_SIGNING_KEY); create one "
                "with `edgeloop registry keygen`"
            )
        return self._private

    def _write_channel(self, channel: Channel) -> None:
        atomic_write(
            self._model_dir(channel.name) / CHANNEL_FILE,
            channel.model_dump_json(by_alias=True, indent=2).encode(),
        )

    def _write_state(self, name: str, version: int, state: ModelState) -> None:
        meta = self._read_meta(name, version)
        if meta.state is not state:
            atomic_write(
                self._version_dir(name, version) / META_FILE,
                meta.model_copy(update={"state": state})
                .model_dump_json(by_alias=True, indent=2).encode(),
            )

    def _clean_staging(self, model_dir: Path) -> None:
        # Only called under the model's lock: any staging dir left is from a crashed publish.
        for p in model_dir.glob(STAGING_PREFIX + "*"):
            log.warning("removing %s left by an interrupted publish", p)
            shutil.rmtree(p, ignore_errors=True)

    def _approved_history(self, name: str, channel: Channel) -> list[int]:
        return [
            v for v in channel.history
            if self._read_meta(name, v).state is not ModelState.RETIRED
        ]

    def publish(self, bundle_path: Path, *, approve: bool = True) -> PublishedModel:
        """Store, sign and (when ``approve``) make current a bundle; return its version.

        Publishing the same file again returns the version it already made (and makes it
        current if ``approve``), so a retried upload does not create a twin.
        """
        private = self._require_key()
        size = bundle_path.stat().st_size
        if size > MAX_BUNDLE_BYTES:
            raise TooLarge(f"bundle of {size} bytes exceeds {MAX_BUNDLE_BYTES}")
        data = bundle_path.read_bytes()
        try:
            bundle = read_bundle(data)
        except (BundleError, ValidationError, UnicodeDecodeError) as exc:
            raise BadBundle(f"{bundle_path.name} is not a valid model bundle: {exc}") from None
        name = bundle.card.name
        source_sha = hashlib.sha256(data).hexdigest()
        model_dir = self._model_dir(name)
        model_dir.mkdir(parents=True, exist_ok=True)
        self._remember_public_key(private)
        with self.locked(name):
            self._clean_staging(model_dir)
            existing = self._find_duplicate(name, source_sha)
            if existing is not None:
                if approve and self.channel(name).current != existing.version:
                    self._promote_locked(name, existing.version)
                meta = self.meta(name, existing.version)
                log.info("publish %s: same bundle as v%d, nothing new stored",
                         name, meta.version)
                return self._published(meta, duplicate=True)
            numbers = self._version_numbers(name)
            version = (numbers[-1] if numbers else 0) + 1
            self._stage_version(model_dir, version, bundle.card, bundle.files, source_sha,
                                private)
            if approve:
                self._promote_locked(name, version)
            meta = self.meta(name, version)
        log.info("published %s v%d (%s, %d bytes, sha256 %s…, key %s)", name, version,
                 meta.state.value, meta.size_bytes, meta.sha256[:12], meta.key_id)
        return self._published(meta)

    def _stage_version(
        self, model_dir: Path, version: int, card: ModelCard, files: dict[str, bytes],
        source_sha: str, private: Ed25519PrivateKey,
    ) -> None:
        staging = model_dir / f"{STAGING_PREFIX}{secrets.token_hex(6)}"
        staging.mkdir()
        try:
            # The registry assigns the version, and writes it into the card it signs, so a
            # bundle on the edge says which version it is without its announcement.
            versioned = card.model_copy(update={"version": version})
            bundle_file = write_bundle(staging / BUNDLE_FILE, versioned, files)
            fsync_file(bundle_file)
            digest = sha256_file(bundle_file)
            meta = VersionMeta(
                name=card.name, version=version, sha256=digest,
                signature=sign_digest(private, digest), key_id=key_id(private.public_key()),
                size_bytes=bundle_file.stat().st_size, created=self._clock(),
                state=ModelState.CANDIDATE, source_sha256=source_sha,
                card=CardSummary.of(card),
                files={n: len(b) for n, b in sorted({CARD: versioned.to_json(), **files}.items())},
            )
            atomic_write(staging / META_FILE, meta.model_dump_json(by_alias=True, indent=2)
                         .encode())
            os.rename(staging, model_dir / str(version))
            fsync_dir(model_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _find_duplicate(self, name: str, source_sha: str) -> VersionMeta | None:
        for v in reversed(self._version_numbers(name)):
            meta = self._read_meta(name, v)
            if meta.state is ModelState.RETIRED:
                continue
            if source_sha in (meta.source_sha256, meta.sha256):
                return meta
        return None

    @staticmethod
    def _published(meta: VersionMeta, duplicate: bool = False) -> PublishedModel:
        return PublishedModel(
            name=meta.name, version=meta.version, sha256=meta.sha256,
            signature=meta.signature, key_id=meta.key_id, size_bytes=meta.size_bytes,
            state=meta.state, duplicate=duplicate,
        )

    def promote(self, name: str, version: int) -> VersionMeta:
        """Make ``version`` the current approved version (after re-verifying it)."""
        with self.locked(name):
            self._promote_locked(name, version)
            meta = self.meta(name, version)
        log.info("promoted %s v%d", name, version)
        return meta

    def _promote_locked(self, name: str, version: int) -> None:
        meta = self._read_meta(name, version)
        if meta.state is ModelState.RETIRED:
            raise RegistryConflict(f"{name} v{version} is retired and cannot be promoted")
        self.verify(name, version)
        channel = self.channel(name)
        history = [v for v in self._approved_history(name, channel) if v != version]
        history.append(version)
        self._write_channel(Channel(
            name=name, current=version, history=history, last_current=version,
            updated=self._clock(),
        ))
        self._write_state(name, version, ModelState.APPROVED)

    def rollback(self, name: str) -> VersionMeta:
        """Undo the last promotion: the previous approved version becomes current and the
        one rolled back becomes a candidate again. Returns the new current version."""
        with self.locked(name):
            channel = self.channel(name)
            history = self._approved_history(name, channel)
            if not history:
                raise RegistryConflict(f"model {name!r} has no approved version")
            if len(history) < 2:
                raise RegistryConflict(
                    f"model {name!r} has no earlier approved version to roll back to "
                    f"(only v{history[-1]})"
                )
            dropped = history.pop()
            target = history[-1]
            self.verify(name, target)
            self._write_channel(Channel(
                name=name, current=target, history=history, last_current=target,
                updated=self._clock(),
            ))
            self._write_state(name, dropped, ModelState.CANDIDATE)
            meta = self.meta(name, target)
        log.info("rolled back %s from v%d to v%d", name, dropped, target)
        return meta

    def retire(self, name: str, version: int) -> VersionMeta | None:
        """Retire ``version`` for good. If it was current, the previous approved version
        that still verifies becomes current. Returns the current version afterwards."""
        with self.locked(name):
            meta = self._read_meta(name, version)
            channel = self.channel(name)
            # meta first: if we crash before the channel, the retired state still wins.
            self._write_state(name, version, ModelState.RETIRED)
            history = self._approved_history(name, channel)
            while history and channel.current == version:
                try:
                    self.verify(name, history[-1])
                    break
                except TamperedBundle as exc:
                    log.error("not falling back to %s v%d: %s", name, history[-1], exc)
                    history.pop()
            current = history[-1] if history else None
            self._write_channel(Channel(
                name=name, current=current, history=history,
                last_current=current if current is not None
                else (channel.current if channel.current is not None else channel.last_current),
                updated=self._clock(),
            ))
            result = None if current is None else self.meta(name, current)
        log.info("retired %s v%d (was %s); current is now %s", name, version, meta.state.value,
                 "none" if current is None else f"v{current}")
        return result
