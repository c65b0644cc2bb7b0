"""What a sealed container may and may not do, tried from inside the workload itself (a
`docker exec` is not a descendant of the container's entrypoint, so it is not under the
entrypoint's Landlock domain).

Usage: python3 -c "$(cat landlock_probe.py)" MODE PORT DATA_DIR
  train:   write DATA_DIR/y, listen on 127.0.0.1:PORT and connect to it, run python3 again
  hostile: the same, then exec /bin/sh, exec a copy of python3 made in DATA_DIR, bind
           PORT+1, connect to PORT+2
Prints one JSON object: each attempt's outcome, "ok" or the errno's name.
"""
import errno
import json
import os
import socket
import subprocess
import sys

mode, port, data = sys.argv[1], int(sys.argv[2]), sys.argv[3]
results = {}


def attempt(name, f):
    try:
        f()
        results[name] = "ok"
    except OSError as e:
        results[name] = errno.errorcode.get(e.errno, str(e.errno))
    except subprocess.CalledProcessError as e:
        results[name] = "exit %d" % e.returncode


def write():
    with open(os.path.join(data, "y"), "w") as f:
        f.write("y")


def listen_and_connect():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(1)
    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    c.close()
    s.close()


def run_python():
    subprocess.run([sys.executable, "-c", "pass"], check=True)


def exec_sh():
    subprocess.run(["/bin/sh", "-c", "true"], check=True)


def exec_copy():
    # Made with the calls the training made (open, write), not shutil's copy_file_range
    # and chmod, which the seccomp profile would refuse before Landlock is asked.
    copy = os.path.join(data, "python-copy")
    with open(sys.executable, "rb") as src:
        content = src.read()
    fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o755)
    with os.fdopen(fd, "wb") as dst:
        dst.write(content)
    subprocess.run([copy, "-c", "pass"], check=True)


def bind_other():
    s = socket.socket()
    s.bind(("127.0.0.1", port + 1))
    s.close()


def connect_other():
    socket.create_connection(("127.0.0.1", port + 2), timeout=5).close()


attempt("write", write)
attempt("listen_and_connect", listen_and_connect)
attempt("run_python", run_python)
if mode == "hostile":
    attempt("exec_sh", exec_sh)
    attempt("exec_copy", exec_copy)
    attempt("bind_other", bind_other)
    attempt("connect_other", connect_other)
print(json.dumps(results, sort_keys=True), flush=True)
if mode == "train":
    # A service lives longer than this probe: give the recorder time to read the facts of
    # the directory it wrote (owner, mode) from the live container.
    import time

    time.sleep(1)
