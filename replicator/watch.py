"""Everything that watches a running pipeline, started and stopped around ``migrate``/``mirror``:
the slot watcher, the Prometheus exporter (``--metrics-port``) and the progress display."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Optional

from . import logs
from .metrics import MetricsExporter, SlotWatcher
from .progress import ProgressDisplay, choose_mode


@contextlib.contextmanager
def watching(
    pipeline, metrics_port: Optional[int] = None, metrics_host: str = "127.0.0.1", progress: bool = True
) -> Iterator[dict]:
    """Yields ``{"exporter": …, "display": …, "slot": …}`` (None where not started)."""
    tel = pipeline.telemetry
    mode = choose_mode(progress, log_format=logs.current_format())
    slot = None
    if pipeline.slot and (metrics_port is not None or mode == "live"):  # a query every 10 s
        slot = SlotWatcher(pipeline.opts.source, pipeline.slot)
    exporter = MetricsExporter(tel, metrics_port, metrics_host, slot) if metrics_port is not None else None
    display = ProgressDisplay(
        tel, mode, slot=(lambda: slot.figures) if slot else None, planned=lambda: len(pipeline.mappings)
    )
    started: list[MetricsExporter | SlotWatcher | ProgressDisplay] = []
    try:
        if exporter is not None:  # first: a port in use is an option error, before anything runs
            exporter.start()
            started.append(exporter)
        if slot is not None:
            slot.start()
            started.append(slot)
        display.start()
        started.append(display)
        yield {"exporter": exporter, "display": display, "slot": slot}
    finally:
        for part in reversed(started):
            part.stop()
