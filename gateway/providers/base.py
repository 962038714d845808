"""The Provider protocol and what one upstream attempt sends and gets back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from gateway.policy.table import Deployment, Timeouts


class Endpoint(StrEnum):
    CHAT = "chat"
    COMPLETION = "completion"
    EMBEDDING = "embedding"
    RESPONSES = "responses"  # OpenAI Responses, relayed to a provider that speaks it natively
    MESSAGES = "messages"  # Anthropic Messages, relayed to a provider that speaks it natively
    TRANSCRIPTION = "transcription"  # OpenAI audio transcriptions (multipart upload, text or JSON answer)
    SPEECH = "speech"  # OpenAI text to speech (JSON request, binary audio answer)
    IMAGE = "image"  # OpenAI Images: POST /v1/images/generations
    IMAGE_EDIT = "image_edit"  # OpenAI Images: POST /v1/images/edits (multipart)


@dataclass(slots=True)  # one per request: a frozen dataclass costs several times as much to build
class Usage:
    """Tokens an upstream reported (or polyroute estimated, when `estimated`)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0  # cache reads, counted inside input_tokens
    reasoning_tokens: int = 0  # counted inside output_tokens
    estimated: bool = False
    cache_write_tokens: int = 0  # cache writes (Anthropic, Model Studio's explicit cache), inside input_tokens
    audio_input_tokens: int = 0  # audio (Omni's input_audio, a video's sound), inside input_tokens
    audio_output_tokens: int = 0  # speech (Omni's audio output), inside output_tokens
    audio_seconds: float = 0.0  # of input audio (transcription)
    characters: int = 0  # of input text (speech)
    images: int = 0  # images an image endpoint returned (billed by a `per_image` price)
    image_variant: str = ""  # the size and quality they were asked at (`1024x1024/hd`), which the price may read

    @classmethod
    def from_openai(cls, usage: Any) -> Usage | None:
        """Read an OpenAI-shaped `usage` object (Model Studio, vLLM and Ollama use the same one)."""
        return cls._from_counts(usage, _CHAT_USAGE_KEYS)

    @classmethod
    def from_anthropic(cls, usage: Any) -> Usage | None:
        """Read an Anthropic Messages `usage` object (cache writes count as input, as they are billed)."""
        if not isinstance(usage, dict):
            return None
        cached = _int(usage.get("cache_read_input_tokens"))
        written = _int(usage.get("cache_creation_input_tokens"))
        return cls(
            input_tokens=_int(usage.get("input_tokens")) + cached + written,
            output_tokens=_int(usage.get("output_tokens")),
            cached_tokens=cached,
            cache_write_tokens=written,
        )

    @classmethod
    def from_responses(cls, usage: Any) -> Usage | None:
        """Read an OpenAI Responses `usage` object."""
        return cls._from_counts(usage, _RESPONSES_USAGE_KEYS)

    @classmethod
    def _from_counts(cls, usage: Any, keys: tuple[str, str, str, str]) -> Usage | None:
        """Chat's and Responses' usage differ only in names (`keys`: input, output, and the details objects with
        the cached and the reasoning counts)."""
        if not isinstance(usage, dict):
            return None
        input_key, output_key, input_details_key, output_details_key = keys
        input_details = usage.get(input_details_key)
        output_details = usage.get(output_details_key)
        if not input_details and not output_details and "cache_creation_input_tokens" not in usage:
            return cls(_int(usage.get(input_key)), _int(usage.get(output_key)))  # the usual answer: no details
        if not isinstance(input_details, dict):
            input_details = {}
        if not isinstance(output_details, dict):
            output_details = {}
        return cls(
            input_tokens=_int(usage.get(input_key)),
            output_tokens=_int(usage.get(output_key)),
            cached_tokens=_int(input_details.get("cached_tokens")),
            cache_write_tokens=_cache_writes(usage, input_details),
            reasoning_tokens=_int(output_details.get("reasoning_tokens")),
            audio_input_tokens=_int(input_details.get("audio_tokens")),
            audio_output_tokens=_int(output_details.get("audio_tokens")),
        )

    @classmethod
    def from_transcription(cls, answer: Any) -> Usage | None:
        """The seconds of audio a transcription answer reports: OpenAI's `usage: {"type": "duration", "seconds"}`,
        else verbose_json's `duration`; None when it reports neither."""
        if not isinstance(answer, dict):
            return None
        usage = answer.get("usage")
        seconds = usage.get("seconds") if isinstance(usage, dict) and usage.get("type") == "duration" else None
        if seconds is None:
            seconds = answer.get("duration")
        if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds >= 0:
            return cls(audio_seconds=float(seconds))
        return None


