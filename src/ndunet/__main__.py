"""``python -m ndunet``: the same as the ``ndunet`` command."""

import sys

from ndunet.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
