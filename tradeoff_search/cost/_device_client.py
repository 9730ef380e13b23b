"""The latency server's client: a latency backend that times on the target device over HTTP.

The token, when the server has one, comes from ``TRADEOFF_SEARCH_DEVICE_TOKEN`` only (never a
spec, a flag or a URL), goes in the ``Authorization`` header to the server's own address only
(a redirect is an error, never followed), and is never part of an error, a log line or a
record. Plain ``http`` to a host beyond this machine is warned about once: the token and the
models cross the network readable.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit

from tradeoff_search.cost._harness import LatencyStats, Setting
from tradeoff_search.cost._memory import NotDeployable, RamMeasurement, decode
from tradeoff_search.rules import TOKEN_ENV, check_device_url

_logger = logging.getLogger(__name__)

RETRIES = 3  # per request, on a lost connection or a server error; 1, 2, 4 s apart
_CONNECT_SECONDS = 10.0
_QUEUE_SECONDS = 300.0  # other workers' models may be ahead of ours
_RAM_SECONDS = 60.0  # per model: 0.07-0.4 s measured, on a device that may be far slower
_MAX_ANSWER_BYTES = 16 * 2**20  # statistics of 64 models take ~40 kB
_MESSAGE_CHARACTERS = 300  # of a server's error, in ours


class DeviceError(RuntimeError):
    """The latency server refused a request (a bad model, a wrong token) or could not be reached."""


class DeviceUnreachable(DeviceError):
    """The latency server did not answer, after the retries."""


class DeviceBackend:
    """Times flatbuffers on a latency server (``python -m tradeoff_search device serve``).

    No lock of this machine is held: local workers keep training while the device times.

    Args:
        url: ``http://HOST:PORT`` of the server.
        retries: attempts after a lost connection or a server error (5xx), 1, 2, 4 s apart.
    """

    def __init__(self, url: str, retries: int = RETRIES) -> None:
        self.name = check_device_url(url)
        self.retries = retries
        parts = urlsplit(self.name)
        if parts.scheme == "http" and not is_loopback(parts.hostname or ""):
            _warn_plain_http(self.name)

    def fingerprint(self) -> dict[str, Any]:
        """The device's CPU, cores and runtime version; :class:`DeviceUnreachable` if it is down."""
        return dict(self._request("GET", "/v1/device", None, _CONNECT_SECONDS))

    def measure(self, flatbuffers: Sequence[bytes], setting: Setting) -> list[LatencyStats]:
        query = {
            "batch_size": setting.batch_size,
            "threads": setting.threads,
            "statistic": setting.statistic,
            "max_seconds": repr(setting.max_seconds),
            "reference": int(setting.reference),
            "sizes": ",".join(str(len(f)) for f in flatbuffers),
        }
        if setting.stop_above_reference is not None:
            query["stop_above_reference"] = repr(setting.stop_above_reference)
        timeout = _QUEUE_SECONDS + 4 * setting.max_seconds * len(flatbuffers)
        answer = self._request("POST", f"/v1/measure?{urlencode(query)}", b"".join(flatbuffers), timeout)
        fields = {field.name for field in dataclasses.fields(LatencyStats)} - {"device"}
        return [LatencyStats(**{k: v for k, v in s.items() if k in fields}, device=self.name) for s in answer["stats"]]

    def measure_ram(self, flatbuffers: Sequence[bytes]) -> list[RamMeasurement | NotDeployable]:
        """The RAM each flatbuffer needs on the micro runtime, measured on the server (see ``cost._memory``).

        Raises:
            MemoryMeterError: the server's measurement failed.
        """
        query = {"sizes": ",".join(str(len(f)) for f in flatbuffers)}
        timeout = _QUEUE_SECONDS + _RAM_SECONDS * len(flatbuffers)
        answer = self._request("POST", f"/v1/ram?{urlencode(query)}", b"".join(flatbuffers), timeout)
        return [decode(measured) for measured in answer["ram"]]

    def _request(self, method: str, path: str, body: bytes | None, timeout: float) -> dict[str, Any]:
        headers = {"Content-Type": "application/octet-stream"}
        token = os.environ.get(TOKEN_ENV)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        why = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(2 ** (attempt - 1))
            request = urllib.request.Request(self.name + path, data=body, headers=headers, method=method)
            try:
                with _OPENER.open(request, timeout=timeout) as response:
                    return _answer(response.read(_MAX_ANSWER_BYTES + 1))
            except urllib.error.HTTPError as error:
                message = _server_message(error)
                if 300 <= error.code < 400:
                    raise DeviceError(f"latency server {self.name}: {error.code}, a redirect: not followed "
                                      "(latency.device must be the server's own address)") from None  # fmt: skip
                if error.code < 500:
                    raise DeviceError(f"latency server {self.name}: {error.code} {message}") from None
                why = f"{error.code} {message}"
            except (urllib.error.URLError, OSError, ValueError) as error:  # refused, reset, timed out, garbled
                reason = getattr(error, "reason", error)
                why = f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
            _logger.warning("latency server %s: %s (attempt %d of %d)", self.name, why, attempt + 1, self.retries + 1)
        raise DeviceUnreachable(f"latency server {self.name} unreachable after {self.retries + 1} attempts: {why}")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as the error it is: the token goes to the server's address only."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


@functools.cache
def _warn_plain_http(url: str) -> None:
    _logger.warning("latency server %s: plain http beyond this machine: the token and the models cross the "
                    "network readable; use an SSH tunnel (http://127.0.0.1:PORT) or https", url)  # fmt: skip


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _answer(data: bytes) -> dict[str, Any]:
    if len(data) > _MAX_ANSWER_BYTES:
        raise ValueError(f"an answer of more than {_MAX_ANSWER_BYTES} bytes")
    return dict(json.loads(data))


def _server_message(error: urllib.error.HTTPError) -> str:
    try:
        message = str(json.loads(error.read(_MAX_ANSWER_BYTES))["error"])
    except (ValueError, KeyError, TypeError, OSError):
        message = error.reason or "no reason given"
    return message if len(message) <= _MESSAGE_CHARACTERS else message[: _MESSAGE_CHARACTERS - 1] + "…"
