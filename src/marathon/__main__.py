"""`python -m marathon` is the `marathon` command."""

import sys

from .cli import main

sys.exit(main())
