"""Trainer failures, each with the exit code a Kubernetes Job reports."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    #: Training, a gate (baseline, parity) or publishing failed; nothing was published.
    FAILED = 1
    #: Bad configuration or input data (missing column, NaNs, too little data...).
    CONFIG = 2
    #: The registry could not be reached.
    REGISTRY_UNREACHABLE = 3
    #: The signing key for a local registry is missing or unreadable.
    SIGNING_KEY = 4


class TrainerError(Exception):
    exit_code: ExitCode = ExitCode.FAILED


class DataError(TrainerError):
    """Input data that cannot make a model: say what and where."""

    exit_code = ExitCode.CONFIG


class GateError(TrainerError):
    """A model refused by the baseline or the parity gate."""

    exit_code = ExitCode.FAILED


class RegistryUnreachable(TrainerError):
    exit_code = ExitCode.REGISTRY_UNREACHABLE


class SigningKeyMissing(TrainerError):
    exit_code = ExitCode.SIGNING_KEY
