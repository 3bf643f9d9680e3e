"""``python -m cod_fast`` runs the ``cod-fast`` command line."""
import sys

from .cli import main

sys.exit(main())
