"""Helpers shared by test modules (tests/conftest.py puts this folder on sys.path)."""

import sys

#: how tests start the CLI in a child process: the running interpreter, no PATH assumptions
KDSRC = [sys.executable, "-m", "kdsrc"]
