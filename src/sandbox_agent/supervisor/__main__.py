"""Run the launcher: ``python -I -S .../sandbox_agent/supervisor <socket fd> <runs fd> [<exits fd>]``.

Run by path with ``-I -S`` there is no site-packages on ``sys.path``: only the standard
library and this package can be imported, which is the point. The folder holding
``sandbox_agent`` goes first so that the package's relative imports work;
``sandbox_agent/__init__.py`` imports nothing eagerly, so the client and the server
stay out of this process.
"""

import os
import sys

if __name__ == "__main__":
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from sandbox_agent.supervisor.launcher import launcher_main

    launcher_main(*(int(arg) for arg in sys.argv[1:4]))
