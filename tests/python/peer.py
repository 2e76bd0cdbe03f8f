#!/usr/bin/env python3
"""A libzmq peer (through pyzmq) for zmesh's interop tests.

Every received message is printed as one JSON line: a list of hex frames.
The script prints "READY <endpoint>" once its sockets are bound/connected.

  peer.py echo --type rep --bind tcp://127.0.0.1:0 --count 3
  peer.py send --type req --connect tcp://127.0.0.1:5555 --msg 6869 --msg 00,ff
  peer.py recv --type pull --bind tcp://127.0.0.1:0 --count 10
  peer.py pub  --type pub --bind tcp://127.0.0.1:0 --seconds 5
  peer.py many --type dealer --connect EP --peers 100   (100 DEALERs, one request each)
"""
import argparse
import json
import sys
import time

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

TYPES = {n: getattr(zmq, n.upper()) for n in
         ["req", "rep", "dealer", "router", "pub", "sub", "push", "pull", "pair"]}


def out(frames):
    print(json.dumps([f.hex() for f in frames]), flush=True)


def parse_msg(s):
    # "6869,,00ff": frames in hex separated by commas; empty = empty frame
    return [bytes.fromhex(x) for x in s.split(",")]


def sign(frames, key, key_id, ts_ms=None, nonce=None):
    """The zmesh signature frame (docs/protocol/signing.md), HMAC-SHA256."""
    import hashlib, hmac, os, struct
    kid = key_id.encode()
    ts = int(time.time() * 1000) if ts_ms is None else ts_ms
    nonce = os.urandom(16) if nonce is None else nonce
    d = hashlib.sha256()
    d.update(b"zmesh-sig-v1" + bytes([1, len(kid)]) + kid + struct.pack(">Q", ts) + nonce)
    for f in frames:
        d.update(struct.pack(">Q", len(f)) + f)
    tag = hmac.new(key.encode(), d.digest(), hashlib.sha256).digest()
    return b"ZMS1" + bytes([1, len(kid)]) + kid + struct.pack(">Q", ts) + nonce + tag


def big(n):
    return [bytes((i % 251 for i in range(n)))]


def make(ctx, a, kind=None):
    s = ctx.socket(TYPES[kind or a.type])
    s.setsockopt(zmq.LINGER, 2000)
    s.setsockopt(zmq.RCVTIMEO, int(a.timeout * 1000))
    s.setsockopt(zmq.SNDTIMEO, int(a.timeout * 1000))
    if a.identity:
        s.setsockopt(zmq.IDENTITY, a.identity.encode())
    if a.rcvhwm is not None:
        s.setsockopt(zmq.RCVHWM, a.rcvhwm)
    if a.curve_server_cert:
        pub, sec = zmq.auth.load_certificate(a.curve_server_cert)
        s.curve_server = True
        s.curve_publickey = pub
        s.curve_secretkey = sec
    if a.curve_client_cert or a.curve_server_key:
        if a.curve_client_cert:
            pub, sec = zmq.auth.load_certificate(a.curve_client_cert)
        else:
            pub, sec = zmq.curve_keypair()
        s.curve_publickey = pub
        s.curve_secretkey = sec
        key = a.curve_server_key
        if key.endswith(".key"):
            key = zmq.auth.load_certificate(key)[0].decode()
        s.curve_serverkey = key.encode()
    if a.plain_server:
        s.plain_server = True
    if a.plain_client:
        user, pw = a.plain_client.split(":", 1)
        s.plain_username = user.encode()
        s.plain_password = pw.encode()
    if a.type == "sub" or kind == "sub":
        s.setsockopt(zmq.SUBSCRIBE, a.subscribe.encode())
    ep = None
    if a.bind:
        if a.bind.endswith(":0"):
            port = s.bind_to_random_port(a.bind[: a.bind.rfind(":")])
            ep = "%s:%d" % (a.bind[: a.bind.rfind(":")], port)
        else:
            s.bind(a.bind)
            ep = a.bind
    if a.connect:
        s.connect(a.connect)
        ep = a.connect
    return s, ep


