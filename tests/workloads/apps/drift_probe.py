"""A workload that does in production what its training run never did, for `profiler watch`.

Usage: python3 -c "$(cat drift_probe.py)" MODE DATA_DIR   (as root)
  It listens on 0.0.0.0:9000 and waits for one client (the test's trigger, after the watch
  is ready), answers "ok", writes DATA_DIR/y, chowns it to root (its own owner: no
  capability check) and runs python3 again.
  drift: then also calls getsid (a new syscall), runs /bin/true (a new program), binds port
         9001 (a new port) and chowns the file to 1:1 (CAP_CHOWN, a new capability).
It then waits 2 s, so that a watcher reading once a second sees it all, and exits.
"""
import os
import socket
import subprocess
import sys
import time

mode, data = sys.argv[1], sys.argv[2]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9000))
s.listen(1)
print("listening", flush=True)
c, _ = s.accept()
c.recv(16)
c.sendall(b"ok")
c.close()
path = os.path.join(data, "y")
with open(path, "w") as f:
    f.write("y")
os.chown(path, 0, 0)
subprocess.run([sys.executable, "-c", "pass"], check=True)
if mode == "drift":
    os.getsid(0)
    subprocess.run(["/bin/true"], check=True)
    t = socket.socket()
    t.bind(("0.0.0.0", 9001))
    t.close()
    os.chown(path, 1, 1)
print("done", flush=True)
time.sleep(2)
