"""Moved: the e2e suite's support code is now the package `testbed` (shared with bench/).

This re-export keeps branches written against the old module working while they land;
import from `testbed.<module>` in new code. To be deleted once no branch uses it.
"""

from testbed import E2E_STACK_LABEL
from testbed.clients import *  # noqa: F403
from testbed.hosts_file import *  # noqa: F403
from testbed.pebble import *  # noqa: F403
from testbed.stack import *  # noqa: F403
from testbed.trust import *  # noqa: F403
from testbed.upstreams import *  # noqa: F403

__all__ = ["E2E_STACK_LABEL"]  # the star imports carry the rest
