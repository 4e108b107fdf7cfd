"""Helpers for the reliability and security tests: real offers, process resource counts."""

from __future__ import annotations

import asyncio
import datetime
import gc
import os
import re
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from aiortc import RTCPeerConnection
from webrtc_helpers import ClipTrack


async def offer_sdp_async(data_channel: bool = False) -> str:
    """The SDP of a real aiortc offer sending one video track (optionally a `control` channel)."""
    pc = RTCPeerConnection()
    try:
        pc.addTrack(ClipTrack([np.zeros((48, 64, 3), np.uint8)]))
        if data_channel:
            pc.createDataChannel("control")
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


@cache
def real_offer_sdp(data_channel: bool = False) -> str:
    """offer_sdp_async from synchronous code (its own event loop); cached per process."""
    return asyncio.run(offer_sdp_async(data_channel))


def rss_bytes() -> int:
    """Resident set size of this process, from /proc (Linux)."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# Workers of bounded, on-demand thread pools (asyncio's and uvloop's default executors,
# AnyIO's worker threads, concurrent.futures pools): they grow up to a fixed size under
# load and then stay, so they are counted apart from the threads a session could leak.
_POOL_THREAD = re.compile(
    r"^(asyncio_\d+|uvloop_\d+|AnyIO worker thread|ThreadPoolExecutor-\d+_\d+)$"
)
POOL_THREAD_BOUND = 3 * min(32, (os.cpu_count() or 1) + 4)


@dataclass(frozen=True)
class ResourceCounts:
    """What a server leaks when sessions are not cleaned up.

    threads: threads other than pool workers; pool_threads: on-demand pool workers.
    """

    rss: int
    threads: int
    pool_threads: int
    fds: int
    tasks: int

    def describe(self) -> str:
        return (
            f"rss={self.rss / 2**20:.1f} MiB threads={self.threads}+{self.pool_threads} pooled "
            f"fds={self.fds} tasks={self.tasks}"
        )


def count_resources(loop: asyncio.AbstractEventLoop | None = None) -> ResourceCounts:
    """Counts after a garbage collection; `tasks`: unfinished tasks of `loop` (0 without one)."""
    gc.collect()
    tasks = 0
    if loop is not None:
        tasks = sum(1 for task in asyncio.all_tasks(loop) if not task.done())
    names = [thread.name for thread in threading.enumerate()]
    pooled = sum(1 for name in names if _POOL_THREAD.match(name))
    return ResourceCounts(
        rss=rss_bytes(),
        threads=len(names) - pooled,
        pool_threads=pooled,
        fds=open_fds(),
        tasks=tasks,
    )


def make_c2pa_credentials(folder: Path) -> tuple[Path, Path]:
    """A throw-away CA and an ES256 signing certificate as C2PA wants it (PEM chain, key).

    The leaf: not a CA, digitalSignature key usage, emailProtection extended usage,
    subject and authority key identifiers; the chain file holds leaf then CA.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, common),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "facestream tests"),
            ]
        )

    def usage(sign: bool) -> x509.KeyUsage:
        return x509.KeyUsage(
            digital_signature=sign, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=not sign,
            crl_sign=not sign, encipher_only=False, decipher_only=False,
        )  # fmt: skip

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = name("facestream test CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage(sign=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(name("facestream operator"))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage(sign=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    cert_path, key_path = folder / "c2pa_chain.pem", folder / "c2pa_key.pem"
    cert_path.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    key_path.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def write_clip(
    path: Path, frames: list[np.ndarray], fps: int = 25, audio: bool = False, crf: int = 18
) -> Path:
    """Encode RGB frames (H.264 at `crf`, yuv420p) into `path`; a 440 Hz tone when `audio`."""
    import av

    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt = "yuv420p"
        video.options = {"crf": str(crf), "preset": "ultrafast"}
        sound = container.add_stream("aac", rate=48000) if audio else None
        for index, rgb in enumerate(frames):
            for packet in video.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
            if sound is not None:
                samples = np.arange(1920 * index, 1920 * (index + 1)) / 48000
                tone = (0.2 * np.sin(2 * np.pi * 440 * samples)).astype(np.float32)[None, :]
                chunk = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
                chunk.sample_rate = 48000
                for packet in sound.encode(chunk):
                    container.mux(packet)
        for stream in (video, sound):
            if stream is not None:
                for packet in stream.encode():
                    container.mux(packet)
    return path


def read_frames(path: Path) -> list[np.ndarray]:
    """Every video frame of a file as HxWx3 uint8 RGB (PyAV, file protocol only)."""
    import av

    with av.open(str(path), options={"protocol_whitelist": "file"}) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
