"""Operations: test-only knobs kept out of the settings."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from meshforge.service.settings import Settings, SettingsError


# -- test-only knobs ---------------------------------------------------------------------------------
def test_the_stage_delay_cannot_be_set_in_production(tmp_path):
    with pytest.raises(SettingsError, match="MESHFORGE_SERVICE_TEST_STAGE_DELAY_S: unknown setting"):
        Settings.from_env({"MESHFORGE_SERVICE_TEST_STAGE_DELAY_S": "0.4"})
    with pytest.raises(ValueError, match="test_stage_delay_s"):
        Settings(test_stage_delay_s=0.4)  # type: ignore[call-arg]
    env = {"MESHFORGE_SERVICE_TEST_STAGE_DELAY_S": "0.4", "PATH": "/usr/bin:/bin"}
    env.update({k: v for k, v in os.environ.items() if k == "PYTHONPATH"})
    r = subprocess.run(
        [sys.executable, "-m", "meshforge.cli", "serve", "--port", "0", "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "MESHFORGE_SERVICE_TEST_STAGE_DELAY_S: unknown setting" in r.stderr
