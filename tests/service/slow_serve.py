"""Test launcher: ``meshforge serve`` with a pause at every stage boundary of every job.

``python tests/service/slow_serve.py SECONDS [serve options…]`` sets
:data:`meshforge.service.jobs.TEST_STAGE_DELAY_S` (which no setting, variable or option can change) and
runs the real ``meshforge serve`` command, so tests can watch, cancel, drain or kill a server mid-job.
"""

from __future__ import annotations

import sys

from meshforge.cli import main
from meshforge.service import jobs

if __name__ == "__main__":
    jobs.TEST_STAGE_DELAY_S = float(sys.argv[1])
    sys.exit(main(["serve", *sys.argv[2:]]))
