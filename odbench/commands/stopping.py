"""Ctrl-C and SIGTERM as one line, once the command has cleaned up (``eval``, ``score --config``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from odbench.errors import UserError


@contextmanager
def interrupted_in_one_line(kept: str) -> Iterator[None]:
    """Ctrl-C, or SIGTERM (a time limit, a pre-emption, ``timeout``, ``kill``), ends the command
    as one line, ``terminated (SIGTERM); <kept>`` or ``interrupted; <kept>``, once it has
    cleaned up (workers stopped, temp files removed, claims released): SIGTERM raises
    KeyboardInterrupt here, as Ctrl-C does, instead of ending the process at once.  ``kept``
    says what is kept and how to resume."""
    import signal
    import threading

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt("SIGTERM")

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, terminate) if main else None
    try:
        yield
    except KeyboardInterrupt as e:
        how = "terminated (SIGTERM)" if e.args == ("SIGTERM",) else "interrupted"
        raise UserError(f"{how}; {kept}") from e
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
