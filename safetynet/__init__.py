"""Safety Net's one command line, ``safetynet``, and the demo: the top layer.

The parts live in their own packages (``edge_agent``, ``cloud_core``, ``viewer``, ``simulators``,
``provisioning``) over the shared runtime layer (``runtime``); this package puts them together.
"""

from runtime import __version__

__all__ = ["__version__"]
