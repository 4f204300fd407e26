"""python -m kvm COMMAND ...: the umbrella command."""

import sys

from kvm.cli import umbrella

sys.exit(umbrella())
