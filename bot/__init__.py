"""SignalDesk's Telegram face and its command line (see docs/architecture.md).

Every entry point (``python -m bot``, the ``signaldesk`` script) imports this package
before anything builds a pydantic model, so the process-wide default set here holds for
all of them: ``PYDANTIC_DISABLE_PLUGINS=__all__`` unless the environment already sets
it. Pydantic otherwise reads the entry points of every installed distribution, looking for
plugins, when it builds its first validator (about 15 ms of CPU at every start and every
command); SignalDesk uses none. Any other value, empty included, leaves pydantic's own
rules in force (empty: load every installed plugin; see docs/operations.md).
"""

import os

os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
