"""Typed configuration: one object per service from a file, env vars and flags.

Precedence, lowest to highest: model defaults < config file (TOML or JSON) < environment
(``EDGELOOP_<KEY>``, nested keys joined by ``__``: ``EDGELOOP_MQTT__PORT=1884``) < flags.

Unknown keys in a file or in flags are errors. Errors name the key and where its value
came from. Secrets (fields typed :class:`pydantic.SecretStr`) are never taken from flags,
which ``ps`` shows: they come from ``EDGELOOP_<KEY>``, from the file named by
``EDGELOOP_<KEY>_FILE``, or from ``/run/secrets/edgeloop_<key>`` (Docker and k8s secrets).
"""

from __future__ import annotations

import json
import os
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

ENV_PREFIX = "EDGELOOP_"
SECRETS_DIR = Path("/run/secrets")

C = TypeVar("C", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration problem, with every offending key named."""


class Settings(BaseModel):
    """Base for every config section: frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


def _is_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _is_model(arg)
        if found is not None:
            return found
    return None


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_is_secret(a) for a in typing.get_args(annotation))


def _walk_fields(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[
    tuple[tuple[str, ...], Any]
]:
    """Every leaf field path with its annotation."""
    out: list[tuple[tuple[str, ...], Any]] = []
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        sub = _is_model(field.annotation)
        if sub is not None and not _is_secret(field.annotation):
            out.extend(_walk_fields(sub, path))
        out.append((path, field.annotation))
    return out


def _set_path(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = target
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[path[-1]] = value


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def env_name(path: tuple[str, ...]) -> str:
    return ENV_PREFIX + "__".join(p.upper() for p in path)


def read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a table")
    return data


def _from_env(
    model: type[BaseModel], env: Mapping[str, str], secrets_dir: Path
) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    values: dict[str, Any] = {}
    sources: dict[tuple[str, ...], str] = {}
    for path, annotation in _walk_fields(model):
        name = env_name(path)
        if name in env:
            _set_path(values, path, env[name])
            sources[path] = f"env {name}"
            continue
        if not _is_secret(annotation):
            continue
        file_var = env.get(name + "_FILE")
        candidate = Path(file_var) if file_var else secrets_dir / ("edgeloop_" + "_".join(path))
        if candidate.is_file():
            try:
                secret = candidate.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"{'.'.join(path)}: cannot read {candidate}: {exc}") from None
            _set_path(values, path, secret)
            sources[path] = f"file {candidate}"
    return values, sources


def load_config(
    model: type[C],
    *,
    file: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    secrets_dir: Path = SECRETS_DIR,
) -> C:
    """Build and validate a config object; raise ConfigError naming every bad key.

    ``overrides`` are flag values keyed by dotted path (``"mqtt.port"``); ``None`` values
    mean "flag not given" and are skipped.
    """
    env = os.environ if env is None else env
    sources: dict[tuple[str, ...], str] = {}
    data: dict[str, Any] = {}
    if file is None and env.get(ENV_PREFIX + "CONFIG"):
        file = Path(env[ENV_PREFIX + "CONFIG"])
    if file is not None:
        data = read_file(file)
        for path, _ in _walk_fields(model):
            sources.setdefault(path, f"file {file}")
    env_values, env_sources = _from_env(model, env, secrets_dir)
    data = _merge(data, env_values)
    sources.update(env_sources)
    secret_paths = {p for p, a in _walk_fields(model) if _is_secret(a)}
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        path = tuple(dotted.split("."))
        if path in secret_paths:
            raise ConfigError(
                f"{dotted}: secrets are not accepted as flags; set {env_name(path)} "
                f"or {env_name(path)}_FILE"
            )
        _set_path(data, path, value)
        sources[path] = "flag"
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_url=False):
            loc = tuple(str(p) for p in err["loc"])
            where = sources.get(loc)
            got = "" if err["type"] == "missing" else f" (got {err.get('input')!r})"
            if loc and loc[-1] in {"password", "token"}:
                got = ""
            src = f" [from {where}]" if where else ""
            lines.append(f"{'.'.join(loc) or '<root>'}: {err['msg']}{got}{src}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None


def describe(config: BaseModel) -> str:
    """The resolved config as JSON with secrets masked, for ``--validate-config``."""
    return json.dumps(config.model_dump(mode="json"), indent=2, sort_keys=True, default=str)
