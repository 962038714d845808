"""Read an audio request once: a transcription's multipart upload, a speech request's JSON, what routing needs."""

from __future__ import annotations

import io
import wave
from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.datastructures import Headers

from gateway.api.image_request import parse_generation
from gateway.api.parsing import ParsedRequest, json_object, parse_request, read_hints
from gateway.errors import BadRequestError
from gateway.providers.base import Endpoint, Upload, Usage

TRANSCRIPTION_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
MAX_SPEECH_INPUT = 4096  # characters, as OpenAI's speech API allows
MAX_FIELDS = 64  # text fields of one upload (beside its file)
_SINGLE = frozenset({"model", "language", "prompt", "response_format", "temperature"})


def parse_transcription(raw: bytes, headers: Headers) -> ParsedRequest:
    """A `multipart/form-data` upload: `file` and `model` required; `response_format` one of TRANSCRIPTION_FORMATS;
    every other field (`language`, `prompt`, `temperature`, `timestamp_granularities[]`, a server's extras) passed on.
    """
    fields, upload = _read_form(raw, headers.get("content-type", ""))
    if upload is None:
        raise BadRequestError("'file' is required: the audio file to transcribe, as a file part.", param="file")
    return _transcription(fields, headers, upload)


def explained_request(raw: bytes, endpoint: Endpoint, headers: Headers) -> ParsedRequest:
    """A body as `route explain` reads it: as served, except a transcription's, which is a JSON object of its form's
    text fields (routing never reads the audio file)."""
    if endpoint is Endpoint.IMAGE:
        return parse_generation(raw, endpoint, headers)
    if endpoint is Endpoint.SPEECH:
        return parse_speech(raw, headers)
    if endpoint is Endpoint.TRANSCRIPTION:
        return _transcription(json_object(raw), headers, None)
    return parse_request(raw, endpoint, headers)


def _transcription(fields: dict[str, Any], headers: Headers, upload: Upload | None) -> ParsedRequest:
    model = fields.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequestError("You must provide a model parameter (a non-empty string).", param="model")
    fmt = fields.get("response_format", "json")
    if fmt not in TRANSCRIPTION_FORMATS:
        raise BadRequestError(
            f"'response_format' must be one of {', '.join(TRANSCRIPTION_FORMATS)}.", param="response_format"
        )
    if "temperature" in fields:
        _number(fields["temperature"], "temperature", 0.0, 1.0)
    if fields.get("stream") not in (None, "false", "False"):
        raise BadRequestError("Streamed transcriptions are not relayed; leave 'stream' out.", param="stream")
    seconds = wav_seconds(upload.data) if upload is not None else None
    prompt = fields.get("prompt")
    return _parsed(Endpoint.TRANSCRIPTION, fields, model, headers, len(prompt) if isinstance(prompt, str) else 0,
                   upload=upload, metered=None if seconds is None else Usage(audio_seconds=seconds))


def parse_speech(raw: bytes, headers: Headers) -> ParsedRequest:
    """A JSON speech request: `model`, `input` (at most MAX_SPEECH_INPUT characters) and `voice` required;
    `response_format` one of SPEECH_FORMATS; `speed` 0.25-4.0; other fields passed on."""
    body = json_object(raw)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequestError("You must provide a model parameter (a non-empty string).", param="model")
    text = body.get("input")
    if not isinstance(text, str) or not text:
        raise BadRequestError("'input' is required: the text to speak (a non-empty string).", param="input")
    if len(text) > MAX_SPEECH_INPUT:
        raise BadRequestError(f"'input' is {len(text)} characters long; at most {MAX_SPEECH_INPUT}.", param="input")
    voice = body.get("voice")
    if not (isinstance(voice, str) and voice) and not isinstance(voice, dict):
        raise BadRequestError("'voice' is required: the voice to speak with.", param="voice")
    if body.get("response_format", "mp3") not in SPEECH_FORMATS:
        raise BadRequestError(f"'response_format' must be one of {', '.join(SPEECH_FORMATS)}.", param="response_format")
    if "speed" in body:
        _number(body["speed"], "speed", 0.25, 4.0)
    if body.get("stream_format", "audio") != "audio":
        raise BadRequestError("Only 'stream_format': 'audio' is relayed (the audio bytes as they come).",
                              param="stream_format")
    # Streamed through as the upstream sends it: the relay never holds the whole audio.
    return _parsed(Endpoint.SPEECH, body, model, headers, len(text), stream=True,
                   metered=Usage(characters=len(text)))


