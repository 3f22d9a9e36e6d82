"""Mosquitto's password file, through ``mosquitto_passwd``, with passwords never in argv.

``mosquitto_passwd -b`` takes the password as an argument, which ``ps`` shows to every
user of the machine; here the password goes to ``mosquitto_passwd``'s stdin instead
(it reads "Password:" and "Reenter password:" from a pipe).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: Random passwords: 32 url-safe characters (~190 bits).
GENERATED_BYTES = 24


class PasswdError(RuntimeError):
    """A password that cannot be set, with the reason."""


@dataclass(frozen=True, slots=True)
class Account:
    username: str
    password: str


def mosquitto_passwd_binary() -> str:
    found = shutil.which("mosquitto_passwd")
    if found is None:
        raise PasswdError("mosquitto_passwd not found (Debian: apt-get install mosquitto)")
    return found


def _check(account: Account) -> None:
    if not account.password:
        raise PasswdError(f"{account.username}: empty password")
    if any(c in account.password for c in "\n\r\0"):
        raise PasswdError(f"{account.username}: a password cannot contain a line break")


def set_password(passwd_file: Path, account: Account) -> None:
    """Add or replace one account in the password file (created when missing)."""
    _check(account)
    argv = [mosquitto_passwd_binary()]
    if not passwd_file.exists():
        passwd_file.parent.mkdir(parents=True, exist_ok=True)
        argv.append("-c")
    argv += [str(passwd_file), account.username]
    secret = f"{account.password}\n{account.password}\n"
    result = subprocess.run(argv, input=secret, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise PasswdError(
            f"mosquitto_passwd failed for {account.username}: "
            f"{(result.stderr or result.stdout).strip()}"
        )
    # Hashes, but still: only the broker's user needs to read them.
    os.chmod(passwd_file, 0o640)


def delete(passwd_file: Path, username: str) -> None:
    argv = [mosquitto_passwd_binary(), "-D", str(passwd_file), username]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise PasswdError(f"mosquitto_passwd -D {username}: {result.stderr.strip()}")


def usernames(passwd_file: Path) -> list[str]:
    if not passwd_file.exists():
        return []
    return [
        line.split(":", 1)[0]
        for line in passwd_file.read_text().splitlines()
        if line and not line.startswith("#")
    ]


def read_secret_file(path: Path) -> str:
    """A password from a file, without its trailing newline (``echo pw > file``)."""
    try:
        return path.read_text().rstrip("\r\n")
    except OSError as exc:
        raise PasswdError(f"cannot read password file {path}: {exc.strerror}") from None


def secrets_dir_accounts(
    directory: Path, names: Iterable[str] | None, *, generate: bool
) -> list[Account]:
    """Accounts from a secrets directory: one file per username, holding its password.

    With ``names`` only those accounts are taken (and, with ``generate``, a random
    password is written for each one that has no file yet, mode 0600). Without ``names``
    every regular file in the directory is an account.
    """
    if names is None:
        if not directory.is_dir():
            raise PasswdError(f"secrets directory {directory} does not exist")
        names = sorted(
            p.name for p in directory.iterdir() if p.is_file() and not p.name.startswith(".")
        )
    accounts = []
    for name in names:
        path = directory / name
        if not path.exists() and generate:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(GENERATED_BYTES) + "\n")
        if not path.exists():
            raise PasswdError(
                f"no password for {name}: write it to {path} (or pass --generate)"
            )
        accounts.append(Account(name, read_secret_file(path)))
    return accounts
