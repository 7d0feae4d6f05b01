"""``python -m umamba_seg <command>``: same as the ``umamba-seg`` entry point."""

import sys

from umamba_seg.cli import main

if __name__ == "__main__":
    sys.exit(main())