def wav_seconds(data: bytes) -> float | None:
    """The duration of a WAV upload (the one container the standard library reads); None for anything else."""
    if not data.startswith(b"RIFF"):
        return None
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            rate = wav.getframerate()
            return wav.getnframes() / rate if rate > 0 else None
    except (wave.Error, EOFError):
        return None


def _parsed(
    endpoint: Endpoint, body: dict[str, Any], model: str, headers: Headers, chars: int, *, stream: bool = False,
    upload: Upload | None = None, metered: Usage | None = None,
) -> ParsedRequest:
    data_class, tags = read_hints(headers, None)
    return ParsedRequest(
        endpoint=endpoint, body=body, model=model, stream=stream, client_wants_usage=False,
        prompt_tokens=max(1, chars // 4), max_output_tokens=None, needs=frozenset(), data_class=data_class,
        tags=tags, upload=upload, metered=metered,
    )


def _number(value: Any, param: str, low: float, high: float) -> None:
    try:
        number = float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or not low <= number <= high:
        raise BadRequestError(f"'{param}' must be a number from {low:g} to {high:g}.", param=param)


def _read_form(raw: bytes, content_type: str) -> tuple[dict[str, Any], Upload | None]:
    """The text fields (a name sent more than once: a list, as `timestamp_granularities[]`) and the `file` part."""
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise BadRequestError("The request must be multipart/form-data with a boundary (a file upload).",
                              param="file")
    form = _Form()
    try:
        parser = MultipartParser(boundary, form.callbacks())
        parser.write(raw)
        parser.finalize()
    except (MultipartParseError, ValueError) as exc:
        raise BadRequestError(f"The multipart body is malformed: {exc}", param="file") from None
    if not form.ended:
        raise BadRequestError("The multipart body ended before its closing boundary.", param="file")
    return form.fields, form.upload


class _Form:
    """What python-multipart's callbacks hand over, part by part."""

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}
        self.upload: Upload | None = None
        self.ended = False
        self._headers: dict[bytes, bytes] = {}
        self._name = self._value = b""
        self._data: list[bytes] = []

    def callbacks(self) -> Any:
        return {
            "on_part_begin": self._begin, "on_part_data": self._part_data, "on_part_end": self._part_end,
            "on_header_field": self._field, "on_header_value": self._header_value, "on_header_end": self._header_end,
            "on_end": self._end,
        }

    def _begin(self) -> None:
        self._headers, self._data = {}, []

    def _field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._name.lower()] = self._value
        self._name = self._value = b""

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self._data.append(data[start:end])

    def _part_end(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition"))
        name = options.get(b"name")
        if disposition != b"form-data" or name is None:
            raise MultipartParseError("a part without a form-data name")
        field = name.decode("utf-8", "replace")
        data = b"".join(self._data)
        if field == "file" and b"filename" in options:
            if self.upload is not None:
                raise BadRequestError("Only one 'file' part may be sent.", param="file")
            ctype = self._headers.get(b"content-type", b"application/octet-stream").decode("latin-1")
            self.upload = Upload(filename=options[b"filename"].decode("utf-8", "replace"), content_type=ctype,
                                 data=data)
            return
        try:
            value = data.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequestError(f"'{field[:64]}' is not UTF-8 text.", param=field[:64]) from None
        if len(self.fields) >= MAX_FIELDS and field not in self.fields:
            raise MultipartParseError(f"more than {MAX_FIELDS} fields")
        known = self.fields.get(field)
        if known is None or field in _SINGLE:
            self.fields[field] = value
        else:
            self.fields[field] = [*known, value] if isinstance(known, list) else [known, value]

    def _end(self) -> None:
        self.ended = True
