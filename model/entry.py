"""Leaving a command that may have run tf.Transform: exit with the real status, now."""
from __future__ import annotations

import os
import sys
from typing import Callable


def exit_after(main: Callable[[], int | None]) -> None:
  """Runs `main`, flushes, and ends the process with its status.

  A process that ran a tf.Transform analysis may crash at interpreter exit after its work is
  done; `os._exit` skips the interpreter's teardown, so the status is the command's own.
  """
  code = main()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code or 0)
