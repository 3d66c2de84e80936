"""Beam's local worker command under `changesweep sweep`: `python -S warm_client.py FOLDER`.

Hands the environment Beam gave this worker (its control and logging addresses, pipeline
options, worker id) to a waiting worker process in FOLDER (`warm_workers.serve`), waits for it
to finish, and exits with its status. Standard library only, run without `site`, so it starts in
milliseconds. With no waiting process left, it becomes the worker Beam would have started.
"""
import json
import os
import socket
import sys


def candidates(folder: str, worker_id: str | None) -> list[str]:
  """The waiting processes' sockets, the one matching this worker's number first."""
  try:
    names = sorted(n for n in os.listdir(folder) if n.endswith(".sock"))
  except OSError:
    return []
  digits = "".join(c for c in (worker_id or "") if c.isdigit())
  if names and digits:
    first = int(digits) % len(names)
    names = names[first:] + names[:first]
  return [os.path.join(folder, n) for n in names]


def hand_over(path: str, payload: bytes) -> int | None:
  """This worker's status once the process at `path` ran it; None if that process was taken."""
  conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
  try:
    conn.connect(path)
    if conn.recv(1) != b"R":  # closed: another client took it
      return None
    conn.sendall(payload)
  except OSError:
    conn.close()
    return None
  reply = b""
  try:
    while not reply.endswith(b"\n"):
      chunk = conn.recv(64)
      if not chunk:
        break
      reply += chunk
  except OSError:
    pass
  conn.close()
  text = reply.decode().strip()
  return int(text) if text.lstrip("-").isdigit() else 1  # it died while running the worker


def main(folder: str) -> None:
  payload = (json.dumps(dict(os.environ)) + "\n").encode()
  for path in candidates(folder, os.environ.get("WORKER_ID")):
    code = hand_over(path, payload)
    if code is not None:
      sys.exit(code)
  os.execv(sys.executable, [sys.executable, "-m", "apache_beam.runners.worker.sdk_worker_main"])


if __name__ == "__main__":
  main(sys.argv[1])
