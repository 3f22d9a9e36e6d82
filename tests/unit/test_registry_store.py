"""The registry's store: versions, signatures, atomic publish, promote/rollback/retire."""

from __future__ import annotations

import multiprocessing
import multiprocessing.queues
import os
from pathlib import Path

import pytest

from services.contract import InputSpec, ModelTask
from services.contract.card import ModelCard, Pipeline
from services.modelkit.bundle import read_bundle, write_bundle
from services.modelkit.signing import generate_keypair, load_public_key, sha256_file, verify_digest
from services.modelkit.verify import VerificationError, VerifyFailure, verify_bundle
from services.trainer.registry.announce import build_announcement
from services.trainer.registry.errors import (
    BadBundle,
    ModelNotFound,
    RegistryConflict,
    SigningUnavailable,
    TamperedBundle,
)
from services.trainer.registry.models import ModelState
from services.trainer.registry.store import RegistryStore

BASE = "http://registry.test:8700"


def make_bundle(path: Path, name: str = "temp-forecast", payload: bytes = b"TFL3 fake model",
                report: bool = True) -> Path:
    """A real bundle around a small fake model: the registry never runs models."""
    card = ModelCard(
        name=name, task=ModelTask.FORECAST, created=1_700_000_000_000_000_000,
        input=InputSpec(fields=["temp"], window=10, shape=[1, 10], target="temp"),
        pipeline=Pipeline.WINDOW, output_shape=[1, 1], metrics={"rmse": 0.07},
    )
    files = {"model.tflite": payload}
    if report:
        files["report/index.md"] = b"# report\n![loss](loss.png)\n"
        files["report/loss.png"] = b"\x89PNG\r\n\x1a\n fake"
    return write_bundle(path, card, files)


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    pair = generate_keypair(tmp_path / "keys")
    return pair.private_path, pair.public_path


@pytest.fixture
def store(tmp_path: Path, keys: tuple[Path, Path]) -> RegistryStore:
    return RegistryStore(tmp_path / "registry", keys[0])


def publish_n(store: RegistryStore, tmp_path: Path, n: int, **kw: object) -> list[int]:
    out = []
    for i in range(n):
        b = make_bundle(tmp_path / f"b{i}.tar", payload=f"model {i}".encode())
        out.append(store.publish(b, **kw).version)  # type: ignore[arg-type]
    return out


