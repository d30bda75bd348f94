#!/usr/bin/env python3
"""A DNS responder for one name, for scripts/image.sh: answers A queries for NAME with
127.0.0.1 and every other query with no answers, on ADDRESS:53/udp, until killed. It lets the
image check prove that the statically linked operator resolves names through
/etc/resolv.conf, as it must for kubernetes.default.svc and the backends in a cluster.

  dns-stub.py ADDRESS NAME
"""

import socket
import struct
import sys

A, IN = 1, 1


def question_end(packet):
    """Offset just past the question's name, type and class."""
    i = 12
    while packet[i]:
        i += packet[i] + 1
    return i + 5


def answer(packet, name):
    end = question_end(packet)
    labels, i = [], 12
    while packet[i]:
        labels.append(packet[i + 1 : i + 1 + packet[i]].decode("ascii").lower())
        i += packet[i] + 1
    qtype, qclass = struct.unpack("!HH", packet[end - 4 : end])
    found = ".".join(labels) == name and qtype == A and qclass == IN
    header = struct.pack("!HHHHHH", struct.unpack("!H", packet[:2])[0], 0x8180, 1, int(found), 0, 0)
    body = packet[12:end]
    if found:
        # A pointer to the question's name, type A, class IN, TTL 60, 4 bytes: 127.0.0.1.
        body += struct.pack("!HHHIH", 0xC00C, A, IN, 60, 4) + socket.inet_aton("127.0.0.1")
    return header + body


def main():
    address, name = sys.argv[1], sys.argv[2].lower().rstrip(".")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, 53))
    print(f"answering {name} on {address}:53", flush=True)
    while True:
        packet, peer = sock.recvfrom(512)
        if len(packet) > 12:
            sock.sendto(answer(packet, name), peer)


if __name__ == "__main__":
    main()
