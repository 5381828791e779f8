"""divjax: asynchronous decentralized learning, n nodes as one array program on a simulated clock.

What users may import is listed once, in `divjax.api` (re-exported here); the subpackages are
the implementation (docs/concepts/architecture.md).
"""

from divjax import api
from divjax.api import *  # noqa: F403 (the names are listed in divjax.api.__all__)

__version__ = "0.1.0"

__all__ = ["api"]
__all__ += api.__all__
