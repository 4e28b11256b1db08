"""What every command shares: one line and an exit status for every failure a user can cause, and the way an
interrupt unwinds (nothing half-written is kept)."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import click

from ..errors import EdgemedError, first_line

EXIT_USER_ERROR = 2
EXIT_INTERNAL = 3


_INTERRUPTED = []


def _on_signal(signum, frame):  # noqa: ARG001 - signal handler signature
    # SIGTERM (timeout, CI cancellation, container stop) unwinds like Ctrl-C, so every temporary
    # directory and half-written bundle is removed on the way out. Remember the signal: raised inside
    # an extension module's import, KeyboardInterrupt can surface as "ImportError: initialization
    # failed", which must still read as an interrupt.
    _INTERRUPTED.append(signum)
    raise KeyboardInterrupt


def _interrupted() -> None:
    signum = _INTERRUPTED[-1] if _INTERRUPTED else signal.SIGINT
    click.echo(f"edgemed: interrupted ({signal.Signals(signum).name}); nothing half-written was kept", err=True)
    sys.exit(128 + signum)


class Group(click.Group):
    def invoke(self, ctx: click.Context):
        signal.signal(signal.SIGINT, _on_signal)
        signal.signal(signal.SIGTERM, _on_signal)
        try:
            return super().invoke(ctx)
        except EdgemedError as exc:
            click.echo(f"edgemed: error: {exc}", err=True)
            sys.exit(EXIT_USER_ERROR)
        except BrokenPipeError:
            # The reader (e.g. `| head`) went away: not an error of ours, and nothing more to say.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except KeyboardInterrupt:
            _interrupted()
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - last resort: one line, traceback on request
            if _INTERRUPTED:
                _interrupted()
            if os.environ.get("EDGEMED_DEBUG"):
                raise
            click.echo(f"edgemed: internal error: {type(exc).__name__}: {first_line(exc)}; "
                       "rerun with EDGEMED_DEBUG=1 for the traceback and report it", err=True)
            sys.exit(EXIT_INTERNAL)



def write_json(path: Path, data: dict) -> None:
    from ..atomic import write_atomic

    write_atomic(path, json.dumps(data, indent=2) + "\n")
