"""`python -m workers.runtime ...` and the bundle's entry point: the worker's command line."""
from __future__ import annotations

import sys

from workers.runtime.worker import main

if __name__ == "__main__":
    sys.exit(main())
