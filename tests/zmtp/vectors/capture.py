#!/usr/bin/python3
"""Record, byte for byte, what real libzmq sends on a ZMTP connection.

One side of every connection is libzmq (through pyzmq, so this must run under Debian's
/usr/bin/python3); the other side is a plain TCP socket driven by this script, which speaks
just enough ZMTP 3.1 (greeting, READY, WELCOME, INITIATE, PONG...) to make libzmq send the
next step. Everything libzmq sends is recorded exactly as received; what this script sends
is recorded too, so a test can replay either side. See README.md for the file format.

Usage: /usr/bin/python3 tests/zmtp/vectors/capture.py [OUTDIR]   (default: this folder)
"""
import os
import socket
import struct
import sys
import threading
import time

import zmq

TIMEOUT_S = 5.0
ENDPOINT_HOST = "127.0.0.1"
HEARTBEAT_IVL_MS = 200
HEARTBEAT_TTL_MS = 2000
ROUTING_ID = b"ID-7"
PLAIN_USER = b"admin"
PLAIN_PASS = b"secret"
ZAP_ENDPOINT = "inproc://zeromq.zap.01"

# The peer type our raw side claims in its READY so that libzmq accepts the connection.
COMPATIBLE_PEER = {
    "REQ": "ROUTER", "REP": "DEALER", "DEALER": "ROUTER", "ROUTER": "DEALER",
    "PUB": "SUB", "SUB": "PUB", "XPUB": "SUB", "XSUB": "PUB",
    "PUSH": "PULL", "PULL": "PUSH", "PAIR": "PAIR",
}


def greeting(mechanism=b"NULL", as_server=0, minor=1):
    return (b"\xff" + b"\x00" * 8 + b"\x7f" + bytes([3, minor]) + mechanism.ljust(20, b"\x00")
            + bytes([as_server]) + b"\x00" * 31)


def frame(flags, body):
    if len(body) <= 255:
        return bytes([flags, len(body)]) + body
    return bytes([flags | 0x02]) + struct.pack(">Q", len(body)) + body


def command(name, data=b""):
    return frame(0x04, bytes([len(name)]) + name + data)


def properties(pairs):
    return b"".join(bytes([len(n)]) + n + struct.pack(">I", len(v)) + v for n, v in pairs)


def metadata(socket_type, identity=None):
    pairs = [(b"Socket-Type", socket_type.encode())]
    if identity is not None:
        pairs.append((b"Identity", identity))
    return properties(pairs)


def frame_label(flags, body):
    if not flags & 0x04:
        return "msg-more" if flags & 0x01 else "msg"
    # libzmq's PLAIN ERROR is "\x05ERROR" compiled as "\x5E" "RROR" (see zmtp.md section 3).
    if body.startswith(b"\x5eRROR"):
        return "error-5e"
    n = body[0] if body else 0
    name = body[1:1 + n]
    if n and len(name) == n and name.isalpha():
        return name.decode().lower()
    return "command"


