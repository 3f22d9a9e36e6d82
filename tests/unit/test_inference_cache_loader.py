"""Verified loading (every refusal has its reason) and the on-disk bundle cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.inference.cache import BundleCache
from services.inference.loader import LoadError, LoadFailure, load, verify
from services.inference.runtimes import RuntimeKind
from services.modelkit.signing import load_public_key
from tests.support import tiny_models as tm


@pytest.fixture(scope="module")
def tiny() -> tm.TinyModels:
    return tm.build()


def test_verify_and_load_refuse_with_reasons(tiny: tm.TinyModels, tmp_path: Path) -> None:
    keys = tm.keypair(tmp_path / "k")
    pub = load_public_key(keys.public_path)
    b = tm.signed_bundle(tiny, tm.FORECAST, 2, keys, tmp_path)
    data = b.path.read_bytes()
    ann = b.announcement("http://x/b.tar")
    model = load(verify(data, ann, pub), ann.sha256, ann.version, [RuntimeKind.LITERT])
    assert (model.name, model.version, model.runtime.kind) == (tm.FORECAST, 2,
                                                               RuntimeKind.LITERT)

    def reason(data: bytes, **update: object) -> LoadFailure:
        with pytest.raises(LoadError) as err:
            verify(data, ann.model_copy(update=update), pub)
        return err.value.reason

    flipped = bytearray(data)
    flipped[100] ^= 1
    assert reason(bytes(flipped)) is LoadFailure.SHA256
    assert reason(data + b"x") is LoadFailure.SIZE
    assert reason(data, key_id="0" * 16) is LoadFailure.KEY_ID
    other = tm.signed_bundle(tiny, tm.FORECAST, 2, tm.keypair(tmp_path / "o"), tmp_path / "o")
    assert reason(data, signature=other.signature) is LoadFailure.SIGNATURE
    assert reason(data, name="another-model") is LoadFailure.MISMATCH
    # Unsigned garbage that matches its own announcement is still not a bundle.
    garbage = tm.signed_bundle(tiny, tm.FORECAST, 2, keys, tmp_path / "g")
    garbage.path.write_bytes(b"\0" * 1024)
    import hashlib

    from services.modelkit.signing import load_private_key, sign_digest

    digest = hashlib.sha256(b"\0" * 1024).hexdigest()
    sig = sign_digest(load_private_key(keys.private_path), digest)
    with pytest.raises(LoadError) as err:
        verify(b"\0" * 1024, ann.model_copy(update={"sha256": digest, "signature": sig,
                                                   "size_bytes": 1024}), pub)
    assert err.value.reason is LoadFailure.BUNDLE
    # Test vectors the model does not meet.
    bad = tm.signed_bundle(tiny, tm.FORECAST, 3, keys, tmp_path / "tv", card_update={
        "test_vectors": [b.card.test_vectors[0].model_copy(update={"output": [0.0]})]})
    bad_ann = bad.announcement("u")
    with pytest.raises(LoadError) as err:
        load(verify(bad.path.read_bytes(), bad_ann, pub), bad_ann.sha256, 3,
             [RuntimeKind.LITERT])
    assert err.value.reason is LoadFailure.TEST_VECTORS
    assert "test vector 0" in err.value.detail


def test_cache_keeps_n_and_rolls_back(tiny: tm.TinyModels, tmp_path: Path) -> None:
    keys = tm.keypair(tmp_path / "k")
    cache = BundleCache(tmp_path / "cache", keep=2)
    with pytest.raises(ValueError, match="no earlier"):
        cache.rollback(tm.FORECAST)
    for v in (1, 2, 3):
        b = tm.signed_bundle(tiny, tm.FORECAST, v, keys, tmp_path / "b")
        cache.store(b.path.read_bytes(), b.announcement("u"))
    assert cache.versions(tm.FORECAST) == [2, 3]
    assert cache.current(tm.FORECAST) == 3
    assert cache.rollback(tm.FORECAST) == 2
    assert cache.current(tm.FORECAST) == 2 and cache.rejected(tm.FORECAST) == {3}
    with pytest.raises(ValueError):
        cache.rollback(tm.FORECAST)  # v1 was pruned: nothing older is kept
    got = cache.get(tm.FORECAST, 2)
    assert got is not None and got.announcement.version == 2
    with pytest.raises(ValueError):
        cache.store(b"", b.announcement("u").model_copy(update={"name": "../evil"}))


def test_local_bundles_need_their_signed_announcement(tiny: tm.TinyModels, tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from services.inference.metrics import InferenceMetrics
    from services.inference.models import ModelSet
    from services.inference.updates import ModelUpdater

    keys = tm.keypair(tmp_path / "k")
    registry = CollectorRegistry()
    models = ModelSet()
    updater = ModelUpdater(models, BundleCache(tmp_path / "cache"), InferenceMetrics(registry),
                           public_key=load_public_key(keys.public_path),
                           runtimes=[RuntimeKind.LITERT])
    b = tm.signed_bundle(tiny, tm.FORECAST, 1, keys, tmp_path / "b")
    # Unsigned (no <bundle>.json): refused unless the operator trusts local files.
    out = updater.load_local(b.path, trust=False)
    assert not out.ok and out.reason is LoadFailure.SIGNATURE and len(models) == 0
    assert updater.load_local(b.path, trust=True).ok
    models.remove(tm.FORECAST)
    # Signed by another key: refused even with its announcement next to it.
    other = tm.signed_bundle(tiny, tm.FORECAST, 2, tm.keypair(tmp_path / "o"), tmp_path / "o")
    tm.write_announcement(other)
    out = updater.load_local(other.path, trust=False)
    assert not out.ok and out.reason is LoadFailure.KEY_ID and len(models) == 0
    tm.write_announcement(b)
    assert updater.load_local(b.path, trust=False).ok and models.get(tm.FORECAST).version == 1
