"""`python -m basam_hf.cli`: the `basam-hf` command (as `accelerate launch -m basam_hf.cli ...` runs it)."""

import sys

from . import main

sys.exit(main())
