"""Shared by the examples: where the proxy is (DEFIBUS_PROXY, default http://127.0.0.1:8080)
and the package path when run from a checkout."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROXY = os.environ.get("DEFIBUS_PROXY", "http://127.0.0.1:8080")
