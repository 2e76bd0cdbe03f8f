#!/usr/bin/env python3
"""A Majordomo broker written from 7/MDP (rfc.zeromq.org/spec/7) with pyzmq:
the other broker zmesh's 7/MDP clients and workers must work with. One
service queue per name, workers in LRU order, heartbeats both ways.

  mdp_broker.py --bind tcp://127.0.0.1:0 [--hb-ms 300]

Prints READY <endpoint> once bound.
"""
import argparse
import collections
import sys
import time

import zmq

W_READY, W_REQUEST, W_REPLY, W_HEARTBEAT, W_DISCONNECT = b"\x01", b"\x02", b"\x03", b"\x04", b"\x05"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bind", required=True)
    p.add_argument("--hb-ms", type=int, default=300)
    a = p.parse_args()
    hb = a.hb_ms / 1000
    ctx = zmq.Context()
    s = ctx.socket(zmq.ROUTER)
    s.setsockopt(zmq.LINGER, 0)
    host = a.bind[: a.bind.rfind(":")]
    port = s.bind_to_random_port(host) if a.bind.endswith(":0") else None
    if port is None:
        s.bind(a.bind)
    print("READY %s" % ("%s:%d" % (host, port) if port else a.bind), flush=True)
    waiting = collections.defaultdict(collections.deque)  # service -> idle worker ids
    requests = collections.defaultdict(collections.deque)  # service -> [client, body]
    service_of, expiry = {}, {}
    next_hb = time.time() + hb

    def dispatch(service):
        while waiting[service] and requests[service]:
            w = waiting[service].popleft()
            client, body = requests[service].popleft()
            s.send_multipart([w, b"", b"MDPW01", W_REQUEST, client, b""] + body)

    poller = zmq.Poller()
    poller.register(s, zmq.POLLIN)
    while True:
        if poller.poll(hb * 1000):
            f = s.recv_multipart()
            sender, proto = f[0], f[2]
            if proto == b"MDPC01":
                service = f[3]
                requests[service].append((sender, f[4:]))
                dispatch(service)
            elif proto == b"MDPW01":
                cmd = f[3]
                expiry[sender] = time.time() + 3 * hb
                if cmd == W_READY:
                    service_of[sender] = f[4]
                    waiting[f[4]].append(sender)
                    dispatch(f[4])
                elif cmd == W_REPLY and sender in service_of:
                    client, body = f[4], f[6:]
                    service = service_of[sender]
                    s.send_multipart([client, b"", b"MDPC01", service] + body)
                    waiting[service].append(sender)
                    dispatch(service)
                elif cmd == W_DISCONNECT:
                    service = service_of.pop(sender, None)
                    if service is not None and sender in waiting[service]:
                        waiting[service].remove(sender)
        now = time.time()
        if now >= next_hb:
            for w, service in list(service_of.items()):
                if expiry.get(w, now) < now and w in waiting[service]:
                    waiting[service].remove(w)
                    del service_of[w]
                    continue
                s.send_multipart([w, b"", b"MDPW01", W_HEARTBEAT])
            next_hb = now + hb


if __name__ == "__main__":
    sys.exit(main())
