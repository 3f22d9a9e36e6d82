"""``edgeloop broker``: render Mosquitto's config and ACL, set passwords, make certificates.

    edgeloop broker render --out DIR [options]      mosquitto.conf + acl
    edgeloop broker passwd --file PASSWD ...        add accounts (passwords from env/files)
    edgeloop broker certs --out DIR [--name H]...   CA, server and client certificates
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from services.broker import certs, passwd
from services.broker.render import render
from services.broker.settings import BrokerSettings, Role
from services.common.cli import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, resolve_config
from services.contract.topics import ContractTopicError, check_id

PASSWORD_ENV = "EDGELOOP_BROKER_PASSWORD"  # noqa: S105  (the variable's name)


def _config_args() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path,
                        help="TOML or JSON broker config (also EDGELOOP_CONFIG)")
    common.add_argument("--validate-config", action="store_true",
                        help="check the configuration, print it and exit")
    common.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR")
    return common


def _add_render(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("render", parents=[common], help="write mosquitto.conf and acl",
                       description="Render mosquitto.conf and the ACL into --out. Paths are "
                       "where the files are at run time (defaults: the broker image's).")
    p.add_argument("--out", type=Path, required=True, help="directory to write into")
    p.add_argument("--host", help="plain listener address (default 0.0.0.0)")
    p.add_argument("--port", type=int, help="plain listener port, 0 = off (default 1883)")
    p.add_argument("--tls-host", help="TLS listener address (default 0.0.0.0)")
    p.add_argument("--tls-port", type=int, help="TLS listener port, 0 = off (default 8883)")
    p.add_argument("--tls-version", choices=["tlsv1.2", "tlsv1.3"])
    p.add_argument("--require-certificate", action="store_true", default=None,
                   help="TLS clients must also present a certificate signed by the CA")
    p.add_argument("--cafile", type=Path)
    p.add_argument("--certfile", type=Path)
    p.add_argument("--keyfile", type=Path)
    p.add_argument("--password-file", type=Path)
    p.add_argument("--acl-file", type=Path)
    p.add_argument("--data-dir", type=Path, help="persistence directory")
    p.add_argument("--log-dest", help="stdout, stderr or 'file /path'")
    p.add_argument("--run-as", help="account Mosquitto drops to when started as root")
    p.add_argument("--autosave-interval", type=int, dest="autosave_interval_s")
    p.add_argument("--max-queued-messages", type=int)
    p.add_argument("--max-queued-bytes", type=int)
    p.add_argument("--max-inflight-messages", type=int)
    p.add_argument("--max-packet-size", type=int)
    for role in Role:
        p.add_argument(f"--{role.value}-user", action="append", dest=f"role_{role.value}",
                       metavar="NAME", help=f"an account with the {role.value} role "
                       "(repeat; replaces the default list)")


def _add_passwd(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "passwd", parents=[common], help="add accounts to the password file",
        description="Add or replace accounts in Mosquitto's password file. Passwords come "
        f"from --secrets-dir (one file per account), from ${PASSWORD_ENV} or "
        f"${PASSWORD_ENV}_FILE, or from stdin: never from flags, which ps shows.")
    p.add_argument("--file", type=Path, required=True, help="the password file")
    p.add_argument("--user", action="append", default=[], metavar="NAME",
                   help="a service or client account (repeatable)")
    p.add_argument("--device", action="append", default=[], metavar="ID",
                   help="a device account; the username is the device id (repeatable)")
    p.add_argument("--secrets-dir", type=Path,
                   help="directory with one file per account holding its password")
    p.add_argument("--generate", action="store_true",
                   help="with --secrets-dir: write a random password for accounts without one")
    p.add_argument("--password-stdin", action="store_true",
                   help="read the (single) account's password from stdin")
    p.add_argument("--delete", action="append", default=[], metavar="NAME",
                   help="remove an account (repeatable)")


def _add_certs(sub: Any) -> None:
    p = sub.add_parser("certs", help="a CA, a broker certificate and client certificates",
                       description="Make a CA (once; reused afterwards), a broker "
                       "certificate for localhost, 127.0.0.1 and every --name, and a "
                       "client certificate per --client.")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--name", action="append", default=[],
                   help="hostname or IP clients use to reach the broker (repeatable)")
    p.add_argument("--client", action="append", default=[],
                   help="issue a client certificate with this CN (repeatable)")
    p.add_argument("--days", type=int, default=certs.DEFAULT_DAYS)


def _settings(args: argparse.Namespace, overrides: dict[str, Any]) -> BrokerSettings | int:
    return resolve_config(BrokerSettings, args, overrides)


def _cmd_render(args: argparse.Namespace) -> int:
    keys = ["host", "port", "tls_host", "tls_port", "tls_version", "require_certificate",
            "cafile", "certfile", "keyfile", "password_file", "acl_file", "data_dir",
            "log_dest", "run_as", "autosave_interval_s", "max_queued_messages", "max_queued_bytes",
            "max_inflight_messages", "max_packet_size"]
    overrides: dict[str, Any] = {k: getattr(args, k) for k in keys}
    for role in Role:
        overrides[f"accounts.{role.value}"] = getattr(args, f"role_{role.value}")
    settings = _settings(args, overrides)
    if isinstance(settings, int):
        return settings
    out = render(settings, args.out)
    print(out.config)
    print(out.acl)
    return EXIT_OK


def _single_password(args: argparse.Namespace, name: str) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    if os.environ.get(PASSWORD_ENV + "_FILE"):
        return passwd.read_secret_file(Path(os.environ[PASSWORD_ENV + "_FILE"]))
    raise passwd.PasswdError(
        f"no password for {name}: use --secrets-dir, --password-stdin, ${PASSWORD_ENV} "
        f"or ${PASSWORD_ENV}_FILE"
    )


def _cmd_passwd(args: argparse.Namespace) -> int:
    settings = _settings(args, {})
    if isinstance(settings, int):
        return settings
    reserved = settings.accounts.reserved()
    for device in args.device:
        try:
            check_id("device", device)
        except ContractTopicError as exc:
            print(f"edgeloop broker passwd: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        if device in reserved:
            print(f"edgeloop broker passwd: {device!r} is a service or client account; "
                  "a device with that id could be impersonated by it", file=sys.stderr)
            return EXIT_CONFIG
    names: list[str] = [*args.user, *args.device]
    try:
        for name in args.delete:
            passwd.delete(args.file, name)
            print(f"deleted {name}")
        if args.secrets_dir is not None:
            accounts = passwd.secrets_dir_accounts(
                args.secrets_dir, names or None, generate=args.generate
            )
        elif len(names) == 1:
            accounts = [passwd.Account(names[0], _single_password(args, names[0]))]
        elif names:
            print("edgeloop broker passwd: several accounts need --secrets-dir",
                  file=sys.stderr)
            return EXIT_CONFIG
        else:
            accounts = []
        for account in accounts:
            passwd.set_password(args.file, account)
            print(f"set {account.username}")
    except passwd.PasswdError as exc:
        print(f"edgeloop broker passwd: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _cmd_certs(args: argparse.Namespace) -> int:
    try:
        issued = certs.issue_all(args.out, names=args.name, clients=args.client, days=args.days)
    except certs.CertError as exc:
        print(f"edgeloop broker certs: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for path in (issued.ca_cert, issued.server_cert, issued.server_key):
        print(path)
    for cert, key in issued.clients.values():
        print(cert)
        print(key)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgeloop broker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    common = _config_args()
    _add_render(sub, common)
    _add_passwd(sub, common)
    _add_certs(sub)
    args = parser.parse_args(argv)
    if args.action == "render":
        return _cmd_render(args)
    if args.action == "passwd":
        return _cmd_passwd(args)
    return _cmd_certs(args)
