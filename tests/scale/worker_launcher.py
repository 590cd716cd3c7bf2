"""Test launcher: ``meshforge worker`` with test-only behaviour that no setting, variable or option reaches.

``python tests/scale/worker_launcher.py STAGE_S UNWRAP_S OOM_ABOVE FAIL [worker options…]``: a pause of
``STAGE_S`` at every stage boundary (:data:`meshforge.service.jobs.TEST_STAGE_DELAY_S`) and of ``UNWRAP_S``
before xatlas (:data:`meshforge.mesh.uv.TEST_DELAY_S`), so a test can kill a worker mid-job; with
``OOM_ABOVE`` > 0 every generate run at a grid resolution above it raises :class:`MemoryError` (out of
memory, as a too-large job does on a GPU); with ``FAIL`` = 1 every generate run raises an internal error.
"""

from __future__ import annotations

import sys

from meshforge import pipeline
from meshforge.cli import main
from meshforge.mesh import uv
from meshforge.service import jobs

if __name__ == "__main__":
    jobs.TEST_STAGE_DELAY_S = float(sys.argv[1])
    uv.TEST_DELAY_S = float(sys.argv[2])
    oom_above, fail = int(sys.argv[3]), sys.argv[4] == "1"
    real = pipeline.generate

    def generate(image, backend, config=None, **kw):  # type: ignore[no-untyped-def]
        if fail:
            raise RuntimeError("the test backend always fails")
        if oom_above and config is not None and config.extract.resolution > oom_above:
            raise MemoryError()
        return real(image, backend, config, **kw)

    pipeline.generate = generate
    sys.exit(main(["worker", *sys.argv[5:]]))
