"""Validation of a client's SDP offer before aiortc sees it.

`check_offer_sdp` turns every way an offer can be malformed into InvalidSDP
(a ValueError) with a reason a client developer can act on; routes answer it
with 400. It checks the text first (size, characters, line grammar, required
lines), then parses it with aiortc's own parser (whose failures are asserts and
index errors) and checks what facestream needs: a video section with a codec
aiortc can decode, ICE credentials, a DTLS fingerprint and RTCP multiplexing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from aiortc import sdp as aiortc_sdp
from aiortc.codecs import CODECS
from aiortc.exceptions import InternalError, InvalidAccessError, InvalidStateError, OperationError
from aiortc.rtcpeerconnection import find_common_codecs

MAX_SDP_BYTES = 64 * 1024
MAX_LINE_CHARS = 2048
MAX_LINES = 2000
MAX_MEDIA_SECTIONS = 8
MAX_CANDIDATES = 64

_LINE = re.compile(r"^[a-z]=[^\x00-\x08\x0a-\x1f\x7f]*$")
_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_MEDIA = re.compile(r"^m=(audio|video|application) ([0-9]{1,5})(?:/[0-9]+)? ([A-Za-z/]+) (\S.*)$")
_FINGERPRINT = re.compile(
    r"^(sha-1|sha-224|sha-256|sha-384|sha-512) ([0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){15,63})$"
)
_MID = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`{|}~-]{1,32}$")
_ICE_CHARS = re.compile(r"^[A-Za-z0-9+/]+$")
_SETUP = {"actpass", "active", "passive", "holdconn"}


# What an unusable offer raises, in aiortc or here: answered 400, not 500.
OFFER_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    InternalError,
    InvalidAccessError,
    InvalidStateError,
    OperationError,
)


class InvalidSDP(ValueError):
    """The SDP offer is malformed or lacks what facestream needs; the message says what."""


def _text_lines(sdp: str, max_bytes: int) -> list[str]:
    if not isinstance(sdp, str):
        raise InvalidSDP("the SDP must be a string")
    size = len(sdp.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise InvalidSDP(f"the SDP is {size} bytes; the limit is {max_bytes}")
    if _FORBIDDEN.search(sdp):
        raise InvalidSDP("the SDP contains NUL or other control characters")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in sdp):
        raise InvalidSDP("the SDP is not valid UTF-8 text")
    lines = [line for line in re.split(r"\r?\n", sdp) if line]
    if not lines or lines[0] != "v=0":
        raise InvalidSDP("the SDP must start with the line v=0")
    if len(lines) > MAX_LINES:
        raise InvalidSDP(f"the SDP has {len(lines)} lines; the limit is {MAX_LINES}")
    for number, line in enumerate(lines, 1):
        if len(line) > MAX_LINE_CHARS:
            raise InvalidSDP(
                f"SDP line {number} is {len(line)} characters long; the limit is {MAX_LINE_CHARS}"
            )
        if not _LINE.match(line):
            raise InvalidSDP(
                f"SDP line {number} is not of the form <letter>=<value>: {line[:60]!r}"
            )
    return lines


def _check_session_part(lines: Sequence[str]) -> None:
    """The session part: o=, s= and t= before the first m= line."""
    session = lines[
        : next((i for i, line in enumerate(lines) if line.startswith("m=")), len(lines))
    ]
    origin = [line for line in session if line.startswith("o=")]
    if len(origin) != 1 or len(origin[0][2:].split()) != 6:
        raise InvalidSDP(
            "the SDP needs exactly one o= line with six fields before the first m= line"
        )
    for letter in ("s", "t"):
        if not any(line.startswith(f"{letter}=") for line in session):
            raise InvalidSDP(f"the SDP needs an {letter}= line before the first m= line")


def _check_lines(lines: Sequence[str]) -> None:
    """Grammar of the lines aiortc would otherwise trip over."""
    media = [line for line in lines if line.startswith("m=")]
    if len(media) > MAX_MEDIA_SECTIONS:
        raise InvalidSDP(
            f"the SDP has {len(media)} media sections; the limit is {MAX_MEDIA_SECTIONS}"
        )
    for line in media:
        match = _MEDIA.match(line)
        if match is None or int(match.group(2)) > 65535:
            raise InvalidSDP(f"malformed media line {line[:60]!r}")
    if not any(line.startswith("m=video ") for line in media):
        raise InvalidSDP("the offer has no video section (m=video): facestream processes video")
    _check_mids(lines)
    candidates = 0
    for line in lines:
        if line.startswith("a=fingerprint:") and not _FINGERPRINT.match(
            line[len("a=fingerprint:") :]
        ):
            raise InvalidSDP(f"malformed DTLS fingerprint {line[:80]!r}")
        if line.startswith("a=setup:") and line[len("a=setup:") :] not in _SETUP:
            raise InvalidSDP(f"a=setup must be one of {', '.join(sorted(_SETUP))}")
        if line.startswith(("a=ice-ufrag:", "a=ice-pwd:")):
            _check_ice_value(line)
        candidates += line.startswith("a=candidate:")
    if candidates > MAX_CANDIDATES:
        raise InvalidSDP(f"the SDP has {candidates} ICE candidates; the limit is {MAX_CANDIDATES}")
    if not any(line.startswith("a=fingerprint:") for line in lines):
        raise InvalidSDP("the SDP has no DTLS fingerprint (a=fingerprint)")
    for attribute in ("ice-ufrag", "ice-pwd"):
        if not any(line.startswith(f"a={attribute}:") for line in lines):
            raise InvalidSDP(f"the SDP has no ICE credentials (a={attribute})")


def _check_mids(lines: Sequence[str]) -> None:
    """Every media section has exactly one a=mid, and no two share one (as WebRTC requires)."""
    sections: list[list[str]] = []
    for line in lines:
        if line.startswith("m="):
            sections.append([])
        elif sections and line.startswith("a=mid:"):
            sections[-1].append(line[len("a=mid:") :])
    for index, mids in enumerate(sections):
        if len(mids) != 1 or not _MID.match(mids[0]):
            raise InvalidSDP(f"media section {index} needs exactly one a=mid with a short token")
    flat = [mids[0] for mids in sections]
    if len(set(flat)) != len(flat):
        raise InvalidSDP("two media sections share an a=mid value")


def _check_ice_value(line: str) -> None:
    name, value = line[2:].split(":", 1)
    low, high = (4, 256) if name == "ice-ufrag" else (22, 256)
    if not (low <= len(value) <= high) or not _ICE_CHARS.match(value):
        raise InvalidSDP(f"a={name} must be {low}-{high} characters of letters, digits, + and /")


def _check_parsed(description: aiortc_sdp.SessionDescription) -> None:
    """What aiortc needs from every section, and a video codec it can decode."""
    video_codecs = 0
    for media in description.media:
        if media.ice is None or not media.ice.usernameFragment or not media.ice.password:
            raise InvalidSDP(f"the {media.kind} section has no ICE username fragment or password")
        if not media.dtls or not media.dtls.fingerprints:
            raise InvalidSDP(f"the {media.kind} section has no DTLS fingerprint")
        if media.kind in ("audio", "video") and not media.rtcp_mux:
            raise InvalidSDP(f"the {media.kind} section must use RTCP multiplexing (a=rtcp-mux)")
        if media.kind == "video" and media.port != 0:
            video_codecs += len(find_common_codecs(CODECS["video"], media.rtp.codecs))
    if video_codecs == 0:
        names = ", ".join(sorted({c.mimeType for c in CODECS["video"] if "rtx" not in c.mimeType}))
        raise InvalidSDP(
            f"the offer has no active video section with a codec facestream can decode ({names})"
        )


def check_offer_sdp(sdp: str, max_bytes: int = MAX_SDP_BYTES) -> None:
    """Raise InvalidSDP (a ValueError) unless `sdp` is an offer facestream can answer."""
    lines = _text_lines(sdp, max_bytes)
    _check_session_part(lines)
    _check_lines(lines)
    try:
        description = aiortc_sdp.SessionDescription.parse(sdp)
    except Exception as error:  # aiortc's parser signals bad input with asserts and lookups
        raise InvalidSDP(
            f"the SDP could not be parsed ({type(error).__name__}: {str(error)[:120]})"
        ) from None
    _check_parsed(description)
