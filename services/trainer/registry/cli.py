"""``edgeloop registry``: keys, the HTTP service, and publish/list/promote/rollback/retire.

Store commands act on the local store (``root``) and announce over MQTT themselves when
it is configured; with ``--url`` (or ``url`` in the config) they go to a running
registry over HTTP instead, with the token from ``EDGELOOP_TOKEN``.

Exit codes: 0 ok; 1 the operation failed (not found, conflict, bad or tampered bundle);
2 configuration (bad config, missing signing key, missing or wrong token); 3 the registry
or the broker could not be reached (for store commands: the change is made, the
announcement is not; run ``edgeloop registry announce`` once the broker is back).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from services.common.cli import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, resolve_config
from services.common.lifecycle import StopEvent
from services.common.metrics import new_registry
from services.modelkit.signing import SigningError, generate_keypair
from services.trainer.registry.announce import Announcer
from services.trainer.registry.client import RegistryClient
from services.trainer.registry.config import RegistrySettings
from services.trainer.registry.errors import (
    ErrorCode,
    RegistryAuthError,
    RegistryError,
    RegistryUnreachable,
    SigningUnavailable,
)
from services.trainer.registry.metrics import AnnounceResult
from services.trainer.registry.models import PublishedModel, VersionMeta
from services.trainer.registry.server import RegistryServer
from services.trainer.registry.store import RegistryStore

EXIT_UNREACHABLE = 3
PROG = "edgeloop registry"


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--config", type=Path, help="TOML or JSON config file (also EDGELOOP_CONFIG)")
    p.add_argument("--validate-config", action="store_true",
                   help="check the configuration, print it (secrets masked) and exit")
    p.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR")
    p.add_argument("--root", type=Path, help="store directory (config: root)")
    return p


def _mqtt_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mqtt-host", help="broker for announcements (config: mqtt.host)")
    p.add_argument("--mqtt-port", type=int)
    p.add_argument("--mqtt-protocol", choices=["5", "3.1.1"])
    p.add_argument("--public-url",
                   help="base URL the edge reaches the registry at, used in announcements")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="The model registry: signing keys, the HTTP service, and "
        "publish/list/promote/rollback/retire/announce/verify on a store.",
        epilog="Exit codes: 0 ok, 1 failed, 2 configuration (key, token), 3 unreachable.",
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    common = _common()

    p = sub.add_parser("keygen", help="create an Ed25519 signing key pair")
    p.add_argument("--out", type=Path, required=True, help="directory for <name>.key/.pub")
    p.add_argument("--name", default="edgeloop", help="file name stem (default edgeloop)")

    p = sub.add_parser("serve", parents=[common], help="serve the HTTP API (waitress)")
    p.add_argument("--signing-key", type=Path, help="private key that signs uploads")
    p.add_argument("--http-host")
    p.add_argument("--http-port", type=int)
    _mqtt_flags(p)

    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument("--url", help="a running registry (http://...) instead of --root")
    remote.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("publish", parents=[common, remote], help="store, sign, approve")
    p.add_argument("bundle", type=Path)
    p.add_argument("--candidate", action="store_true",
                   help="store as a candidate; promote it later")
    p.add_argument("--signing-key", type=Path)
    _mqtt_flags(p)

    p = sub.add_parser("list", parents=[common, remote], help="models, or one model's versions")
    p.add_argument("name", nargs="?")

    p = sub.add_parser("promote", parents=[common, remote], help="make a version current")
    p.add_argument("name")
    p.add_argument("version", type=int)
    _mqtt_flags(p)

    p = sub.add_parser("rollback", parents=[common, remote],
                       help="undo the last promotion: the previous approved version")
    p.add_argument("name")
    _mqtt_flags(p)

    p = sub.add_parser("retire", parents=[common, remote], help="never serve a version again")
    p.add_argument("name")
    p.add_argument("version", type=int)
    _mqtt_flags(p)

    p = sub.add_parser("announce", parents=[common],
                       help="publish the retained announcements again (all models or NAMEs)")
    p.add_argument("names", nargs="*")
    _mqtt_flags(p)

    p = sub.add_parser("verify", parents=[common], help="re-hash and check signatures")
    p.add_argument("name")
    p.add_argument("version", type=int, nargs="?")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    keys = {
        "root": "root", "signing_key": "signing_key", "public_url": "public_url", "url": "url",
        "http_host": "http.host", "http_port": "http.port", "mqtt_host": "mqtt.host",
        "mqtt_port": "mqtt.port", "mqtt_protocol": "mqtt.protocol",
    }
    return {dotted: getattr(args, attr, None) for attr, dotted in keys.items()}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.action == "keygen":
        return _keygen(args)
    loaded = resolve_config(RegistrySettings, args, _overrides(args))
    if isinstance(loaded, int):
        return loaded
    settings = loaded
    try:
        if args.action == "serve":
            return _serve(settings)
        return ACTIONS[args.action](settings, args)
    except (SigningUnavailable, RegistryAuthError) as exc:
        print(f"{PROG}: {exc.message}", file=sys.stderr)
        return EXIT_CONFIG
    except RegistryUnreachable as exc:
        print(f"{PROG}: {exc.message}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except RegistryError as exc:
        print(f"{PROG}: {exc.code.value}: {exc.message}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_FAILED


# --------------------------------------------------------------------------- actions

def _keygen(args: argparse.Namespace) -> int:
    try:
        pair = generate_keypair(args.out, args.name)
    except SigningError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"private key {pair.private_path} (mode 0600: keep it on the registry only)")
    print(f"public key  {pair.public_path} (give it to every edge: --public-key)")
    print(f"key id      {pair.key_id}")
    return EXIT_OK


def _serve(settings: RegistrySettings, registry: CollectorRegistry | None = None) -> int:
    stop = StopEvent.install()
    server = RegistryServer(settings, registry or new_registry())
    try:
        server.start()
        stop.wait()
    finally:
        server.stop()
    return EXIT_OK


def _client(settings: RegistrySettings) -> RegistryClient | None:
    if settings.url is None:
        return None
    return RegistryClient(settings.url, settings.token.get_secret_value()
                          if settings.token else None)


def _announce_local(settings: RegistrySettings, store: RegistryStore,
                    names: list[str]) -> int:
    """Announce from this process (store commands without --url)."""
    announcer = Announcer(
        store, settings.base_url(), settings.mqtt,
        # Its own id: a CLI run must not take over the server's MQTT session.
        client_id=f"{settings.mqtt_client_id}-cli-{os.getpid()}",
        timeout_s=settings.announce_timeout_s,
        reannounce_on_connect=False,
    )
    if not announcer.enabled:
        print("announcement: disabled (no MQTT configured)")
        return EXIT_OK
    announcer.start()
    try:
        if not announcer.wait_connected(settings.announce_timeout_s + 5):
            where = f"{settings.mqtt.host}:{settings.mqtt.port}" if settings.mqtt else "?"
            print(f"{PROG}: broker {where} unreachable; "
                  "the store is updated, run `edgeloop registry announce` when it is back",
                  file=sys.stderr)
            return EXIT_UNREACHABLE
        worst = EXIT_OK
        for name in names:
            result = announcer.announce(name)
            print(f"announcement {name}: {result.value}")
            if result is AnnounceResult.PENDING:
                worst = EXIT_UNREACHABLE
        return worst
    finally:
        announcer.stop()


def _print_meta(meta: VersionMeta | None, as_json: bool, label: str = "current") -> None:
    if as_json:
        print(json.dumps(None if meta is None else meta.to_dict()))
    elif meta is None:
        print(f"{label}: none")
    else:
        print(f"{label}: {meta.name} v{meta.version} ({meta.state.value}, "
              f"sha256 {meta.sha256[:12]}…, key {meta.key_id})")


def _publish(settings: RegistrySettings, args: argparse.Namespace) -> int:
    approve = not args.candidate
    client = _client(settings)
    store: RegistryStore | None = None
    published: PublishedModel
    if client is not None:
        with client:
            published = client.publish(args.bundle, approve=approve)
    else:
        store = RegistryStore(settings.root, settings.signing_key)
        published = store.publish(args.bundle, approve=approve)
    if args.json:
        print(json.dumps(published.to_dict()))
    else:
        again = " (already stored)" if published.duplicate else ""
        print(f"published {published.name} v{published.version}{again} "
              f"({published.state.value}, {published.size_bytes} bytes, "
              f"sha256 {published.sha256[:12]}…, key {published.key_id})")
    if store is not None and approve:
        return _announce_local(settings, store, [published.name])
    return EXIT_OK


def _list(settings: RegistrySettings, args: argparse.Namespace) -> int:
    client = _client(settings)
    if client is not None:
        with client:
            metas = client.versions(args.name) if args.name else []
            models = [] if args.name else client.list_models()
    else:
        store = RegistryStore(settings.root)
        metas = store.versions(args.name) if args.name else []
        models = [] if args.name else store.list_models()
    if args.name:
        if args.json:
            print(json.dumps([m.to_dict() for m in metas]))
            return EXIT_OK
        for m in metas:
            print(f"{m.name} v{m.version}  {m.state.value:<9}  {m.size_bytes:>9} B  "
                  f"sha256 {m.sha256[:12]}…  key {m.key_id}  {m.card.task.value}")
        return EXIT_OK
    if args.json:
        print(json.dumps([m.to_dict() for m in models]))
        return EXIT_OK
    if not models:
        print("no models")
    for s in models:
        current = "none" if s.current is None else f"v{s.current}"
        print(f"{s.name}  current {current}  latest v{s.latest}  {s.versions} version(s)  "
              f"{s.task.value}")
    return EXIT_OK


def _store_op(
    settings: RegistrySettings, args: argparse.Namespace,
    local: Callable[[RegistryStore], VersionMeta | None],
    remote: Callable[[RegistryClient], VersionMeta | None],
) -> int:
    client = _client(settings)
    if client is not None:
        with client:
            _print_meta(remote(client), args.json)
        return EXIT_OK
    store = RegistryStore(settings.root)
    _print_meta(local(store), args.json)
    return _announce_local(settings, store, [args.name])


def _promote(settings: RegistrySettings, args: argparse.Namespace) -> int:
    return _store_op(settings, args, lambda s: s.promote(args.name, args.version),
                     lambda c: c.promote(args.name, args.version))


def _rollback(settings: RegistrySettings, args: argparse.Namespace) -> int:
    return _store_op(settings, args, lambda s: s.rollback(args.name),
                     lambda c: c.rollback(args.name))


def _retire(settings: RegistrySettings, args: argparse.Namespace) -> int:
    return _store_op(settings, args, lambda s: s.retire(args.name, args.version),
                     lambda c: c.retire(args.name, args.version))


def _announce(settings: RegistrySettings, args: argparse.Namespace) -> int:
    store = RegistryStore(settings.root)
    if settings.mqtt is None:
        print(f"{PROG}: announce needs MQTT: set mqtt.host (or --mqtt-host)", file=sys.stderr)
        return EXIT_CONFIG
    names = args.names or [m.name for m in store.list_models()]
    for name in names:
        store.channel(name)  # unknown names fail before connecting
    return _announce_local(settings, store, names)


def _verify(settings: RegistrySettings, args: argparse.Namespace) -> int:
    store = RegistryStore(settings.root)
    versions = [args.version] if args.version else [m.version for m in store.versions(args.name)]
    failed = 0
    for v in versions:
        try:
            meta = store.verify(args.name, v)
            print(f"{args.name} v{v}: ok (sha256 {meta.sha256[:12]}…, key {meta.key_id})")
        except RegistryError as exc:
            if exc.code not in (ErrorCode.TAMPERED, ErrorCode.SIGNING_UNAVAILABLE):
                raise
            failed += 1
            print(f"{args.name} v{v}: FAILED: {exc.message}")
    return EXIT_FAILED if failed else EXIT_OK


ACTIONS: dict[str, Callable[[RegistrySettings, argparse.Namespace], int]] = {
    "publish": _publish, "list": _list, "promote": _promote, "rollback": _rollback,
    "retire": _retire, "announce": _announce, "verify": _verify,
}