def test_publish_assigns_versions_signs_and_writes_the_version_into_the_card(
    store: RegistryStore, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    assert publish_n(store, tmp_path, 3) == [1, 2, 3]
    path = store.bundle_path("temp-forecast", 2)
    assert path == store.root / "temp-forecast" / "2" / "bundle.tar"
    meta = store.meta("temp-forecast", 2)
    assert meta.sha256 == sha256_file(path)
    assert meta.size_bytes == path.stat().st_size
    verify_digest(load_public_key(keys[1]), meta.sha256, meta.signature)
    assert meta.key_id == store.key_id
    bundle = read_bundle(path.read_bytes())
    assert bundle.card.version == 2
    assert bundle.model_bytes == b"model 1"
    assert "report/loss.png" in bundle.files and meta.files["report/loss.png"] > 0
    assert store.card("temp-forecast", 2).version == 2
    channel = store.channel("temp-forecast")
    assert (channel.current, channel.history) == (3, [1, 2, 3])
    assert [m.state for m in store.versions("temp-forecast")] == [ModelState.APPROVED] * 3
    (summary,) = store.list_models()
    assert (summary.name, summary.current, summary.latest, summary.versions) == (
        "temp-forecast", 3, 3, 3)


def test_same_bundle_again_returns_the_stored_version(store: RegistryStore,
                                                      tmp_path: Path) -> None:
    b = make_bundle(tmp_path / "b.tar")
    first = store.publish(b, approve=False)
    assert first.state is ModelState.CANDIDATE and not first.duplicate
    again = store.publish(b)
    assert (again.version, again.duplicate, again.state) == (1, True, ModelState.APPROVED)
    # The registry's own copy (version already in the card) is recognised too.
    again = store.publish(store.bundle_path("temp-forecast", 1))
    assert (again.version, again.duplicate) == (1, True)
    assert len(store.versions("temp-forecast")) == 1


def test_candidate_promote_rollback_retire(store: RegistryStore, tmp_path: Path) -> None:
    name = "temp-forecast"
    publish_n(store, tmp_path, 2)
    v3 = store.publish(make_bundle(tmp_path / "c.tar", payload=b"cand"), approve=False)
    assert v3.state is ModelState.CANDIDATE
    assert store.channel(name).current == 2
    assert store.promote(name, 3).state is ModelState.APPROVED
    assert store.channel(name).history == [1, 2, 3]

    current = store.rollback(name)
    assert current.version == 2
    assert store.meta(name, 3).state is ModelState.CANDIDATE
    assert store.channel(name).history == [1, 2]

    # Retiring the current version falls back to the previous approved one.
    current2 = store.retire(name, 2)
    assert current2 is not None and current2.version == 1
    assert store.meta(name, 2).state is ModelState.RETIRED
    with pytest.raises(RegistryConflict, match="retired"):
        store.promote(name, 2)
    with pytest.raises(RegistryConflict, match="no earlier approved"):
        store.rollback(name)

    # Retiring a candidate changes nothing current.
    assert store.retire(name, 3) is not None
    assert store.channel(name).current == 1
    # Retiring the last approved one leaves nothing current: the edge is told to unload.
    assert store.retire(name, 1) is None
    channel = store.channel(name)
    assert (channel.current, channel.history, channel.last_current) == (None, [], 1)
    ann = build_announcement(store, name, BASE)
    assert ann is not None and ann.retired and ann.version == 1
    with pytest.raises(RegistryConflict, match="no approved"):
        store.rollback(name)
    with pytest.raises(ModelNotFound):
        store.resolve(name, None)


def test_announcement_follows_the_channel(store: RegistryStore, tmp_path: Path) -> None:
    store.publish(make_bundle(tmp_path / "a.tar"), approve=False)
    assert build_announcement(store, "temp-forecast", BASE) is None  # only a candidate
    store.promote("temp-forecast", 1)
    publish_n(store, tmp_path, 1)
    ann = build_announcement(store, "temp-forecast", BASE)
    assert ann is not None
    meta = store.meta("temp-forecast", 2)
    assert (ann.version, ann.sha256, ann.signature, ann.key_id, ann.size_bytes) == (
        2, meta.sha256, meta.signature, meta.key_id, meta.size_bytes)
    assert ann.url == f"{BASE}/v1/models/temp-forecast/versions/2/bundle"
    assert ann.input.fields == ["temp"] and ann.task is ModelTask.FORECAST and not ann.retired


def test_tampered_bundle_is_detected_by_the_store_and_the_edge(
    store: RegistryStore, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    name = "temp-forecast"
    publish_n(store, tmp_path, 2)
    ann = build_announcement(store, name, BASE)
    assert ann is not None
    public = load_public_key(keys[1])
    good = store.bundle_path(name, 2).read_bytes()
    assert verify_bundle(good, ann, public).card.version == 2

    # Flip one byte of the model inside v1's stored tar.
    path = store.bundle_path(name, 1)
    data = bytearray(path.read_bytes())
    data[data.index(b"model 0")] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(TamperedBundle, match="sha256"):
        store.verify(name, 1)
    # Neither a rollback nor a promote announces it.
    with pytest.raises(TamperedBundle):
        store.rollback(name)
    assert store.channel(name).current == 2
    # Retiring v2 cannot fall back to the tampered v1: nothing is left current.
    assert store.retire(name, 2) is None

    # The edge: same length, wrong bytes -> sha256; other failures each have a reason.
    tampered = bytearray(good)
    tampered[-600] ^= 0x01
    cases = {
        VerifyFailure.SHA256: (bytes(tampered), ann, public),
        VerifyFailure.SIZE: (good + b"x", ann, public),
        VerifyFailure.SIGNATURE: (good, ann.model_copy(
            update={"signature": ann.signature[::-1]}), public),
        VerifyFailure.KEY_ID: (good, ann, load_public_key(
            generate_keypair(tmp_path / "other").public_path)),
        VerifyFailure.MISMATCH: (good, ann.model_copy(update={"version": 7}), public),
    }
    for reason, (data_, ann_, key_) in cases.items():
        with pytest.raises(VerificationError) as err:
            verify_bundle(data_, ann_, key_)
        assert err.value.reason is reason, (reason, err.value)


def test_missing_or_absent_signing_key_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SigningUnavailable, match="missing; create one with"):
        RegistryStore(tmp_path / "r", tmp_path / "nope.key")
    readonly = RegistryStore(tmp_path / "r")
    with pytest.raises(SigningUnavailable, match="no signing key configured"):
        readonly.publish(make_bundle(tmp_path / "b.tar"))
    assert readonly.list_models() == []
    assert not (tmp_path / "r" / "temp-forecast").exists()


def test_bad_bundles_and_names_are_refused(store: RegistryStore, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(BadBundle):
        store.publish(garbage)
    assert store.list_models() == []
    for name in ("../etc", "a/b", ".keys", ""):
        with pytest.raises(ModelNotFound):
            store.versions(name)
    # Operations on unknown models leave no trace on disk.
    for op in (lambda: store.promote("nope", 1), lambda: store.rollback("nope"),
               lambda: store.retire("nope", 1)):
        with pytest.raises(ModelNotFound):
            op()
    assert not (store.root / "nope").exists()


def test_stale_upload_spool_files_are_removed(store: RegistryStore) -> None:
    old, fresh = store.upload_dir / "upload-1.tar", store.upload_dir / "upload-2.tar"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(old, (1, 1))
    assert store.clean_uploads() == 1
    assert not old.exists() and fresh.exists()


def test_a_crash_mid_publish_leaves_no_version(
    store: RegistryStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "temp-forecast"
    publish_n(store, tmp_path, 1)
    # What a power cut during staging leaves behind: a half-written staging directory.
    leftover = store.root / name / ".staging-deadbeef"
    leftover.mkdir()
    (leftover / "bundle.tar").write_bytes(b"half")
    assert [m.version for m in store.versions(name)] == [1]

    # A failure at the commit point (the rename) leaves nothing either.
    def fail(*_a: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "rename", fail)
    with pytest.raises(OSError, match="disk full"):
        store.publish(make_bundle(tmp_path / "x.tar", payload=b"x"))
    monkeypatch.undo()
    assert [m.version for m in store.versions(name)] == [1]
    assert store.channel(name).current == 1
    assert not list((store.root / name).glob(".staging-*"))  # the next publish cleaned up
    assert store.publish(make_bundle(tmp_path / "y.tar", payload=b"y")).version == 2


def _publish_many(
    root: str, key: str, worker: int, n: int, out: multiprocessing.queues.Queue[int]
) -> None:
    s = RegistryStore(Path(root), Path(key))
    for i in range(n):
        b = make_bundle(Path(root).parent / f"w{worker}-{i}.tar", payload=f"{worker}/{i}".encode())
        out.put(s.publish(b).version)


def test_concurrent_publishers_never_share_a_version(
    store: RegistryStore, tmp_path: Path, keys: tuple[Path, Path]
) -> None:
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.queues.Queue[int] = ctx.Queue()
    workers, each = 3, 4
    procs = [ctx.Process(target=_publish_many,
                         args=(str(store.root), str(keys[0]), w, each, out))
             for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    versions = sorted(out.get(timeout=5) for _ in range(workers * each))
    assert versions == list(range(1, workers * each + 1))
    metas = store.versions("temp-forecast")
    assert len({m.sha256 for m in metas}) == workers * each
    for m in metas:
        store.verify("temp-forecast", m.version)
    assert store.channel("temp-forecast").current in versions
    assert not [p for p in os.listdir(store.root / "temp-forecast") if p.startswith(".staging")]


def test_open_publisher_on_a_directory(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    from services.trainer.registry.publisher import open_publisher

    with pytest.raises(SigningUnavailable, match="missing"):
        open_publisher(str(tmp_path / "reg"), signing_key=tmp_path / "absent.key")
    unsigned = open_publisher(str(tmp_path / "reg"))
    with pytest.raises(SigningUnavailable, match="keygen"):
        unsigned.check()
    pub = open_publisher(str(tmp_path / "reg"), signing_key=keys[0])
    pub.check()
    assert pub.publish(make_bundle(tmp_path / "b.tar")).version == 1
    pub.close()
    assert RegistryStore(tmp_path / "reg").channel("temp-forecast").current == 1


def test_nothing_in_the_registry_imports_tensorflow() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import services.trainer.registry.cli, services.trainer.registry.server\n"
        "import services.trainer.registry.publisher, services.modelkit.verify\n"
        "bad = [m for m in ('tensorflow', 'keras', 'tflite_runtime') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
