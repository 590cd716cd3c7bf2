"""One device syntax and one ``auto`` rule for the CLI, the Python API and the service."""

from __future__ import annotations

import pytest

from meshforge.cli import main
from meshforge.devices import check_device, cuda_count, resolve_device, resolve_devices
from meshforge.errors import BackendError, InputError
from meshforge.service.settings import Settings, SettingsError


@pytest.mark.parametrize(
    ("spec", "checked"), [("auto", "auto"), ("CPU", "cpu"), ("cuda", "cuda:0"), ("cuda:1", "cuda:1")]
)
def test_every_entry_point_accepts_the_same_spellings(spec, checked):
    assert check_device(spec) == checked
    assert Settings.from_env({"MESHFORGE_SERVICE_DEVICES": spec}).devices == (checked,)


@pytest.mark.parametrize("spec", ["gpu", "cuda:", "cuda:x", "cuda:-1", "cuda1"])
def test_unknown_spellings_are_refused_everywhere(spec, capsys):
    with pytest.raises(InputError, match="unknown device"):
        check_device(spec)
    with pytest.raises(SettingsError, match="unknown device"):
        Settings.from_env({"MESHFORGE_SERVICE_DEVICES": spec})
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "x.png", "--device", spec])
    assert exit_.value.code == 2 and "unknown device" in capsys.readouterr().err


def test_auto_is_the_first_cuda_device_or_the_cpu():
    n = cuda_count()
    assert resolve_device("auto") == ("cuda:0" if n else "cpu")
    assert resolve_devices(("auto",)) == (tuple(f"cuda:{i}" for i in range(n)) or ("cpu",))
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(InputError, match="cannot be combined"):
        resolve_devices(("auto", "cpu"))


def test_a_cuda_device_that_is_not_there_is_one_error_line(tmp_path, shared_images, capsys):
    missing = f"cuda:{cuda_count()}"
    with pytest.raises(BackendError, match="PyTorch sees"):
        resolve_device(missing)
    code = main(["generate", str(shared_images / "triposr__chair.png"), "-o", str(tmp_path), "--device", missing])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: device") and "PyTorch sees" in err[-1]  # a bad command line
    assert not list(tmp_path.iterdir())
