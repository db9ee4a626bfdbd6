"""`python -m registry_verify` (what scripts/verify runs)."""

import sys

from registry_verify.cli import main

sys.exit(main())
