"""NViR Agent: live bright-field spheroid viability monitoring beside a plate microscope."""

__version__ = "0.1.0"
