"""``python -m evodenoise`` and the ``evodenoise`` command.

Signals are handled from the first instant: the imports of the command line take a tenth of a
second, and Ctrl-C or SIGTERM then must exit with code 130 and one line, like later on (no
output exists yet). The command line installs its own handlers once it runs.
"""

import os
import signal


def _interrupted(signum, frame) -> None:
    os.write(2, b"\ninterrupted; no partial output was written\n")
    os._exit(130)


def run() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupted)
    from .cli import main

    main()


if __name__ == "__main__":
    run()
