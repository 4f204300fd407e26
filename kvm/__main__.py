"""python -m kvm COMMAND ...: the umbrella command."""

import sys

from .cli import umbrella

sys.exit(umbrella())
