"""Which of the server's enabled backends can run now (``GET /v1/backends``), and the refusal at submit of
one that cannot (a backend whose weights are missing would otherwise be queued and fail later).

The facts come from :func:`meshforge.backends.weights.list_models` (no network, no torch import); the
messages name what is missing and what the operator can do, never a server path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..backends import resolve_name
from ..backends.weights import PULLABLE, list_models
from ..errors import InputError
from .settings import ENV_PREFIX, Settings


class BackendUnavailable(InputError):
    """A job asked for an enabled backend that cannot run on this server (its weights or packages are
    missing); answered with 422 ``backend_unavailable``."""


@dataclass(frozen=True)
class BackendStatus:
    """One enabled backend as the API reports it.

    Attributes:
        name: the registry name, or ``auto``.
        available: True when a job asking for it can run now.
        needs_weights: True for backends that need model weights (``auto``: False, it falls back).
        note: one line: ``ready``, what ``auto`` resolves to and why, or what is missing and what to do.
        resolves_to: the concrete backend ``auto`` picks now (None for concrete backends).
    """

    name: str
    available: bool
    needs_weights: bool
    note: str
    resolves_to: str | None = None


def backend_statuses(settings: Settings) -> list[BackendStatus]:
    """The status of every backend in ``settings.backends``, in that order.

    A backend with weights counts as available when its weights are present locally with the packages it
    needs, or when ``settings.download_weights`` lets it fetch them from the Hugging Face hub at first use
    (``settings.weights`` unset or a repo id; a job then fails with ``missing_dependency`` if a package
    it needs is missing).

    Returns:
        One :class:`BackendStatus` per name in ``settings.backends``. No network access, no torch import.
    """
    models = {m.backend: m for m in list_models(settings.weights)}
    out: list[BackendStatus] = []
    for name in settings.backends:
        if name == "auto":
            resolved, why = resolve_name("auto", settings.weights)
            note = f"uses '{resolved}'" + (f": {why}" if why else "")
            out.append(BackendStatus("auto", True, False, note, resolved))
            continue
        m = models[name]
        if m.present or not m.needs_weights:
            out.append(BackendStatus(name, True, m.needs_weights, "ready" if m.needs_weights else m.note))
        elif settings.download_weights and m.location is None and name in PULLABLE and _hub_id(settings.weights):
            out.append(BackendStatus(name, True, True, "its weights are downloaded when a job first needs them"))
        else:
            others = [n for n in settings.backends if n == "auto" or (n in models and models[n].present)]
            out.append(BackendStatus(name, False, True, _missing(name, m.location is not None, others)))
    return out


def _hub_id(weights: str | None) -> bool:
    """Whether ``weights`` names Hugging Face weights that can be downloaded now (None: the default repo;
    not a local folder, and ``HF_HUB_OFFLINE`` unset)."""
    from ..backends.triposr.loading import hub_offline

    if hub_offline():
        return False
    return weights is None or (weights.count("/") == 1 and not Path(weights).expanduser().exists())


def _missing(name: str, weights_found: bool, others: list[str]) -> str:
    alternatives = f"; or choose another backend ({', '.join(others)})" if others else ""
    if weights_found:
        return (
            f"backend '{name}' cannot run on this server: its weights are there but a package it needs is "
            f"missing: pip install 'meshforge[{name}]' on the server and restart{alternatives}"
        )
    pull = f"run 'meshforge models pull {name}' on the server" if name in PULLABLE else "install its weights"
    return (
        f"backend '{name}' has no weights: {pull}, or set {ENV_PREFIX}WEIGHTS to the folder holding them, "
        f"and restart{alternatives}"
    )


def check_available(name: str, settings: Settings) -> None:
    """Refuse a concrete backend that cannot run now.

    Raises:
        BackendUnavailable: its weights (or a package it needs) are missing; the message says what to do.
    """
    for status in backend_statuses(settings):
        if status.name == name and not status.available:
            raise BackendUnavailable(status.note)
