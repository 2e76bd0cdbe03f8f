"""A ZMQU01 consumer of a cluster, written from docs/protocol/queues.md
("In a cluster") with plain pyzmq.

Usage: cluster_consumer.py ENDPOINT[,ENDPOINT...] QUEUE N

Sends CONSUME to the first node; follows a 421 that names an endpoint (a
new DEALER to that node), asks the next node shortly after a 421 without
one; then takes N deliveries, acks each to the node that delivered it, and
prints each message id, one per line, then "consumed N". Exits non-zero
on any surprise.
"""
import sys
import time

import zmq

PROTO = b"ZMQU01"


def main():
    endpoints, queue, n = sys.argv[1].split(","), sys.argv[2].encode(), int(sys.argv[3])
    ctx = zmq.Context()
    sockets = {}

    def socket(endpoint):
        if endpoint not in sockets:
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 1000)
            s.connect(endpoint)
            sockets[endpoint] = s
        return sockets[endpoint]

    def send(s, *frames):
        s.send_multipart([b"", PROTO, *frames])

    def recv(s, timeout_ms=10000):
        if not s.poll(timeout_ms):
            sys.exit("timeout waiting for a broker")
        frames = s.recv_multipart()
        assert frames[0] == b"" and frames[1] == PROTO, frames
        return frames[2:]

    # Subscribe where the queue is served, following redirects.
    at, corr, deadline = 0, 0, time.monotonic() + 30
    endpoint = endpoints[at]
    while True:
        assert time.monotonic() < deadline, "no node served the queue in 30 s"
        corr += 1
        s = socket(endpoint)
        send(s, b"CONSUME", b"%d" % corr, queue, b"10")
        while True:
            f = recv(s)
            if f[0] in (b"OK", b"ERROR") and f[1] == b"%d" % corr:
                break
        if f[0] == b"OK":
            break
        assert f[2] == b"421", f
        if len(f) > 4:
            endpoint = f[4].decode()
            print("redirected to", endpoint, flush=True)
        else:
            time.sleep(0.1)
            at = (at + 1) % len(endpoints)
            endpoint = endpoints[at]

    got = set()
    while len(got) < n:
        f = recv(s)
        if f[0] == b"HEARTBEAT":
            send(s, b"HEARTBEAT")
            continue
        assert f[0] == b"DELIVER", f
        q, tag, _deliveries, msg_id, _body = f[1:6]
        assert q == queue, f
        got.add(msg_id)
        print(msg_id.decode(), flush=True)
        send(s, b"ACK", queue, tag)
    # CANCEL's answer comes after the acks on the same connection.
    send(s, b"CANCEL", b"end", queue)
    while True:
        f = recv(s)
        if f[0] == b"OK" and f[1] == b"end":
            break
    print("consumed", len(got), flush=True)


if __name__ == "__main__":
    main()
