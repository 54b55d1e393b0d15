"""Ctrl-C and SIGTERM in a sweep: raised once as KeyboardInterrupt (later signals are ignored while the
sweep cleans up), remembered so that an error TensorFlow made of it is still handled as the interrupt, and
logged by Optuna without a traceback."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import time

# the signal that interrupted the command running in interrupts_raise_once, once one has
_received: list[str] = []


@contextlib.contextmanager
def interrupts_raise_once():
    """SIGINT (Ctrl-C) and SIGTERM raise KeyboardInterrupt once; later ones are ignored while the sweep
    cleans up (a terminal's Ctrl-C reaches the workers directly and through their parent)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {number: signal.getsignal(number) for number in signals}

    def handler(number, frame):
        for each in signals:
            signal.signal(each, signal.SIG_IGN)
        _received.append(signal.Signals(number).name)
        raise KeyboardInterrupt(signal.Signals(number).name)

    _received.clear()
    for number in signals:
        signal.signal(number, handler)
    try:
        yield
    except BaseException as error:
        raise_if_interrupted(error, lambda: None)
        raise
    finally:
        _received.clear()
        for number, action in previous.items():
            signal.signal(number, action)


def interrupted() -> str | None:
    """The signal that interrupted this command, if one has (SIGINT or SIGTERM)."""
    return _received[0] if _received else None


def as_interrupt(error: BaseException) -> BaseException:
    """The error itself, or a KeyboardInterrupt in its place when the command was interrupted: the handler's
    KeyboardInterrupt can land inside TensorFlow, whose scopes then raise their own error instead (an
    interrupt during `model.predict` leaves as RuntimeError "Exiting device scope without proper scope
    nesting"), and Optuna would record that as an ordinary failed trial and go on to the next one."""
    if isinstance(error, KeyboardInterrupt) or not interrupted():
        return error
    return KeyboardInterrupt(interrupted())


def raise_if_interrupted(error: BaseException, cleanup) -> None:
    """In an `except BaseException` block: when `error` is, or stands for (`as_interrupt`), an interrupt,
    run `cleanup()` and raise the KeyboardInterrupt; otherwise return, for the caller's own handling."""
    interrupt = as_interrupt(error)
    if not isinstance(interrupt, KeyboardInterrupt):
        return
    cleanup()
    if interrupt is error:
        raise error
    raise interrupt from error


def while_interrupted(action, what: str, attempts: int = 6) -> None:
    """Run bookkeeping (ending a run as KILLED, failing a trial) while an interrupt is being handled: a store
    busy under load (SQLite's "database is locked") is retried, and a last failure is reported, never
    raised, so the interrupt itself is what propagates and the sweep still stops with exit code 130."""
    for attempt in range(attempts):
        try:
            action()
            return
        except Exception as error:  # noqa: BLE001 - anything but the interrupt must not replace it
            if attempt == attempts - 1:
                print(f"camp: while stopping, could not {what}: {type(error).__name__}: {error}", file=sys.stderr)
                return
            time.sleep(0.1 * 2 ** attempt)


class _NoInterruptTraceback(logging.Filter):
    """Optuna logs a failed trial with its traceback: for Ctrl-C/SIGTERM the one-line message is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is KeyboardInterrupt:
            record.exc_info, record.exc_text = None, None
        return True


def quiet_interrupt_tracebacks() -> None:
    logger = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, _NoInterruptTraceback) for f in logger.filters):
        logger.addFilter(_NoInterruptTraceback())
