"""Setup shared by every unit test folder."""

from __future__ import annotations

import sys
from pathlib import Path

# NOTE: pytest runs with --import-mode=importlib, which adds no test directory to sys.path. The
# plain helper modules next to this file (office_network) become importable through this line.
# Appending keeps every installed package ahead of the folders here.
sys.path.append(str(Path(__file__).parent))
