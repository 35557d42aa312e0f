"""``python -m pifnet_infer`` runs the CLI."""

import sys

from pifnet_infer.cli import main

sys.exit(main())
