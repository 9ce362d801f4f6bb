"""``python -m proxy`` is the ``jargate`` command."""

from .cli import main

raise SystemExit(main())
