"""Ending what a session started, even when a peer connection is only half set up.

aiortc's `RTCPeerConnection.close()` assumes a fully negotiated connection: on
one whose remote description failed half-way (a hostile or broken offer) it can
raise before it has stopped every transport, which would leave UDP sockets and
ICE tasks behind. `close_peer` closes normally and, if that fails, stops every
transceiver, DTLS transport and ICE transport it can reach one by one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

from aiortc import RTCPeerConnection

logger = logging.getLogger(__name__)


async def _try(step: Callable[[], Awaitable[object]]) -> None:
    with contextlib.suppress(Exception):
        await step()


async def close_peer(pc: RTCPeerConnection) -> None:
    """Close `pc`; never raises. Logs (WARNING) when the normal close failed."""
    try:
        await pc.close()
        return
    except Exception:
        logger.warning("closing a peer connection failed; stopping its transports", exc_info=True)
    for transceiver in pc.getTransceivers():
        await _try(transceiver.stop)
        dtls = transceiver.receiver.transport
        if dtls is not None:
            await _try(dtls.stop)
            await _try(dtls.transport.stop)
    sctp = pc.sctp
    if sctp is not None and sctp.transport is not None:
        await _try(sctp.transport.stop)
        await _try(sctp.transport.transport.stop)
    pc.remove_all_listeners()
