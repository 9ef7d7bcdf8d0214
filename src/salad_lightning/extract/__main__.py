"""``python -m salad_lightning.extract VIDEOS OUT``: see ``extract/cli.py``."""

import sys

from salad_lightning.extract.cli import main

if __name__ == "__main__":
    sys.exit(main())
