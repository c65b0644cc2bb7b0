#!/usr/bin/python3
"""A small threaded HTTP service for the integration tests (runs in profiler-test/debian-apps).

It never forks or runs a subprocess: every request is served by a thread of
http.server.ThreadingHTTPServer, and a heartbeat thread starts before the first request, so
the process is multi-threaded from the start (what profiler must follow in real services).

Usage: python3 /opt/app/service.py [PORT]   (or env PORT; default 8080), as user app (1500).

Endpoints:
  GET  /health         200 "ok"
  POST /items/<name>   stores the body in DATA_DIR/<name>, 201 (400 for names with '/' or
                       starting with '.')
  GET  /items/<name>   the stored body, or 404
  POST /cache/<key>    sets <key> in memcached (env MEMCACHED=host:port), 201; 503 unset
  GET  /cache/<key>    the value from memcached, or 404; 503 when MEMCACHED is unset

Environment: PORT, MEMCACHED, APP_DATA_DIR (default /var/lib/app).
"""

import http.server
import os
import signal
import socket
import sys
import threading
import time

DATA_DIR = os.environ.get("APP_DATA_DIR", "/var/lib/app")
HEARTBEAT = os.path.join(DATA_DIR, ".heartbeat")
HEARTBEAT_PERIOD = 0.2
MAX_BODY = 1 << 20


def heartbeat():
    """Writes a time stamp every 0.2 s: a temp file then os.replace, so readers never see a
    half-written file."""
    tmp = HEARTBEAT + ".tmp"
    while True:
        try:
            with open(tmp, "w") as f:
                f.write("%.3f\n" % time.time())
            os.replace(tmp, HEARTBEAT)
        except OSError as e:
            print("service: heartbeat: %s" % e, file=sys.stderr, flush=True)
        time.sleep(HEARTBEAT_PERIOD)


def valid_name(name):
    return name != "" and "/" not in name and not name.startswith(".")


def valid_key(key):
    # The memcached text protocol: at most 250 bytes, no spaces or control characters.
    return 0 < len(key.encode()) <= 250 and all(33 <= ord(c) < 127 for c in key)


class MemcachedError(Exception):
    pass


def memcached_connect(addr):
    """Connects to host:port; the host is resolved with getaddrinfo so that compose service
    names (and IPv6 literals in brackets) work."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port:
        raise MemcachedError("MEMCACHED must be host:port, not %r" % addr)
    host = host.strip("[]")
    last = None
    for family, type_, proto, _, sockaddr in socket.getaddrinfo(
        host, int(port), type=socket.SOCK_STREAM
    ):
        s = socket.socket(family, type_, proto)
        s.settimeout(5)
        try:
            s.connect(sockaddr)
            return s
        except OSError as e:
            s.close()
            last = e
    raise MemcachedError("cannot connect to %s: %s" % (addr, last))


def read_until(sock, buf, end):
    while end not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise MemcachedError("memcached closed the connection")
        buf += chunk
    return buf


def memcached_set(addr, key, value):
    with memcached_connect(addr) as s:
        s.sendall(b"set %s 0 0 %d\r\n%s\r\n" % (key.encode(), len(value), value))
        reply = read_until(s, b"", b"\r\n")
        if reply != b"STORED\r\n":
            raise MemcachedError("set: %r" % reply)


def memcached_get(addr, key):
    """The value, or None when memcached does not have the key."""
    with memcached_connect(addr) as s:
        s.sendall(b"get %s\r\n" % key.encode())
        buf = read_until(s, b"", b"\r\n")
        if buf.startswith(b"END\r\n"):
            return None
        header, _, rest = buf.partition(b"\r\n")
        parts = header.split()
        if len(parts) < 4 or parts[0] != b"VALUE":
            raise MemcachedError("get: %r" % header)
        size = int(parts[3])
        # The data block, then "\r\nEND\r\n" (7 bytes).
        while len(rest) < size + 7:
            chunk = s.recv(65536)
            if not chunk:
                raise MemcachedError("memcached closed the connection")
            rest += chunk
        if rest[size:size + 7] != b"\r\nEND\r\n":
            raise MemcachedError("get: bad reply after the data")
        return rest[:size]


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "profiler-test-app/1"
    protocol_version = "HTTP/1.1"

    def reply(self, code, body=b"", content_type="text/plain"):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > MAX_BODY:
            raise ValueError("bad Content-Length")
        return self.rfile.read(length)

    def route(self):
        """(kind, argument) from the path without its query string."""
        path = self.path.split("?", 1)[0]
        for prefix in ("/items/", "/cache/"):
            if path.startswith(prefix):
                return prefix.strip("/"), path[len(prefix):]
        return path, None

    def do_GET(self):
        kind, arg = self.route()
        if kind == "/health":
            self.reply(200, "ok")
        elif kind == "items":
            if not valid_name(arg):
                return self.reply(400, "bad name\n")
            try:
                with open(os.path.join(DATA_DIR, arg), "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                return self.reply(404, "no such item\n")
            self.reply(200, data, "application/octet-stream")
        elif kind == "cache":
            self.cache(arg, None)
        else:
            self.reply(404, "not found\n")

    def do_POST(self):
        kind, arg = self.route()
        try:
            body = self.body()
        except ValueError as e:
            return self.reply(400, "%s\n" % e)
        if kind == "items":
            if not valid_name(arg):
                return self.reply(400, "bad name\n")
            with open(os.path.join(DATA_DIR, arg), "wb") as f:
                f.write(body)
            self.reply(201, "stored\n")
        elif kind == "cache":
            self.cache(arg, body)
        else:
            self.reply(404, "not found\n")

    def cache(self, key, value):
        addr = os.environ.get("MEMCACHED")
        if not addr:
            return self.reply(503, "MEMCACHED is not set\n")
        if not valid_key(key):
            return self.reply(400, "bad key\n")
        try:
            if value is None:
                got = memcached_get(addr, key)
                if got is None:
                    return self.reply(404, "not cached\n")
                self.reply(200, got, "application/octet-stream")
            else:
                memcached_set(addr, key, value)
                self.reply(201, "stored\n")
        except (OSError, MemcachedError) as e:
            self.reply(502, "memcached: %s\n" % e)


def main():
    port = int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PORT", "8080"))
    # As PID 1 in a container, a signal without a handler is ignored: without this,
    # `docker stop` would wait for its timeout and then SIGKILL.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    threading.Thread(target=heartbeat, name="heartbeat", daemon=True).start()
    http.server.ThreadingHTTPServer.daemon_threads = True
    server = http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler)
    print("service: listening on port %d, data in %s" % (port, DATA_DIR), flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
