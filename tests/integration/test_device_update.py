"""End-to-end model updates: the firmware in QEMU (mps2-an385), its UART on a TCP port,
the Pi side's updater and CLI on the other end.

Shown here: a good model is accepted and used (INFO's hash, and PREDICT answers with the
new model's outputs); a corrupted chunk is NAKed and resent; a reset halfway leaves the
old model active and the transfer then resumes; a model with a bad test vector, a model
too big for a slot and garbage are refused with NAKs while the device keeps streaming;
``edgeloop device update-model`` takes a bundle or a signed registry version.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from services.device import UpdateError, update_device_from_bundle, update_device_model
from services.device.cli import main as device_cli
from services.device.devmodels import DevModel, train
from services.device.emulator import QemuDevice, make
from services.device.link import DeviceLink
from services.device.protocol import FrameType, NakReason, ReplyKind, encode_frame, image_hash
from services.device.update import ModelUpdater
from services.modelkit.bundle import read_bundle, write_bundle
from services.modelkit.signing import generate_keypair
from services.trainer import c_export as ce
from tests.support.servers import which_or_skip

pytestmark = [pytest.mark.firmware, pytest.mark.integration]


@pytest.fixture(scope="module")
def firmware() -> None:
    which_or_skip("arm-none-eabi-gcc")
    which_or_skip("qemu-system-arm")
    make("mps2-an385")


@pytest.fixture(scope="module")
def new_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[DevModel, ce.CExport]:
    m = train("fc-b", seed=11, units=(16, 8))
    return m, m.export(tmp_path_factory.mktemp("c"))


#: Lines the device streamed while a test waited for replies (the link's on_line hook).
STREAMED: list[str] = []


@pytest.fixture
def device(firmware: None, tmp_path: Path) -> Iterator[tuple[QemuDevice, DeviceLink]]:
    STREAMED.clear()
    with QemuDevice("mps2-an385", log_path=tmp_path / "qemu.log") as qemu:
        link = qemu.link(on_line=STREAMED.append)
        try:
            assert link.command("RATE 50", ReplyKind.OK).kind is ReplyKind.OK
            yield qemu, link
        finally:
            link.close()


def _predict_q(link: DeviceLink, x: np.ndarray) -> list[int]:
    reply = link.command("PREDICT q " + ",".join(str(int(v)) for v in x), ReplyKind.PRED)
    assert reply.kind is ReplyKind.PRED, reply.text
    return [int(v) for v in reply.fields["q"].split(",")]


def _readings_after(link: DeviceLink, n: int = 3, timeout_s: float = 10.0) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n:
        line = link.read_line(deadline)
        assert line is not None, "the device stopped streaming"
        if line.startswith("temp:"):
            got.append(line)
    return got


def test_good_model_is_accepted_and_used(device: tuple[QemuDevice, DeviceLink],
                                         new_model: tuple[DevModel, ce.CExport]) -> None:
    _, link = device
    model, exp = new_model
    before = link.info()
    assert before.slot == "a" and before.model == "temp-forecast"
    new = ce.int_model(ce.read_tflite(model.tflite))
    rng = np.random.default_rng(5)
    probes = [rng.integers(-128, 128, size=new.n_inputs).astype(np.int8) for _ in range(6)]
    old_outputs = [_predict_q(link, x) for x in probes]
    streamed_before = len(STREAMED)

    def slow_line(_offset: int, frame: bytes) -> bytes:
        time.sleep(0.01)  # a slow serial line: the transfer spans several samples
        return frame

    result = update_device_model(link, exp.blob, chunk=16, frame_filter=slow_line)

    after = link.info()
    assert after.hash == image_hash(exp.blob) == result.hash != before.hash
    assert after.slot == "b" and after.model == "fc-b" and result.chunks == 50
    # The device runs the new model: its outputs are the new model's (TFLite arithmetic,
    # checked against TFLite Micro in the parity test), and differ from the old ones.
    new_outputs = [_predict_q(link, x) for x in probes]
    assert new_outputs == [new.run(x).tolist() for x in probes]
    assert new_outputs != old_outputs
    # Readings kept flowing during the ~0.5 s transfer (RATE 50 ms).
    assert len(STREAMED) >= streamed_before + 3
    # Updating again is a no-op: the device already runs it.
    assert update_device_model(link, exp.blob).already_current


def test_corrupted_chunk_is_naked_and_resent(device: tuple[QemuDevice, DeviceLink],
                                             new_model: tuple[DevModel, ce.CExport]) -> None:
    _, link = device
    _, exp = new_model
    corrupted: list[int] = []

    def flip_once(offset: int, frame: bytes) -> bytes:
        if offset == 256 and not corrupted:
            corrupted.append(offset)
            bad = bytearray(frame)
            bad[40] = bad[40] ^ 0x55 or 1  # still no 0x00 inside the frame
            return bytes(bad)
        return frame

    result = update_device_model(link, exp.blob, frame_filter=flip_once)
    assert corrupted == [256]
    assert sum(result.naks.values()) == 1 and result.resends == 1
    assert set(result.naks) <= {NakReason.CRC.value, NakReason.COBS.value,
                                NakReason.SHORT.value, NakReason.LONG.value}
    assert link.info().hash == image_hash(exp.blob)


def test_reset_halfway_keeps_the_old_model_then_resumes(
        device: tuple[QemuDevice, DeviceLink], new_model: tuple[DevModel, ce.CExport]) -> None:
    qemu, link = device
    _, exp = new_model
    old = link.info()
    updater = ModelUpdater(link, exp.blob)
    assert updater.begin() == 0
    half = updater.send(until=len(exp.blob) // 2)
    assert 0 < half < len(exp.blob)

    qemu.system_reset()  # the reset button, mid-transfer
    deadline = time.monotonic() + 10
    while (line := link.read_line(deadline)) is not None and not line.startswith("# edgeloop"):
        pass
    assert line is not None, "no boot banner after the reset"
    info = link.info()
    assert (info.hash, info.slot, info.model) == (old.hash, "a", old.model)
    assert _readings_after(link)  # running the old model, streaming

    result = update_device_model(link, exp.blob)
    assert result.resumed_from == half  # the acked offset survived the reset
    assert link.info().hash == image_hash(exp.blob)

    # A software reset (SYSRESETREQ): the device boots into the new model.
    assert link.command("RESET", ReplyKind.OK).text == "@OK RESET"
    deadline = time.monotonic() + 10
    while (line := link.read_line(deadline)) is not None and not line.startswith("# edgeloop"):
        pass
    assert line is not None, "no boot banner after RESET"
    info = link.info()
    assert info.hash == image_hash(exp.blob) and info.slot == "b"
    assert info.extra["gen"] == "2"


def test_model_with_a_bad_test_vector_is_refused(
        device: tuple[QemuDevice, DeviceLink], new_model: tuple[DevModel, ce.CExport]) -> None:
    _, link = device
    model, exp = new_model
    m = ce.int_model(ce.read_tflite(model.tflite))
    stride = (m.n_inputs + m.n_outputs + 3) // 4 * 4
    bad = bytearray(exp.blob)
    bad[len(bad) - stride + m.n_inputs] ^= 0x01  # last vector's expected output
    old = link.info()
    with pytest.raises(UpdateError) as err:
        update_device_model(link, bytes(bad))
    assert err.value.reason is NakReason.TEST_VECTOR
    assert link.info().hash == old.hash and link.info().slot == "a"
    assert _readings_after(link)


def test_garbage_truncation_and_oversize_get_naks_and_streaming_continues(
        device: tuple[QemuDevice, DeviceLink], new_model: tuple[DevModel, ce.CExport]) -> None:
    _, link = device
    _, exp = new_model
    with pytest.raises(UpdateError) as err:
        update_device_model(link, exp.blob + bytes(20000))
    assert err.value.reason is NakReason.TOO_LARGE

    def nak_for(data: bytes) -> ReplyKind:
        link.write(data)
        reply = link.wait_reply(lambda r: r.kind in (ReplyKind.ACK, ReplyKind.NAK))
        assert reply.kind is ReplyKind.NAK and reply.offset == 0, reply.text
        return reply.kind

    updater = ModelUpdater(link, exp.blob)
    updater.begin()
    nak_for(b"GARBAGE\r\nPING\n\x00")
    frame = encode_frame(FrameType.DATA, 0, exp.blob[:128])
    nak_for(frame[:50] + b"\x00")  # truncated
    nak_for(bytes(range(1, 256)) * 2 + b"\x00")  # longer than any frame
    nak_for(encode_frame(FrameType.DATA, 512, exp.blob[512:600]))  # from the future
    assert _readings_after(link)  # still streaming in update mode
    updater.abort()
    assert link.ping()
    assert link.info().slot == "a"


def test_cli_updates_from_a_bundle_and_a_signed_registry(
        device: tuple[QemuDevice, DeviceLink], new_model: tuple[DevModel, ce.CExport],
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    qemu, link = device
    model, exp = new_model
    link.close()  # one client at a time on the UART, as on a real serial port
    bundle = write_bundle(tmp_path / "fc-b.tar", model.card,
                          {"model.tflite": model.tflite, "c/model.bin": exp.blob})
    assert device_cli(["info", "--port", qemu.url, "--json"]) == 0
    assert '"slot": "a"' in capsys.readouterr().out
    assert device_cli(["update-model", "--port", qemu.url, "--model", str(bundle)]) == 0
    assert f"hash={image_hash(exp.blob)}" in capsys.readouterr().out

    # A registry version: the signature is checked against the trusted key.
    from services.trainer.registry.store import RegistryStore

    keys = generate_keypair(tmp_path / "keys")
    store = RegistryStore(tmp_path / "registry", keys.private_path)
    other = train("fc-a", seed=7)
    other_exp = other.export(tmp_path / "c2")
    other_bundle = write_bundle(tmp_path / "fc-a.tar", other.card,
                                {"model.tflite": other.tflite, "c/model.bin": other_exp.blob})
    published = store.publish(other_bundle)
    wrong = generate_keypair(tmp_path / "wrong")
    assert device_cli(["update-model", "--port", qemu.url, "--model", published.name,
                       "--registry", str(tmp_path / "registry"),
                       "--public-key", str(wrong.public_path)]) == 1
    assert "key" in capsys.readouterr().err
    assert device_cli(["update-model", "--port", qemu.url, "--model",
                       f"{published.name}@{published.version}",
                       "--registry", str(tmp_path / "registry"),
                       "--public-key", str(keys.public_path), "--json"]) == 0
    assert image_hash(other_exp.blob) in capsys.readouterr().out
    with DeviceLink(qemu.url) as again:
        assert again.info().hash == image_hash(other_exp.blob)
    # The hook for services that hold a verified bundle already.
    back = update_device_from_bundle(qemu.url, read_bundle(bundle.read_bytes()))
    assert back.hash == image_hash(exp.blob) and not back.already_current


def test_cli_fetches_a_signed_model_from_the_http_registry(
        device: tuple[QemuDevice, DeviceLink], new_model: tuple[DevModel, ce.CExport],
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from prometheus_client import CollectorRegistry
    from pydantic import SecretStr

    from services.trainer.registry.config import HttpSettings, RegistrySettings
    from services.trainer.registry.server import RegistryServer

    qemu, link = device
    model, exp = new_model
    link.close()
    keys = generate_keypair(tmp_path / "keys")
    server = RegistryServer(RegistrySettings(
        root=tmp_path / "registry", signing_key=keys.private_path,
        token=SecretStr("t0ken-for-tests"), http=HttpSettings(host="127.0.0.1", port=0),
        mqtt=None), CollectorRegistry())
    server.start()
    try:
        bundle = write_bundle(tmp_path / "fc-b.tar", model.card,
                              {"model.tflite": model.tflite, "c/model.bin": exp.blob})
        published = server.store.publish(bundle)
        url = f"http://127.0.0.1:{server.port}"
        assert device_cli(["update-model", "--port", qemu.url, "--model", published.name,
                           "--registry", url, "--public-key", str(keys.public_path)]) == 0
        out = capsys.readouterr().out
        assert f"hash={image_hash(exp.blob)}" in out and "model=fc-b" in out
        # Without a trusted key nothing is fetched from a registry.
        assert device_cli(["update-model", "--port", qemu.url, "--model", published.name,
                           "--registry", url]) == 1
        assert "--public-key" in capsys.readouterr().err
    finally:
        server.stop()
