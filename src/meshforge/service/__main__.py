"""``python -m meshforge.service``: run the HTTP service (see :mod:`meshforge.service.entry`)."""

from .entry import main

raise SystemExit(main())