_CHAT_USAGE_KEYS = ("prompt_tokens", "completion_tokens", "prompt_tokens_details", "completion_tokens_details")
_RESPONSES_USAGE_KEYS = ("input_tokens", "output_tokens", "input_tokens_details", "output_tokens_details")


def _cache_writes(usage: dict[str, Any], input_details: dict[str, Any]) -> int:
    """Cache writes in an OpenAI-shaped usage: Model Studio's explicit cache reports them in the details (its
    context-cache page); litellm's translation of Anthropic in the details under another name, and at the top."""
    for count in (
        input_details.get("cache_creation_input_tokens"),
        input_details.get("cache_creation_tokens"),
        usage.get("cache_creation_input_tokens"),
    ):
        if isinstance(count, int) and count > 0:
            return count
    return 0


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


@dataclass(frozen=True)
class Upload:
    """A file a client uploaded (a transcription's audio), sent on in a multipart body beside the JSON fields."""

    filename: str
    content_type: str
    data: bytes = field(repr=False)
class EditFile(Protocol):
    """A file sent on as one multipart part: an image of an edit (api/image_request.py's ImageFile, in an
    UpstreamCall's body) or a transcription's Upload."""

    @property
    def filename(self) -> str: ...
    @property
    def content_type(self) -> str: ...
    @property
    def data(self) -> bytes: ...


@dataclass
class UpstreamCall:
    """One attempt: which deployment, which endpoint, the JSON body to send (model already rewritten)."""

    endpoint: Endpoint
    deployment: Deployment
    body: dict[str, Any]
    timeouts: Timeouts
    stream: bool = False
    client_wants_usage: bool = False  # the client itself asked for stream usage (else its chunk is hidden)
    request_id: str = ""
    extra_headers: dict[str, str] = field(default_factory=dict)
    trace_headers: tuple[tuple[str, str], ...] = ()  # W3C trace context of the attempt's span, when tracing is on
    upload: Upload | None = None  # sent as multipart/form-data with `body`'s fields (transcription)


@dataclass
class UpstreamReply:
    """A successful non-stream answer: the upstream's bytes to relay, and the usage read from them."""

    body: bytes
    usage: Usage | None
    content_type: str = "application/json"


class UpstreamStream(Protocol):
    """A stream whose first event has already arrived (so failover is no longer possible)."""

    first_event: bytes

    def events(self) -> AsyncIterator[bytes]:
        """The remaining SSE events as wire bytes (`data: ...\\n\\n`), ending with `data: [DONE]`; an item may hold
        several events (those that arrived together), never a part of one."""
        ...

    @property
    def usage(self) -> Usage | None: ...

    async def aclose(self) -> None: ...


class BodyWriter(Protocol):
    """The client's side of a stream relayed without an await per event (gateway/api/body_writer.py)."""

    @property
    def gone(self) -> bool:
        """The client disconnected: nothing written reaches it any more."""
        ...

    def write(self, data: bytes) -> bool:
        """Send body bytes now; False when the client cannot take more yet (await `drain`) or is gone."""
        ...

    async def drain(self) -> None:
        """Until the client has read enough of what was written (or is gone)."""
        ...


@runtime_checkable
class DirectStream(Protocol):
    """A stream that can pass its events to the client straight from the upstream connection's callbacks."""

    async def relay_to(self, writer: BodyWriter) -> int:
        """Relay events as they arrive until the stream ends, fails or needs its reader (see SSERelay.relay_to);
        returns the events relayed. Whatever is left is read from `events()` afterwards, as usual."""
        ...


@runtime_checkable
class CountedStream(Protocol):
    """A stream that counts the events it has read (a native relay: a Responses error event carries the count)."""

    sent: int


class Provider(Protocol):
    """Carries one attempt to one upstream; raises gateway.errors.UpstreamError, already classified."""

    name: str

    async def send(self, call: UpstreamCall) -> UpstreamReply: ...

    async def open_stream(self, call: UpstreamCall) -> UpstreamStream: ...

    async def close(self) -> None: ...
