"""`python -m nvir_agent` runs the command-line interface."""

import sys

from nvir_agent.cli.main import main

sys.exit(main())
