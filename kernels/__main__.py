"""``python -m cod_fast.kernels --compile-check``: compile every kernel for sm_80/86/89/90 on the CPU."""

import sys

from ._compile_check import main

if __name__ == "__main__":
    sys.exit(main())
