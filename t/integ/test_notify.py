"""sd_notify: exgate built with libsystemd tells systemd (Type=notify) where
it stands, on the datagram socket named by $NOTIFY_SOCKET, as systemd reads
it:

* READY=1 once every listener and the admin endpoint are open: the moment
  it arrives, a WebSocket listener, a TCP listener and the admin port all
  accept a connection;
* RELOADING=1 (with MONOTONIC_USEC, which systemd 253+ asks for) then
  READY=1 around the configuration read of a SIGHUP, a valid and an invalid
  one alike (the running configuration is kept either way);
* STOPPING=1 at SIGTERM, and exit 0;
* no READY=1 at all when a listener cannot open (its port is taken):
  exgate exits 1 without having said it was ready.

Skipped (77) when exgate was built without libsystemd.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from upstream_harness import BUILDDIR, EXGATE, Fail, check, free_port  # noqa: E402


def have_systemd():
    try:
        with open(os.path.join(BUILDDIR, "config.h")) as f:
            return "#define HAVE_SYSTEMD 1" in f.read()
    except OSError:
        return False


def recv(sock, timeout):
    """The next notification (the datagram's text), or Fail."""
    sock.settimeout(timeout)
    try:
        return sock.recv(4096).decode()
    except socket.timeout:
        raise Fail("no notification within %.0f s" % timeout)


def connects(port):
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def main():
    if not have_systemd():
        print("SKIP: exgate was built without libsystemd (configure "
              "--with-systemd, apt-get install libsystemd-dev)")
        sys.exit(77)
    tmp = tempfile.mkdtemp(prefix="xg-notify-")
    proc = None
    try:
        path = os.path.join(tmp, "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        ws, tcp, admin = free_port(), free_port(), free_port()
        conf = os.path.join(tmp, "exgate.conf")
        text = ("error_log %s/exgate.log debug;\n"
                "upstream u {\n    url ws://127.0.0.1:1/ws/api/v2;\n"
                "    protocol deribit;\n    reconnect fixed { delay 10s; }\n"
                "}\n"
                "listen 127.0.0.1:%d websocket upstream=u;\n"
                "listen 127.0.0.1:%d tcp upstream=u;\n"
                "admin 127.0.0.1:%d;\n" % (tmp, ws, tcp, admin))
        with open(conf, "w") as f:
            f.write(text)
        env = dict(os.environ, NOTIFY_SOCKET=path)
        proc = subprocess.Popen([EXGATE, "-c", conf], env=env,
                                stdin=subprocess.DEVNULL)

        msg = recv(sock, 10)
        # checked before anything else: the ports must be open by now
        for port in (ws, tcp, admin):
            try:
                connects(port)
            except OSError as e:
                raise Fail("READY=1 came before port %d was open: %s"
                           % (port, e))
        check(msg.split("\n")[0] == "READY=1", "first notification %r" % msg)

        for label, extra in (("valid", ""), ("invalid", "bogus;\n")):
            with open(conf, "w") as f:
                f.write(text + extra)
            proc.send_signal(signal.SIGHUP)
            msg = recv(sock, 10)
            lines = msg.split("\n")
            check(lines[0] == "RELOADING=1",
                  "%s reload: first notification %r" % (label, msg))
            check(any(l.startswith("MONOTONIC_USEC=") and l[15:].isdigit()
                      for l in lines),
                  "%s reload: RELOADING=1 without MONOTONIC_USEC: %r"
                  % (label, msg))
            msg = recv(sock, 10)
            check(msg.split("\n")[0] == "READY=1",
                  "%s reload: second notification %r" % (label, msg))
            check(proc.poll() is None, "exgate exited on a %s reload" % label)
            connects(ws)

        proc.send_signal(signal.SIGTERM)
        msg = recv(sock, 10)
        check(msg.split("\n")[0] == "STOPPING=1",
              "at SIGTERM: notification %r" % msg)
        rc = proc.wait(10)
        check(rc == 0, "exit %r after SIGTERM" % rc)
        proc = None

        # a listener that cannot open: no READY=1, exit 1
        taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with open(conf, "w") as f:
            f.write(text.replace("127.0.0.1:%d tcp" % tcp, "127.0.0.1:%d tcp"
                                 % taken.getsockname()[1]))
        proc = subprocess.Popen([EXGATE, "-c", conf], env=env,
                                stdin=subprocess.DEVNULL)
        rc = proc.wait(10)
        proc = None
        taken.close()
        check(rc == 1, "exit %r with a listener port taken" % rc)
        sock.setblocking(False)
        try:
            msg = sock.recv(4096).decode()
        except BlockingIOError:
            msg = None
        check(msg is None or not msg.startswith("READY=1"),
              "READY=1 though a listener could not open: %r" % msg)
    except Fail as e:
        print("FAIL: %s" % e)
        try:
            with open(os.path.join(tmp, "exgate.log")) as f:
                sys.stdout.write(f.read()[-4000:])
        except OSError:
            pass
        sys.exit(1)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    print("PASS")


if __name__ == "__main__":
    main()
