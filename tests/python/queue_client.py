"""A ZMQU01 client written from docs/protocol/queues.md with plain pyzmq.

Declares a queue, publishes N messages (waiting for each CONFIRM), consumes
them with a credit window and acknowledges them, then checks the queue's
stats. Prints one line per step; exits non-zero on any surprise.
"""
import json
import sys

import zmq

PROTO = b"ZMQU01"


def main():
    endpoint, queue, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 1000)
    s.connect(endpoint)
    poller = zmq.Poller()
    poller.register(s, zmq.POLLIN)

    def send(*frames):
        s.send_multipart([b"", PROTO] + [f if isinstance(f, bytes) else str(f).encode() for f in frames])

    def recv():
        if not poller.poll(10000):
            sys.exit("timeout waiting for the broker")
        frames = s.recv_multipart()
        assert frames[0] == b"" and frames[1] == PROTO, frames
        return frames[2:]

    send(b"DECLARE", b"c1", queue, json.dumps({"max_length": 10000, "ack_timeout_ms": 5000}).encode())
    reply = recv()
    assert reply[0] == b"OK" and reply[1] == b"c1", reply
    print("declared", json.loads(reply[2])["name"], flush=True)

    tags = set()
    for i in range(n):
        send(b"PUBLISH", b"p%d" % i, queue, b"py-%d" % i, b"body-%d" % i)
        reply = recv()
        assert reply[0] == b"CONFIRM" and reply[1] == b"p%d" % i, reply
        tags.add(int(reply[2]))
    # A repeat of a message id is confirmed as a duplicate, not stored twice.
    send(b"PUBLISH", b"dup", queue, b"py-0", b"body-0")
    reply = recv()
    assert reply[0] == b"CONFIRM" and reply[3:] == [b"duplicate"], reply
    # A BATCH: two new messages and a repeat, one reply with a status each.
    send(b"BATCH", b"b1", queue, b"py-b1", b"batch-1", b"py-b2", b"batch-2", b"py-0", b"body-0")
    reply = recv()
    assert reply[0] == b"CONFIRMED" and reply[1] == b"b1" and len(reply) == 5, reply
    assert reply[2][:1] == b"c" and reply[3][:1] == b"c", reply
    assert reply[4] == b"d%d" % min(tags), reply
    n += 2
    print("published", len(tags), flush=True)

    send(b"CONSUME", b"c2", queue, b"10")
    got = {}
    outstanding = 0
    while len(got) < n:
        f = recv()
        if f[0] == b"OK":
            continue
        if f[0] == b"HEARTBEAT":
            send(b"HEARTBEAT")
            continue
        assert f[0] == b"DELIVER", f
        q, tag, deliveries, msg_id, body = f[1:6]
        assert q == queue.encode() and int(deliveries) == 1, f
        outstanding += 1
        assert outstanding <= 10, "more than the prefetch in flight"
        got[msg_id] = body
        send(b"ACK", queue, tag)
        outstanding -= 1
    assert all(got[b"py-%d" % i] == b"body-%d" % i for i in range(n - 2))
    assert got[b"py-b1"] == b"batch-1" and got[b"py-b2"] == b"batch-2"
    print("consumed", len(got), flush=True)

    send(b"CANCEL", b"c3", queue)
    while True:
        f = recv()
        if f[0] == b"OK" and f[1] == b"c3":
            break
    send(b"STATS", b"c4", queue)
    while True:
        f = recv()
        if f[0] == b"OK" and f[1] == b"c4":
            break
    stats = json.loads(f[2])[0]
    assert stats["ready"] == 0 and stats["unacked"] == 0 and stats["acked"] == n, stats
    # Errors name the problem.
    send(b"PUBLISH", b"e1", b"no-such-queue", b"", b"x")
    f = recv()
    assert f[0] == b"ERROR" and f[2] == b"404", f
    print("stats ok", json.dumps(stats["acked"]), flush=True)


if __name__ == "__main__":
    main()
