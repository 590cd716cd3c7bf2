"""Test launcher: ``meshforge serve`` with a pause at every stage boundary of every job.

``python tests/service/slow_serve.py STAGE_SECONDS UNWRAP_SECONDS [serve options…]`` sets
:data:`meshforge.service.jobs.TEST_STAGE_DELAY_S` and :data:`meshforge.mesh.uv.TEST_DELAY_S` (which no
setting, variable or option can change) and runs the real ``meshforge serve`` command, so tests can watch,
cancel, drain or kill a server mid-job (``UNWRAP_SECONDS``: the unwrap worker sleeps that long before
xatlas, so a kill lands while it runs).
"""

from __future__ import annotations

import sys

from meshforge.cli import main
from meshforge.mesh import uv
from meshforge.service import jobs

if __name__ == "__main__":
    jobs.TEST_STAGE_DELAY_S = float(sys.argv[1])
    uv.TEST_DELAY_S = float(sys.argv[2])
    sys.exit(main(["serve", *sys.argv[3:]]))
