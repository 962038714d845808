"""Audio on the OpenAI-compatible relay: a transcription's multipart body and answer, a speech answer's bytes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from gateway.error_classes import ErrorClass
from gateway.errors import UpstreamError
from gateway.providers.base import Upload, UpstreamReply, Usage
from gateway.providers.failures import TRANSPORT_ERRORS, inband_error, transport_failure
from gateway.providers.http1_response import Response
from gateway.providers.multipart import encode_form


def multipart(fields: Mapping[str, Any], upload: Upload) -> tuple[bytes, str]:
    """`fields` (a list value: the name once per item, as `timestamp_granularities[]`) and the file, as a
    multipart/form-data body; and its content type."""
    return encode_form(fields, {"file": [upload]})


def transcription_reply(body: bytes, content_type: str) -> UpstreamReply:
    """A transcription answer as it came (JSON, or text for `text`, `srt` and `vtt`), with the seconds of audio it
    reports; an in-band error in a 200 JSON answer is a failure."""
    media = content_type.split(";")[0].strip() or "application/json"
    usage: Usage | None = None
    if media == "application/json":
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError("upstream answered 200 with a body that is not JSON",
                                error_class=ErrorClass.SERVER_ERROR) from exc
        if isinstance(data, dict) and "error" in data and "text" not in data:
            failure = inband_error(data)
            if failure is not None:
                raise failure
        usage = Usage.from_transcription(data)
    return UpstreamReply(body=body, usage=usage, content_type=media)


class AudioRelay:
    """A speech answer's bytes, relayed as they arrive (never held whole); its first bytes have arrived."""

    def __init__(self, resp: Response) -> None:
        self._resp = resp
        self._finished = False
        self.content_type = resp.headers.get("content-type", "application/octet-stream")
        self.first_event = b""

    @property
    def usage(self) -> Usage | None:
        return None  # the characters spoken are known from the request

    async def read_first(self) -> None:
        data = await self._resp.readany()
        if not data:
            raise UpstreamError("the upstream's speech answer was empty", error_class=ErrorClass.SERVER_ERROR)
        self.first_event = data

    async def events(self) -> AsyncIterator[bytes]:
        try:
            while data := await self._resp.readany():
                yield data
        except TRANSPORT_ERRORS as exc:  # the request's `total` covers reading the whole answer
            raise transport_failure(exc, timed_out="audio exceeded the total timeout", broke="audio broke") from exc
        self._finished = True

    async def aclose(self) -> None:
        if self._finished:
            self._resp.release()
        else:
            self._resp.close()