def main():
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["echo", "send", "recv", "pub", "many", "keygen", "loadcert", "stall"])
    p.add_argument("--type", required=True)
    p.add_argument("--bind")
    p.add_argument("--connect")
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--msg", action="append", default=[])
    p.add_argument("--big", type=int, default=0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--subscribe", default="")
    p.add_argument("--identity")
    p.add_argument("--rcvhwm", type=int, help="receive high-water mark, in messages")
    p.add_argument("--peers", type=int, default=100)
    p.add_argument("--curve-server-cert", help="secret certificate file: be a CURVE server")
    p.add_argument("--curve-client-cert", help="secret certificate file of this client")
    p.add_argument("--curve-server-key", help="server public key (Z85 or .key file): be a CURVE client")
    p.add_argument("--allow-dir", help="CURVE server: admit only keys in this directory")
    p.add_argument("--plain-server", help="user:password admitted by this PLAIN server")
    p.add_argument("--plain-client", help="user:password of this PLAIN client")
    p.add_argument("--hmac-key", help="sign every sent message (zmesh signature frame)")
    p.add_argument("--key-id", default="default")
    a = p.parse_args()
    ctx = zmq.Context()
    if a.curve_server_cert or a.plain_server:
        # libzmq's ZAP handler: who may connect.
        auth = ThreadAuthenticator(ctx)
        auth.start()
        if a.curve_server_cert:
            auth.configure_curve(domain="*", location=a.allow_dir or zmq.auth.CURVE_ALLOW_ANY)
        if a.plain_server:
            user, pw = a.plain_server.split(":", 1)
            auth.configure_plain(domain="*", passwords={user: pw})
    msgs = [parse_msg(m) for m in a.msg] + ([big(a.big)] if a.big else [])
    if a.hmac_key:
        msgs = [m + [sign(m, a.hmac_key, a.key_id)] for m in msgs]

    if a.role == "keygen":
        # --bind is the directory, --identity the name (reusing flags keeps the CLI small).
        pub, sec = zmq.auth.create_certificates(a.bind, a.identity)
        print(json.dumps({"public": pub, "secret": sec}), flush=True)
        return 0
    if a.role == "loadcert":
        pub, sec = zmq.auth.load_certificate(a.bind)
        print(json.dumps({"public": pub.decode(), "secret": sec.decode() if sec else None}), flush=True)
        return 0

    if a.role == "many":
        socks = []
        for i in range(a.peers):
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.RCVTIMEO, int(a.timeout * 1000))
            s.setsockopt(zmq.IDENTITY, b"peer-%03d" % i)
            s.connect(a.connect)
            socks.append(s)
        print("READY %s" % a.connect, flush=True)
        for i, s in enumerate(socks):
            s.send_multipart([b"hello-%03d" % i])
        ok = 0
        for i, s in enumerate(socks):
            r = s.recv_multipart()
            if r == [b"hello-%03d" % i]:
                ok += 1
        print(json.dumps({"ok": ok}), flush=True)
        return 0

    s, ep = make(ctx, a)
    print("READY %s" % ep, flush=True)
    if a.role == "echo":
        for _ in range(a.count):
            m = s.recv_multipart(copy=True)
            # Reply first: printing a 10 MiB message can block on a full stdout pipe.
            s.send_multipart(m)
            out(m)
    elif a.role == "recv":
        for _ in range(a.count):
            out(s.recv_multipart())
    elif a.role == "send":
        if a.type == "req":
            for m in msgs:
                s.send_multipart(m)
                out(s.recv_multipart())
        else:
            if a.type in ("push", "dealer", "pair"):
                # Wait for a peer: a bound PUSH/DEALER would otherwise block or drop.
                pass
            for m in msgs:
                s.send_multipart(m)
            if a.type in ("dealer", "pair"):
                for _ in range(a.count):
                    out(s.recv_multipart())
    elif a.role == "stall":
        # Send, then never read: a peer whose pipe fills up. Stays for --seconds.
        for m in msgs:
            s.send_multipart(m)
        time.sleep(a.seconds)
    elif a.role == "pub":
        seq = 0
        end = time.time() + a.seconds
        while time.time() < end:
            s.send_multipart([b"%s%08d" % (a.subscribe.encode(), seq)])
            seq += 1
            time.sleep(0.002)
    s.close()
    ctx.term()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except zmq.Again:
        print("TIMEOUT", flush=True)
        sys.exit(3)
