"""Entry point of the frozen `nvir-agent` executable (PyInstaller)."""

import multiprocessing
import sys

from nvir_agent.cli.main import main

if __name__ == "__main__":
    multiprocessing.freeze_support()  # training's data loader workers re-enter here
    sys.exit(main())
