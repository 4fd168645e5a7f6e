"""`python -m nsgan.cli ...` runs the `nsgan` command."""

import sys

from nsgan.cli.main import main

sys.exit(main())
