"""The ``radassets`` command line. Every command calls the same library functions as the assets.

Errors a user can fix (unknown dataset version, bad definition, unreachable bucket...) print one
line naming the item and the cause, and exit with status 2; nothing is half-written. So do usage
errors (a missing argument, an unknown option).

One module per command group (``datasets``, ``cohort``, ``demo``, ``dicom``, ``imaging``,
``pipeline``, ``evaluate``, ``models``, ``lineage``). The commands import the library inside their
bodies: its modules take from 0.2 s (pydantic) to tens of seconds (Dagster, torch, SimpleITK) to
import, which ``radassets --help`` would otherwise pay for every group.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

import click

from radassets import profile
from radassets.cli import cohort, datasets, demo, dicom, evaluate, imaging, lineage, models, pipeline
from radassets.cli.settings import current_settings
from radassets.errors import RadassetsError
from radassets.interrupts import Interrupted, stop_on_interrupts


class RadassetsCommandLine(click.Group):
    """The top-level group. Its ``main`` is what the console script, ``python -m radassets.cli``,
    ``radassets.cli.main`` and click's ``CliRunner`` run, so all of them print and exit alike."""

    def main(  # type: ignore[override]  # returns only on success, never click's standalone_mode result
            self, args: Sequence[str] | None = None, prog_name: str | None = None, **extra: Any) -> None:
        """Run a command line: returns when the command succeeds, else exits with its status.

        Not click's ``main``, which would print a usage error as several lines, turn an interrupt (a
        ``KeyboardInterrupt``) into a blank line and status 1, and a broken pipe into status 1: here they
        are one line with status 2, one line with 128 + the signal number, and status 0."""
        # Our progress at INFO; other libraries only when they warn (alembic, opening the Dagster instance, logs
        # every migration plugin at INFO).
        logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
        logging.getLogger("radassets").setLevel(logging.INFO)
        argv = sys.argv[1:] if args is None else list(args)
        # Ctrl-C, SIGTERM and SIGHUP stop the whole command (not just the current run): one line, exit 128 + signal
        # number (130 for Ctrl-C). A run they interrupt is marked failed in the instance.
        try:
            with stop_on_interrupts(), self.make_context(prog_name or self.name, argv, **extra) as ctx:
                # The settings are read once per command line, here; Dagster reads DAGSTER_HOME from the environment.
                current_settings().export_dagster_home()
                profile.enable(current_settings().profile)
                self.invoke(ctx)
        except click.exceptions.Exit as e:  # --help, after printing the help
            if e.exit_code:
                sys.exit(e.exit_code)
        except click.exceptions.NoArgsIsHelpError as e:  # a group without its command: its help, status 2
            e.show()
            sys.exit(e.exit_code)
        except click.UsageError as e:  # status 2 (what click gives it), one line like the other errors
            see = f" (see: {e.ctx.command_path} --help)" if e.ctx is not None else ""
            print(f"radassets: error: {e.format_message()}{see}", file=sys.stderr)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            print(f"radassets: error: {e.format_message()}", file=sys.stderr)
            sys.exit(e.exit_code)
        except RadassetsError as e:
            print(f"radassets: error: {e}", file=sys.stderr)
            sys.exit(2)
        except Interrupted as e:
            during = f" during run {e.run_id} (marked failed)" if e.run_id else ""
            print(f"radassets: interrupted by {e.signal_name}{during}: stopped, no later run started", file=sys.stderr)
            sys.exit(e.exit_status)
        except BrokenPipeError:  # output piped into `head`: not an error
            sys.stderr.close()
            sys.exit(0)


cli = RadassetsCommandLine(name="radassets", help=__doc__.splitlines()[0],
                           commands=[datasets.datasets, cohort.cohort, demo.demo, dicom.dicom, imaging.imaging,
                                     pipeline.pipeline, evaluate.evaluate, models.models, lineage.lineage])


def main(argv: Sequence[str] | None = None) -> None:
    """The console script ``radassets``; ``argv`` defaults to the process's arguments."""
    cli.main(argv)
