"""`python -m divjax ...`: the `divjax` command (`divjax.frontends.cli`)."""

import sys

from divjax.frontends.cli import main

if __name__ == "__main__":
    sys.exit(main())