class Capture:
    """One recorded connection: the raw socket plus the log of both directions."""

    def __init__(self, name, description, meta):
        self.name = name
        self.description = description
        self.meta = meta
        self.log = []
        self.sock = None
        self.buf = b""
        self.notes = []

    def attach(self, sock):
        sock.settimeout(TIMEOUT_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock

    def send(self, label, data):
        self.sock.sendall(data)
        self.log.append(("raw", label, data))

    def _need(self, n):
        deadline = time.monotonic() + TIMEOUT_S
        while len(self.buf) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: waited for {n} bytes, have {self.buf.hex()}")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"{self.name}: libzmq closed, have {self.buf.hex()}")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_greeting(self):
        data = self._need(64)
        self.log.append(("zmq", "greeting", data))
        return data

    def read_frame(self):
        head = self._need(2)
        flags = head[0]
        if flags & 0x02:
            rest = self._need(7)
            size = struct.unpack(">Q", head[1:] + rest)[0]
            head += rest
        else:
            size = head[1]
        body = self._need(size)
        label = frame_label(flags, body)
        self.log.append(("zmq", label, head + body))
        return label, body

    def expect(self, wanted, answer_pings=True):
        """Read frames until one labelled `wanted`; libzmq's own PINGs are answered."""
        while True:
            label, body = self.read_frame()
            if label == wanted:
                return body
            if label == "ping" and answer_pings:
                self.send("pong", command(b"PONG", body[1 + 4 + 2:]))
                continue
            raise AssertionError(f"{self.name}: expected {wanted}, got {label} {body.hex()}")

    def expect_eof_or_silence(self, seconds):
        """True if libzmq closed the connection within `seconds`, False if it stayed silent."""
        self.sock.settimeout(seconds)
        try:
            chunk = self.sock.recv(1)
        except socket.timeout:
            return False
        finally:
            self.sock.settimeout(TIMEOUT_S)
        if chunk:
            raise AssertionError(f"{self.name}: unexpected byte {chunk.hex()}")
        return True

    def drain(self, seconds):
        """Records frames until libzmq closes (True) or stays silent for `seconds` (False)."""
        self.sock.settimeout(seconds)
        try:
            while True:
                self.read_frame()
        except (socket.timeout, TimeoutError):
            return False
        except (EOFError, ConnectionResetError):
            return True
        finally:
            self.sock.settimeout(TIMEOUT_S)

    def write(self, outdir):
        path = os.path.join(outdir, self.name + ".hex")
        with open(path, "w") as f:
            f.write(f"# {self.description}\n")
            f.write(f"# captured from libzmq {zmq.zmq_version()} via pyzmq {zmq.pyzmq_version()}"
                    " by capture.py\n")
            for note in self.notes:
                f.write(f"# {note}\n")
            for key, value in self.meta.items():
                f.write(f"meta {key} {value}\n")
            for direction, label, data in self.log:
                f.write(f"{direction} {label} {data.hex()}\n")
        return path


class ZapHandler:
    """An in-process ZAP handler (RFC 27) answering every request with one status code."""

    def __init__(self, ctx, status):
        self.status = status
        self.requests = []
        self.sock = ctx.socket(zmq.REP)
        self.sock.bind(ZAP_ENDPOINT)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while not self.stop.is_set():
            if not poller.poll(50):
                continue
            req = self.sock.recv_multipart()
            self.requests.append(req)
            version, request_id = req[0], req[1]
            ok = self.status == b"200"
            self.sock.send_multipart([version, request_id, self.status,
                                      b"OK" if ok else b"denied",
                                      PLAIN_USER if ok else b"", b""])

    def close(self):
        self.stop.set()
        self.thread.join()
        self.sock.close(linger=0)


def zap_note(zap):
    return "ZAP requests seen by the handler: " + "; ".join(
        "[" + ", ".join(repr(bytes(f)) for f in r) + "]" for r in zap.requests)


def libzmq_connects(ctx, cap, zsock):
    """libzmq connects to our listener: libzmq is the ZMTP client."""
    lsock = socket.create_server((ENDPOINT_HOST, 0))
    lsock.settimeout(TIMEOUT_S)
    zsock.connect(f"tcp://{ENDPOINT_HOST}:{lsock.getsockname()[1]}")
    conn, _ = lsock.accept()
    lsock.close()
    cap.attach(conn)


def libzmq_binds(ctx, cap, zsock):
    """We connect to libzmq's listener: libzmq is the ZMTP server."""
    zsock.bind(f"tcp://{ENDPOINT_HOST}:*")
    port = int(zsock.getsockopt_string(zmq.LAST_ENDPOINT).rsplit(":", 1)[1])
    cap.attach(socket.create_connection((ENDPOINT_HOST, port), timeout=TIMEOUT_S))


def new_socket(ctx, type_name, **opts):
    s = ctx.socket(getattr(zmq, type_name))
    s.linger = 0
    s.rcvtimeo = int(TIMEOUT_S * 1000)
    s.sndtimeo = int(TIMEOUT_S * 1000)
    for key, value in opts.items():
        s.setsockopt(getattr(zmq, key), value)
    return s


def null_handshake(cap, peer_type, identity=None, minor=1):
    cap.send("greeting", greeting(b"NULL", 0, minor))
    cap.read_greeting()
    cap.send("ready", command(b"READY", metadata(peer_type, identity)))
    return cap.expect("ready")


def capture_ready(ctx, type_name, with_id):
    name = f"ready_{type_name.lower()}" + ("_id" if with_id else "")
    opts = {"ROUTING_ID": ROUTING_ID} if with_id else {}
    desc = (f"libzmq {type_name} connects (NULL, ZMTP client)"
            + (f" with ZMQ_ROUTING_ID={ROUTING_ID!r}" if with_id else " without ZMQ_ROUTING_ID")
            + f"; our side answers greeting 3.1 and READY Socket-Type={COMPATIBLE_PEER[type_name]}")
    cap = Capture(name, desc, {"mechanism": "NULL", "libzmq-role": "client",
                               "libzmq-socket": type_name,
                               "raw-socket": COMPATIBLE_PEER[type_name]})
    zs = new_socket(ctx, type_name, **opts)
    if type_name == "SUB":
        zs.setsockopt(zmq.SUBSCRIBE, b"")
    libzmq_connects(ctx, cap, zs)
    null_handshake(cap, COMPATIBLE_PEER[type_name])
    if type_name == "SUB":
        cap.expect("subscribe")
    zs.close()
    return cap


def capture_null_client(ctx):
    cap = Capture("null_client",
                  "libzmq DEALER connects (NULL, ZMTP client), sends [x, y] and a 300-byte "
                  "message (LONG frame); our ROUTER-claiming side sends [a, b] back",
                  {"mechanism": "NULL", "libzmq-role": "client", "libzmq-socket": "DEALER",
                   "raw-socket": "ROUTER"})
    zs = new_socket(ctx, "DEALER")
    libzmq_connects(ctx, cap, zs)
    null_handshake(cap, "ROUTER")
    zs.send_multipart([b"x", b"y"])
    zs.send(b"L" * 300)
    cap.expect("msg-more")
    cap.expect("msg")
    cap.expect("msg")
    cap.send("msg-more", frame(0x01, b"a"))
    cap.send("msg", frame(0x00, b"b"))
    assert zs.recv_multipart() == [b"a", b"b"]
    zs.close()
    return cap


def capture_null_server(ctx):
    cap = Capture("null_server",
                  f"libzmq ROUTER binds (NULL, ZMTP server); our side connects as DEALER with "
                  f"Identity {ROUTING_ID!r}, sends [hello, 300 bytes]; libzmq echoes it back",
                  {"mechanism": "NULL", "libzmq-role": "server", "libzmq-socket": "ROUTER",
                   "raw-socket": "DEALER"})
    zs = new_socket(ctx, "ROUTER")
    libzmq_binds(ctx, cap, zs)
    null_handshake(cap, "DEALER", ROUTING_ID)
    cap.send("msg-more", frame(0x01, b"hello"))
    cap.send("msg", frame(0x00, b"M" * 300))
    parts = zs.recv_multipart()
    assert parts == [ROUTING_ID, b"hello", b"M" * 300], parts
    zs.send_multipart(parts)
    cap.expect("msg-more")
    cap.expect("msg")
    zs.close()
    return cap


def capture_heartbeat(ctx, ttl_ms):
    name = "heartbeat" + ("_ttl" if ttl_ms else "")
    cap = Capture(name,
                  f"libzmq DEALER connects with ZMQ_HEARTBEAT_IVL={HEARTBEAT_IVL_MS} ms, "
                  f"ZMQ_HEARTBEAT_TTL={ttl_ms} ms; we answer its PING with PONG, then send "
                  "PINGs with context '', 'LOL' and 20 bytes (PONG context is cut to 16)",
                  {"mechanism": "NULL", "libzmq-role": "client", "libzmq-socket": "DEALER",
                   "raw-socket": "ROUTER"})
    opts = {"HEARTBEAT_IVL": HEARTBEAT_IVL_MS}
    if ttl_ms:
        opts["HEARTBEAT_TTL"] = ttl_ms
    zs = new_socket(ctx, "DEALER", **opts)
    libzmq_connects(ctx, cap, zs)
    null_handshake(cap, "ROUTER")
    ping = cap.expect("ping")
    cap.send("pong", command(b"PONG", ping[1 + 4 + 2:]))
    for context in (b"", b"LOL", bytes(range(0x41, 0x41 + 20))):
        cap.send("ping", command(b"PING", b"\x00\x00" + context))
        pong = cap.expect("pong")
        assert pong[1 + 4:] == context[:16], pong
    zs.close()
    return cap


def capture_sub(ctx, type_name, minor):
    name = f"{type_name.lower()}_v3{minor}"
    cap = Capture(name,
                  f"libzmq {type_name} connects to our PUB-claiming side, which announces ZMTP "
                  f"3.{minor}; {type_name} subscribes 'A', '', a 40-byte topic, 'A' again, then "
                  "cancels 'A' twice (one CANCEL when the count drops to 0) and the 40-byte topic; "
                  "we then publish [A, payload]",
                  {"mechanism": "NULL", "libzmq-role": "client", "libzmq-socket": type_name,
                   "raw-socket": "PUB", "raw-minor": str(minor)})
    zs = new_socket(ctx, type_name)
    libzmq_connects(ctx, cap, zs)
    null_handshake(cap, "PUB", minor=minor)
    long_topic = b"topic/" + b"t" * 34
    # libzmq 4.3.4 turns SUB's setsockopt subscriptions into SUBSCRIBE/CANCEL commands for a
    # 3.1 peer, but XSUB forwards the application's 01/00 messages as they are.
    commands = minor == 1 and type_name == "SUB"
    want = "subscribe" if commands else "msg"
    want_cancel = "cancel" if commands else "msg"

    def sub(topic):
        if type_name == "SUB":
            zs.setsockopt(zmq.SUBSCRIBE, topic)
        else:
            zs.send(b"\x01" + topic)

    def unsub(topic):
        if type_name == "SUB":
            zs.setsockopt(zmq.UNSUBSCRIBE, topic)
        else:
            zs.send(b"\x00" + topic)

    for topic in (b"A", b"", long_topic):
        sub(topic)
        cap.expect(want)
    sub(b"A")
    cap.expect(want)  # both forward every subscribe, also a repeated one
    unsub(b"A")  # both count locally and cancel only when the count drops to 0
    unsub(b"A")
    cap.expect(want_cancel)
    unsub(long_topic)
    cap.expect(want_cancel)
    cap.send("msg-more", frame(0x01, b"A"))
    cap.send("msg", frame(0x00, b"payload"))
    assert zs.recv_multipart() == [b"A", b"payload"]
    zs.close()
    return cap


def capture_xpub_multipart(ctx):
    cap = Capture("xpub_multipart",
                  "libzmq XPUB binds; our XSUB-claiming side sends the two-frame messages "
                  "[01 'A', 'x'] and ['y', 01 'B']; XPUB reports every frame to its "
                  "application and applies 01-prefixed frames as subscriptions in ANY "
                  "position (A and B), as its publications to us then show: A-1 and B-1 "
                  "arrive, C-1 does not (A-end marks the end)",
                  {"mechanism": "NULL", "libzmq-role": "server", "libzmq-socket": "XPUB",
                   "raw-socket": "XSUB"})
    zs = new_socket(ctx, "XPUB")
    libzmq_binds(ctx, cap, zs)
    null_handshake(cap, "XSUB")
    cap.send("msg-more", frame(0x01, b"\x01A"))
    cap.send("msg", frame(0x00, b"x"))
    cap.send("msg-more", frame(0x01, b"y"))
    cap.send("msg", frame(0x00, b"\x01B"))
    seen = [zs.recv() for _ in range(4)]
    assert seen == [b"\x01A", b"x", b"y", b"\x01B"], seen
    cap.notes.append(f"XPUB application received: {seen!r}")
    for topic in (b"A-1", b"B-1", b"C-1", b"A-end"):
        zs.send(topic)
    for want in (b"A-1", b"B-1", b"A-end"):
        body = cap.expect("msg")
        assert body == want, body
    zs.close()
    return cap


# READY variants a peer might send, with what libzmq 4.3.4 does with them (the capture
# asserts it): accept = the message after READY is delivered, close = connection dropped.
LENIENCY_PROBES = [
    ("lenient_trailing_byte", "READY with one stray byte after the last property",
     command(b"READY", metadata("DEALER") + b"\x00"), b"", "close"),
    ("lenient_no_socket_type", "READY without a Socket-Type property",
     command(b"READY"), b"", "accept"),
    ("lenient_duplicate_socket_type", "READY with Socket-Type twice",
     command(b"READY", metadata("DEALER") + metadata("DEALER")), b"", "accept"),
    ("lenient_lowercase_name", "READY naming the property 'socket-type'",
     command(b"READY", properties([(b"socket-type", b"DEALER")])), b"", "accept"),
    ("lenient_long_form", "READY in the 8-byte size form though it is short",
     b"\x06" + struct.pack(">Q", len(command(b"READY", metadata("DEALER"))) - 2)
     + command(b"READY", metadata("DEALER"))[2:], b"", "accept"),
    ("lenient_reserved_flags", "READY frame with reserved flag bit 7 set (0x84)",
     b"\x84" + command(b"READY", metadata("DEALER"))[1:], b"", "accept"),
    ("lenient_short_ping", "valid READY, then a PING with 1 of its 2 TTL bytes",
     command(b"READY", metadata("DEALER")), command(b"PING", b"\x00"), "accept"),
]


def capture_leniency(ctx, name, what, ready, extra, libzmq_verdict):
    cap = Capture(name,
                  f"libzmq ROUTER binds (NULL); our DEALER-claiming side sends {what}, then "
                  f"the message 'hi'. libzmq's verdict: {libzmq_verdict}",
                  {"mechanism": "NULL", "libzmq-role": "server", "libzmq-socket": "ROUTER",
                   "raw-socket": "DEALER", "libzmq-verdict": libzmq_verdict})
    zs = new_socket(ctx, "ROUTER")
    zs.rcvtimeo = 500
    libzmq_binds(ctx, cap, zs)
    cap.send("greeting", greeting(b"NULL", 0))
    cap.read_greeting()
    cap.expect("ready")
    cap.send("ready", ready)
    if extra:
        cap.send("command", extra)
    cap.send("msg", frame(0x00, b"hi"))
    try:
        delivered = zs.recv_multipart()[1:] == [b"hi"]
    except zmq.Again:
        delivered = False
    closed = cap.drain(0.5)
    verdict = "accept" if delivered and not closed else "close"
    assert verdict == libzmq_verdict, (name, delivered, closed)
    zs.close()
    return cap


def capture_plain_client(ctx):
    cap = Capture("plain_client",
                  f"libzmq DEALER connects as PLAIN client (username {PLAIN_USER!r}, password "
                  f"{PLAIN_PASS!r}); our side plays PLAIN server: WELCOME, then READY; then one "
                  "message each way",
                  {"mechanism": "PLAIN", "libzmq-role": "client", "libzmq-socket": "DEALER",
                   "raw-socket": "ROUTER"})
    zs = new_socket(ctx, "DEALER", PLAIN_USERNAME=PLAIN_USER, PLAIN_PASSWORD=PLAIN_PASS)
    libzmq_connects(ctx, cap, zs)
    cap.send("greeting", greeting(b"PLAIN", 1))
    cap.read_greeting()
    cap.expect("hello")
    cap.send("welcome", command(b"WELCOME"))
    cap.expect("initiate")
    cap.send("ready", command(b"READY", metadata("ROUTER")))
    zs.send(b"ping?")
    cap.expect("msg")
    cap.send("msg", frame(0x00, b"pong!"))
    assert zs.recv() == b"pong!"
    zs.close()
    return cap


def capture_plain_server(ctx, status):
    accept = status == b"200"
    name = "plain_server_" + ("accept" if accept else f"reject{status.decode()}")
    cap = Capture(name,
                  f"libzmq ROUTER binds as PLAIN server with a ZAP handler answering "
                  f"{status.decode()}; our side connects as PLAIN client DEALER (username "
                  f"{PLAIN_USER!r}, password {PLAIN_PASS!r}, Identity {ROUTING_ID!r})"
                  + ("; one message each way" if accept else ""),
                  {"mechanism": "PLAIN", "libzmq-role": "server", "libzmq-socket": "ROUTER",
                   "raw-socket": "DEALER", "zap-status": status.decode()})
    zap = ZapHandler(ctx, status)
    zs = new_socket(ctx, "ROUTER", PLAIN_SERVER=1)
    libzmq_binds(ctx, cap, zs)
    cap.send("greeting", greeting(b"PLAIN", 0))
    cap.read_greeting()
    cap.send("hello", command(b"HELLO", bytes([len(PLAIN_USER)]) + PLAIN_USER
                              + bytes([len(PLAIN_PASS)]) + PLAIN_PASS))
    if accept:
        cap.expect("welcome")
        cap.send("initiate", command(b"INITIATE", metadata("DEALER", ROUTING_ID)))
        cap.expect("ready")
        cap.send("msg", frame(0x00, b"ping?"))
        parts = zs.recv_multipart()
        assert parts == [ROUTING_ID, b"ping?"], parts
        zs.send_multipart([ROUTING_ID, b"pong!"])
        cap.expect("msg")
    else:
        cap.expect("error-5e")
        closed = cap.expect_eof_or_silence(0.5)
        cap.notes.append("after ERROR libzmq " + ("closed the connection" if closed else
                                                  "kept the connection open for 0.5 s"))
    cap.notes.append(zap_note(zap))
    zs.close()
    zap.close()
    return cap


def capture_null_zap_reject(ctx):
    cap = Capture("null_server_reject400",
                  "libzmq ROUTER binds (NULL) with ZMQ_ZAP_DOMAIN 'test' and a ZAP handler "
                  "answering 400; our side connects as DEALER; libzmq sends a spec ERROR",
                  {"mechanism": "NULL", "libzmq-role": "server", "libzmq-socket": "ROUTER",
                   "raw-socket": "DEALER", "zap-status": "400"})
    zap = ZapHandler(ctx, b"400")
    zs = new_socket(ctx, "ROUTER", ZAP_DOMAIN=b"test")
    libzmq_binds(ctx, cap, zs)
    cap.send("greeting", greeting(b"NULL", 0))
    cap.read_greeting()
    cap.send("ready", command(b"READY", metadata("DEALER")))
    cap.expect("error")
    cap.notes.append(zap_note(zap))
    zs.close()
    zap.close()
    return cap


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    jobs = [(capture_ready, t, i) for t in COMPATIBLE_PEER for i in (False, True)]
    jobs += [(capture_null_client,), (capture_null_server,), (capture_heartbeat, 0),
             (capture_heartbeat, HEARTBEAT_TTL_MS)]
    jobs += [(capture_sub, t, m) for t in ("SUB", "XSUB") for m in (0, 1)]
    jobs += [(capture_xpub_multipart,)]
    jobs += [(capture_leniency, *probe) for probe in LENIENCY_PROBES]
    jobs += [(capture_plain_client,), (capture_plain_server, b"200"),
             (capture_plain_server, b"400"), (capture_null_zap_reject,)]
    for fn, *args in jobs:
        # A fresh context per capture: an inproc ZAP endpoint is released only when the
        # context reaps its socket, so reusing one context races the next bind.
        ctx = zmq.Context()
        cap = fn(ctx, *args)
        ctx.term()
        print(cap.write(outdir))


if __name__ == "__main__":
    main()
