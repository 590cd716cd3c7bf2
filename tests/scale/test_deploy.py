"""The deployment files, checked as far as they can be without Docker: ``compose.yaml`` parses, runs the
services the README names with commands the CLI accepts and settings the service knows (and documents),
and the ``Dockerfile`` builds from a CUDA runtime image with wheels only, as a non-root user."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from meshforge.cli import _build_parser
from meshforge.service.settings import ENV_PREFIX, Settings

REPO = Path(__file__).resolve().parents[2]


def _services() -> dict:
    return yaml.safe_load((REPO / "compose.yaml").read_text())["services"]


def _readme_section() -> str:
    text = (REPO / "README.md").read_text()
    return text.split("## Run it on many machines", 1)[1].split("\n## ", 1)[0]


def test_compose_has_the_tiers_and_their_commands_exist_in_the_cli() -> None:
    services = _services()
    assert {"api", "worker", "rabbitmq", "postgres", "minio"} <= set(services)
    parser = _build_parser()
    for name in ("api", "worker"):
        args = parser.parse_args(services[name]["command"])  # SystemExit (status 2) for an unknown option
        assert args.func.__name__ == {"api": "_cmd_serve", "worker": "_cmd_worker"}[name]
    assert parser.parse_args(services["api"]["command"]).workers == 0
    assert parser.parse_args(services["worker"]["command"]).devices == "cuda:0"
    with pytest.raises(SystemExit):
        parser.parse_args(["worker", "--no-such-option"])


def test_compose_settings_are_the_documented_ones_and_valid() -> None:
    section = _readme_section()
    for name in ("api", "worker"):
        env = {k: str(v) for k, v in services_env(name).items()}
        ours = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
        for key in ours:
            field = key[len(ENV_PREFIX) :]
            assert field.lower() in Settings.model_fields, key
            documented = f"`{field}`" in section or f"..._{field}`" in section or key in section
            assert documented, f"{key} is not documented in the README's section"
        cfg = Settings.from_env(ours)  # every value valid
        assert cfg.broker_url.startswith("amqp://") and cfg.database_url.startswith("postgresql://")
        assert cfg.storage_url.startswith("s3://")
        # the object store endpoint is a service of the file, and so are the broker and ledger hosts
        assert env["AWS_ENDPOINT_URL"].split("//")[1].split(":")[0] in _services()
        for url in (cfg.broker_url, cfg.database_url):
            assert re.search(r"@([^:/]+)", url).group(1) in _services()  # type: ignore[union-attr]


def services_env(name: str) -> dict:
    return _services()[name]["environment"]


def test_dockerfile_is_cuda_runtime_wheels_only_and_non_root() -> None:
    text = (REPO / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert froms[-1].startswith("nvidia/cuda:") and "-runtime-" in froms[-1]
    installs = [line for line in text.splitlines() if "pip install" in line]
    assert installs and all("--only-binary=:all:" in line for line in installs)
    user = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert user and user[-1] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["meshforge"\]', text, flags=re.M)
