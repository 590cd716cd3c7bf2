"""Run the Khronos glTF validator (the npm package ``gltf-validator``) on a .glb/.gltf asset.

The validator is JavaScript (compiled from Dart), so it runs in Node.js through the small script
``tools/gltf-validator/validate.mjs``. Install it once with::

    npm ci --prefix tools/gltf-validator

Where the script lives: the directory in ``$MESHFORGE_GLTF_VALIDATOR`` if set, else
``<repo>/tools/gltf-validator`` found relative to this file (an editable install / source checkout).
The Node executable is ``$MESHFORGE_NODE`` if set, else ``node`` on ``PATH``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from meshforge.errors import InputError, MissingDependency, StageError

ENV_DIR = "MESHFORGE_GLTF_VALIDATOR"
ENV_NODE = "MESHFORGE_NODE"
INSTALL_HINT = "run `npm ci --prefix tools/gltf-validator` in the meshforge repository (needs Node.js >= 18)"
SEVERITIES = {0: "error", 1: "warning", 2: "info", 3: "hint"}


def validator_dir() -> Path:
    """The directory holding ``validate.mjs`` and ``node_modules/gltf-validator``.

    Returns:
        ``$MESHFORGE_GLTF_VALIDATOR`` when set, else ``<repo>/tools/gltf-validator`` relative to this
        file (``src/meshforge/eval/validate.py`` → ``<repo>``). The directory may not exist; see
        :func:`find_validator`.
    """
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parents[3] / "tools" / "gltf-validator"


def find_validator() -> tuple[str, Path]:
    """Locate Node.js and the installed validator script.

    Returns:
        ``(node executable, path of validate.mjs)``.

    Raises:
        MissingDependency: Node.js is not found, ``validate.mjs`` is missing, or the npm package
            ``gltf-validator`` is not installed beside it; the message says to run
            ``npm ci --prefix tools/gltf-validator``.
    """
    node = os.environ.get(ENV_NODE) or shutil.which("node")
    if not node:
        raise MissingDependency(f"glTF validation needs Node.js (`node` not found on PATH); then {INSTALL_HINT}")
    directory = validator_dir()
    script = directory / "validate.mjs"
    if not script.is_file():
        raise MissingDependency(
            f"glTF validator script not found at {script} (set ${ENV_DIR} to the tools/gltf-validator "
            f"directory); {INSTALL_HINT}"
        )
    if not (directory / "node_modules" / "gltf-validator" / "package.json").is_file():
        raise MissingDependency(f"the npm package gltf-validator is not installed in {directory}: {INSTALL_HINT}")
    return node, script


def summarize_report(report: dict[str, Any]) -> dict[str, Any]:
    """Reduce a raw validator report to counts and messages.

    Args:
        report: the validator's JSON report (``issues.numErrors`` … ``issues.messages``).

    Returns:
        ``{"errors", "warnings", "infos", "hints": int, "messages": [{"code", "severity", "pointer",
        "message"}], "truncated": bool, "validator_version": str, "info": dict, "report": dict}``;
        ``severity`` is ``"error"``, ``"warning"``, ``"info"`` or ``"hint"``; ``pointer`` is a JSON
        pointer into the document (or ``None`` when the issue has only a byte offset, given then as
        ``"offset"``).
    """
    issues = report.get("issues", {})
    messages = []
    for item in issues.get("messages", []):
        entry: dict[str, Any] = {
            "code": item.get("code", ""),
            "severity": SEVERITIES.get(int(item.get("severity", 0)), str(item.get("severity"))),
            "pointer": item.get("pointer"),
            "message": item.get("message", ""),
        }
        if "offset" in item:
            entry["offset"] = item["offset"]
        messages.append(entry)
    return {
        "errors": int(issues.get("numErrors", 0)),
        "warnings": int(issues.get("numWarnings", 0)),
        "infos": int(issues.get("numInfos", 0)),
        "hints": int(issues.get("numHints", 0)),
        "messages": messages,
        "truncated": bool(issues.get("truncated", False)),
        "validator_version": str(report.get("validatorVersion", "")),
        "info": report.get("info", {}),
        "report": report,
    }


def validate_gltf(data: bytes | str | os.PathLike[str], *, timeout: float = 120.0) -> dict[str, Any]:
    """Validate a glTF 2.0 asset with the Khronos glTF validator.

    Bytes are piped to the validator on stdin (GLB or self-contained .gltf; the format is detected
    from the first byte, external resources are not checked). A path is passed to the script, which
    reads .gltf external buffers/images from the file's directory.

    Args:
        data: GLB/glTF bytes, or the path of a .glb/.gltf file.
        timeout: seconds before the Node process is killed.

    Returns:
        See :func:`summarize_report`: ``errors``, ``warnings``, ``infos``, ``hints`` counts, the
        ``messages`` list (code, severity, pointer, message) and the raw ``report``.

    Raises:
        MissingDependency: Node.js or the npm validator package is not installed (see
            :func:`find_validator`).
        InputError: the path does not exist, or the validator rejected the input outright (neither
            glTF JSON nor GLB).
        StageError: the validator timed out, crashed or printed something that is not JSON.
    """
    node, script = find_validator()
    if isinstance(data, bytes | bytearray | memoryview):
        args = [node, str(script), "-"]
        stdin = bytes(data)
        label = f"<{len(stdin)} bytes>"
    else:
        path = Path(data)
        if not path.is_file():
            raise InputError(f"cannot validate {path}: no such file")
        args = [node, str(script), str(path.resolve())]
        stdin = b""
        label = str(path)
    try:
        proc = subprocess.run(args, input=stdin, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise StageError(f"glTF validator timed out after {timeout:g} s on {label}") from exc
    except OSError as exc:
        raise MissingDependency(f"cannot run Node.js ({node}): {exc}; {INSTALL_HINT}") from exc
    stderr = proc.stderr.decode("utf-8", "replace").strip()
    if proc.returncode == 3:
        raise InputError(f"glTF validator rejected {label}: {stderr}")
    if proc.returncode != 0:
        if "Cannot find package" in stderr or "ERR_MODULE_NOT_FOUND" in stderr:
            raise MissingDependency(f"the npm package gltf-validator cannot be loaded: {INSTALL_HINT}")
        raise StageError(f"glTF validator failed on {label} (exit {proc.returncode}): {stderr[-2000:]}")
    try:
        report = json.loads(proc.stdout.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StageError(f"glTF validator printed no JSON report for {label}: {stderr[-2000:]}") from exc
    return summarize_report(report)
