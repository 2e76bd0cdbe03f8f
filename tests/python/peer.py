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

TYPES = {n: getattr(zmq, n.upper()) for n in
         ["req", "rep", "dealer", "router", "pub", "sub", "push", "pull", "pair"]}


def out(frames):
    print(json.dumps([f.hex() for f in frames]), flush=True)


def parse_msg(s):
    # "6869,,00ff": frames in hex separated by commas; empty = empty frame
    return [bytes.fromhex(x) for x in s.split(",")]


def big(n):
    return [bytes((i % 251 for i in range(n)))]


def make(ctx, a, kind=None):
    s = ctx.socket(TYPES[kind or a.type])
    s.setsockopt(zmq.LINGER, 2000)
    s.setsockopt(zmq.RCVTIMEO, int(a.timeout * 1000))
    s.setsockopt(zmq.SNDTIMEO, int(a.timeout * 1000))
    if a.identity:
        s.setsockopt(zmq.IDENTITY, a.identity.encode())
    if a.curve_server_secret:
        s.curve_server = True
        s.curve_secretkey = a.curve_server_secret.encode()
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
    p.add_argument("role", choices=["echo", "send", "recv", "pub", "many"])
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
    p.add_argument("--peers", type=int, default=100)
    p.add_argument("--curve-server-secret")
    a = p.parse_args()
    ctx = zmq.Context()
    msgs = [parse_msg(m) for m in a.msg] + ([big(a.big)] if a.big else [])

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
