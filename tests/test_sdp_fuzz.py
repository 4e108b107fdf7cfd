"""Fuzzing POST /offer: 1,300 generated and mutated offers against a real server.

Every answer must be a 4xx with a JSON reason, never a 5xx; a mutation that leaves
the offer usable may be answered 200 (its session is deleted at once). Afterwards
the server holds no session and a real aiortc peer still connects and gets video.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from security_helpers import real_offer_sdp
from server_helpers import running_server
from webrtc_helpers import ClipTrack, connect

from stream.settings import Settings

pytestmark = pytest.mark.timeout(300)

MIN_REFUSED = 1000  # offers answered 4xx in one run
REQUIRED = ("v=", "o=", "s=", "t=", "m=video", "a=fingerprint", "a=ice-ufrag", "a=ice-pwd")


@dataclass(frozen=True)
class Case:
    """One request: `body` (JSON-able) or `raw` bytes; `may_succeed` when it can stay valid."""

    kind: str
    body: Any = None
    raw: bytes | None = None
    may_succeed: bool = False


def _offer_lines() -> list[str]:
    return [line for line in real_offer_sdp(data_channel=True).split("\r\n") if line]


_TOKENS = st.sampled_from(
    ["0", "-1", "65536", "99999999999", "", " ", "\x00", "\t", "é", "💥", "::", "sha-256", "UDP"]
)


@st.composite
def mutated_lines(draw: st.DrawFn, lines: list[str]) -> list[str]:
    """1-4 edits: delete, duplicate, swap, truncate, insert, replace a field or a character."""
    lines = list(lines)
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["delete", "dup", "swap", "cut", "insert", "field", "char"]))
        if op == "delete":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "cut":
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
        elif op == "insert":
            lines.insert(i, draw(st.from_regex(r"[a-z]=[ -~]{0,120}", fullmatch=True)))
        elif op == "field":
            fields = lines[i].split(" ")
            fields[draw(st.integers(0, len(fields) - 1))] = draw(_TOKENS)
            lines[i] = " ".join(fields)
        else:
            pos = draw(st.integers(0, max(len(lines[i]) - 1, 0)))
            lines[i] = lines[i][:pos] + draw(st.characters()) + lines[i][pos + 1 :]
    return lines


def _body(sdp: str, effect: Any = None) -> dict[str, Any]:
    return {"sdp": sdp, "type": "offer", "effect": effect or {"name": "none"}}


@st.composite
def offer_cases(draw: st.DrawFn) -> Case:
    lines = _offer_lines()
    kind = draw(
        st.sampled_from(
            ["mutated", "mutated", "mutated", "stripped", "text", "lines", "json", "raw", "effect"]
        )
    )
    if kind == "mutated":
        edited = draw(mutated_lines(lines))
        newline = draw(st.sampled_from(["\r\n", "\r\n", "\n", "\r"]))
        return Case(kind, _body(newline.join(edited) + newline), may_succeed=True)
    if kind == "stripped":  # a required line type removed, plus other edits: never usable
        required = draw(st.sampled_from(REQUIRED))
        edited = draw(mutated_lines([line for line in lines if not line.startswith(required)]))
        return Case(
            kind, _body("\r\n".join(line for line in edited if not line.startswith(required)))
        )
    if kind == "text":
        return Case(kind, _body(draw(st.text(max_size=3000))))
    if kind == "lines":  # grammatical garbage: right shape, wrong content
        garbage = draw(st.lists(st.from_regex(r"[a-z]=[ -~]{0,200}", fullmatch=True), max_size=60))
        return Case(kind, _body("\r\n".join(["v=0", *garbage])))
    if kind == "json":
        value = draw(
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
                lambda inner: (
                    st.lists(inner, max_size=5)
                    | st.dictionaries(st.text(max_size=10), inner, max_size=5)
                ),
                max_leaves=20,
            )
        )
        return Case(kind, value)
    if kind == "raw":
        return Case(kind, raw=draw(st.binary(max_size=2000)))
    effect = draw(
        st.fixed_dictionaries(
            {
                "name": st.text(max_size=80)
                | st.sampled_from(["cartoon", "sketch", "stylize", "swap"]),
                "params": st.dictionaries(
                    st.text(max_size=20), st.integers() | st.text(max_size=20), max_size=4
                ),
            }
        )
    )
    return Case(kind, _body(real_offer_sdp(), effect), may_succeed=True)


def _post(client: httpx.Client, case: Case) -> httpx.Response:
    if case.raw is not None:
        return client.post("/offer", content=case.raw, headers={"Content-Type": "application/json"})
    return client.post(
        "/offer", content=json.dumps(case.body), headers={"Content-Type": "application/json"}
    )


async def _real_peer_still_served(url: str) -> int:
    frames = [np.full((240, 320, 3), (40 + 7 * i) % 255, np.uint8) for i in range(30)]
    source = ClipTrack(frames, fps=30, loop=True)
    pc, collector, session_id = await connect(url, source, {"name": "sketch"})
    try:
        await collector.wait_for(5, timeout=30)
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.delete(f"/sessions/{session_id}")).status_code == 204
        return len(collector.frames)
    finally:
        await pc.close()
        source.stop()


def test_fuzzed_offers_get_4xx_and_the_server_keeps_serving(tmp_path: Path) -> None:
    answers: Counter[tuple[str, int]] = Counter()
    server_settings = Settings(data_dir=tmp_path, max_sessions=50, max_sessions_per_client=50)
    with (
        running_server(server_settings) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):

        @settings(
            max_examples=MIN_REFUSED + 300,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=offer_cases())
        def one_request(case: Case) -> None:
            response = _post(client, case)
            answers[(case.kind, response.status_code)] += 1
            if response.status_code == 200 and case.may_succeed:
                session_id = response.json()["session_id"]
                assert client.delete(f"/sessions/{session_id}").status_code == 204
                return
            assert 400 <= response.status_code < 500, (case, response.status_code, response.text)
            assert response.json()["detail"], response.text

        one_request()
        total = sum(answers.values())
        refused = sum(count for (_, status), count in answers.items() if status != 200)
        assert refused >= MIN_REFUSED, answers
        assert refused >= 0.8 * total, answers
        assert len(server.app.state.services.sessions) == 0
        assert client.get("/healthz").json()["status"] == "ok"
        assert asyncio.run(_real_peer_still_served(server.url)) >= 5
