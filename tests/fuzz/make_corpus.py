#!/usr/bin/env python3
"""Writes the seed corpora in tests/fuzz/corpus/<target>/ from the libzmq captures in
tests/zmtp/vectors/*.hex (see the README there), in each target's input format (described
at the top of each tests/fuzz/fuzz_<target>.c). Seeds are plain files; libFuzzer reads
them at start. Rerun after recapturing the vectors: python3 tests/fuzz/make_corpus.py
"""
import glob
import os

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS = os.path.join(HERE, "..", "zmtp", "vectors")
CORPUS = os.path.join(HERE, "corpus")

# Numbered as libzmq's ZMQ_* constants (zmtp/metadata.h).
SOCKET_TYPES = {"PAIR": 0, "PUB": 1, "SUB": 2, "REQ": 3, "REP": 4, "DEALER": 5, "ROUTER": 6,
                "PULL": 7, "PUSH": 8, "XPUB": 9, "XSUB": 10}
# fuzz_session byte 0 mechanisms and fuzz_command scenarios.
MECH_NULL, MECH_PLAIN_CLIENT, MECH_PLAIN_SERVER = 0, 1, 2
SC_NULL_HANDSHAKE, SC_NULL_ACTIVE = 1, 2
SC_PLAIN_SERVER_HELLO, SC_PLAIN_SERVER_INITIATE = 3, 4
SC_PLAIN_CLIENT_WELCOME, SC_PLAIN_CLIENT_READY = 5, 6
AUTH_400 = 2          # fuzz_session byte 2, bits 0-1
CHUNK_SEED = 5        # a chunked variant of every session seed
GREETING_LEN = 64


def load(path):
    meta, items = {}, []
    for line in open(path):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "meta":
            meta[words[1]] = words[2]
        else:
            items.append((words[0], words[1], bytes.fromhex(words[2])))
    return meta, items


def command_body(frame):
    return frame[9:] if frame[0] & 0x02 else frame[2:]


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    for path in sorted(glob.glob(os.path.join(VECTORS, "*.hex"))):
        name = os.path.basename(path)[:-4]
        meta, items = load(path)
        ours = SOCKET_TYPES[meta["raw-socket"]]
        plain = meta["mechanism"] == "PLAIN"
        libzmq_client = meta["libzmq-role"] == "client"
        zmq_stream = b"".join(b for d, _, b in items if d == "zmq")
        greeting = zmq_stream[:GREETING_LEN]

        write("fuzz_greeting", name, bytes([1 if plain else 0]) + greeting)
        write("fuzz_decoder", name, b"\x00\x00" + zmq_stream[GREETING_LEN:])

        mech = MECH_NULL
        if plain:
            mech = MECH_PLAIN_SERVER if libzmq_client else MECH_PLAIN_CLIENT
        b0 = mech | ours << 2
        if meta.get("raw-minor") == "0":
            b0 |= 0x40
        if name.startswith("heartbeat"):
            b0 |= 0x80
        b2 = AUTH_400 if meta.get("zap-status") == "400" else 0
        write("fuzz_session", name, bytes([b0, 0, b2]) + zmq_stream)
        write("fuzz_session", name + "-chunked", bytes([b0, CHUNK_SEED, b2]) + zmq_stream)

        seen = set()
        for direction, label, frame in items:
            if direction != "zmq" or label == "greeting" or not frame[0] & 0x04:
                continue
            if label in ("ready", "error"):
                sc = SC_PLAIN_CLIENT_READY if plain else SC_NULL_HANDSHAKE
            elif label == "hello":
                sc = SC_PLAIN_SERVER_HELLO
            elif label == "initiate":
                sc = SC_PLAIN_SERVER_INITIATE
            elif label in ("welcome", "error-5e"):
                sc = SC_PLAIN_CLIENT_WELCOME
            else:
                sc = SC_NULL_ACTIVE
            body = command_body(frame)
            if body in seen:
                continue
            seen.add(body)
            write("fuzz_command", f"{name}-{label}-{len(seen)}", bytes([sc | ours << 3]) + body)


if __name__ == "__main__":
    main()
