"""Named failpoints for fault-injection tests; inert unless ``REPLICATOR_FAILPOINTS`` is set.

``REPLICATOR_FAILPOINTS="copy.loaded=kill,apply.committed=kill@3"``: at the 3rd time the code
passes ``apply.committed``, the process SIGKILLs itself.  Actions: ``kill`` (SIGKILL, no cleanup,
like a power cut), ``error`` (raise RuntimeError), ``sleep:N`` (N seconds), ``wait:PATH`` (until
the file PATH exists: a test makes a change at that exact point, then lets the process go on).  A point may be
qualified by a table (``copy.loaded:public.t``), matched when the code passes that table.
"""

from __future__ import annotations

import logging
import os
import signal
from collections import Counter
from typing import Optional

_hits: Counter = Counter()


def _parse(spec: str) -> dict[str, tuple[str, int]]:
    out = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, action = item.partition("=")
        action, _, nth = action.partition("@")
        out[name] = (action or "kill", int(nth or 1))
    return out


_POINTS = _parse(os.environ.get("REPLICATOR_FAILPOINTS", ""))


def failpoint(name: str, table: Optional[str] = None) -> None:
    """Trigger the action configured for ``name`` (or ``name:table``) on its nth pass."""
    if not _POINTS:
        return
    for key in (f"{name}:{table}" if table else None, name):
        if key and key in _POINTS:
            action, nth = _POINTS[key]
            _hits[key] += 1
            if _hits[key] == nth:
                _fire(key, action)


def _fire(key: str, action: str) -> None:
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "error":
        raise RuntimeError(f"failpoint {key}")
    elif action.startswith("sleep:"):  # a stalled step; a stop request ends it (stopping.py)
        from . import stopping

        logging.getLogger(__name__).warning("failpoint %s: sleeping %s", key, action[6:])
        stopping.sleep(float(action.split(":", 1)[1]))
    elif action.startswith("wait:"):
        from . import stopping

        path = action[5:]
        logging.getLogger(__name__).warning("failpoint %s: waiting for %s", key, path)
        while not os.path.exists(path) and not stopping.sleep(0.05):
            pass
