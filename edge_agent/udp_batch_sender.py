"""Many datagrams to one address in few system calls: Linux UDP segmentation offload (GSO).

One ``sendmsg`` with a ``UDP_SEGMENT`` control message hands the kernel a buffer that it cuts
into datagrams of the given size (the last may be shorter): an access unit's FU-A fragments,
equal in size by construction (``access_unit``), leave in one call instead of one ``sendto``
each through aioice. Only the standard library is needed. Where the kernel refuses GSO (before
Linux 4.18, or a socket type without it) the sender falls back to one ``sendto`` per datagram,
still without a coroutine per packet.

The socket is a duplicate of the ICE pair's UDP socket (same port, so the viewer's ICE and DTLS
state still match), closed with this sender. UDP has no back-pressure worth waiting for: a full
send buffer drops the rest of the batch and counts it; the viewer's NACKs ask for what it misses.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Sequence

import structlog

log = structlog.get_logger(__name__)

__all__ = ["UdpBatchSender"]

UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)  # linux/udp.h; Python 3.11 does not name it
#: Datagrams per segmented send: the kernel's UDP_MAX_SEGMENTS (64 before Linux 5.x).
MAX_SEGMENTS = 64
#: Bytes per segmented send: one IP datagram's worth, less headers.
MAX_SEND_BYTES = 65_000
_NO_GSO = {errno.EINVAL, errno.EOPNOTSUPP, errno.ENOPROTOOPT, errno.EIO}
_SEGMENT = struct.Struct("=H")


class UdpBatchSender:
    """Sends datagrams to one address from a duplicate of a bound UDP socket."""

    def __init__(self, sock: socket.socket, address: tuple[str, int], *, gso: bool = True) -> None:
        self.address = address
        self._socket = socket.fromfd(sock.fileno(), sock.family, sock.type, sock.proto)
        self._socket.setblocking(False)
        self.gso = gso
        self.calls = 0
        self.datagrams = 0
        self.dropped = 0
        self.errors = 0

    def close(self) -> None:
        self._socket.close()

    def send(self, datagrams: Sequence[bytes]) -> None:
        """Send in order; runs of equal size (the last of a run may be shorter) go as one call."""
        count = len(datagrams)
        start = 0
        while start < count:
            size = len(datagrams[start])
            end = start + 1
            total = size
            if self.gso:
                while end < count and end - start < MAX_SEGMENTS:
                    length = len(datagrams[end])
                    if length > size or total + length > MAX_SEND_BYTES:
                        break
                    end += 1
                    total += length
                    if length < size:
                        break  # a shorter one ends the run
            if not self._send_run(datagrams, start, end, size):
                if not self.dropped:
                    log.warning("socket send buffer full, datagrams dropped (NACK recovers them)",
                                address=self.address, dropped=count - start)
                self.dropped += count - start
                return
            start = end

    def _send_run(self, datagrams: Sequence[bytes], start: int, end: int, size: int) -> bool:
        try:
            if end - start == 1:
                self._socket.sendto(datagrams[start], self.address)
            else:
                self._socket.sendmsg([b"".join(datagrams[start:end])],
                                     [(socket.SOL_UDP, UDP_SEGMENT, _SEGMENT.pack(size))],
                                     0, self.address)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                return False
            if end - start > 1 and exc.errno in _NO_GSO:
                log.info("udp segmentation offload unavailable, one send per datagram",
                         errno=errno.errorcode.get(exc.errno or 0, exc.errno))
                self.gso = False
                return all(self._send_run(datagrams, i, i + 1, size) for i in range(start, end))
            self.errors += 1  # e.g. ECONNREFUSED: the viewer's port is gone; RTCP will tell
            return True
        self.calls += 1
        self.datagrams += end - start
        return True
