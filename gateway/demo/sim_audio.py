"""Audio of the simulated upstreams: Model Studio's Omni speech stream, and vLLM-style transcription and speech.

Omni, as https://www.alibabacloud.com/help/en/model-studio/qwen-omni documents it: streamed only (a non-stream call is
a 400), `modalities: ["text", "audio"]` with `audio: {voice, format}`, the spoken answer as base64 16-bit PCM in
`delta.audio.data` (24 kHz mono, as Alibaba's sample decodes it) and its text in `delta.audio.transcript`, and the
usage in a final `choices: []` chunk whose details split text from audio tokens (25 audio tokens a second).
"""

from __future__ import annotations

import base64
import io
import math
import struct
import wave
from typing import Any

import orjson
from aiohttp import web

from gateway.demo import sim_replies as replies
from gateway.demo.sim_flavors import SimError

PCM_RATE = 24_000  # samples a second of Omni's spoken answer
PCM_BYTES_PER_SECOND = PCM_RATE * 2  # 16-bit mono
AUDIO_TOKENS_PER_SECOND = 25
SECONDS_PER_WORD = 0.2  # how long the simulated voice takes to say one word of the transcript
INPUT_AUDIO_BYTES_PER_TOKEN = PCM_BYTES_PER_SECOND // AUDIO_TOKENS_PER_SECOND
VIDEO_TOKENS = 100  # a video part's flat token count in the simulation
STREAM_ONLY = (  # Model Studio's words for a non-stream call to a stream-only model
    "This model only support stream mode, please enable the stream parameter to access the model. "
)
SPEECH_FORMATS = {
    "wav": "audio/wav", "mp3": "audio/mpeg", "opus": "audio/opus", "aac": "audio/aac", "flac": "audio/flac",
    "pcm": "audio/pcm",
}


def is_omni(model: str) -> bool:
    """Model Studio's Omni models (qwen3.5-omni-plus, qwen3-omni-flash, ...): streamed only, speech out."""
    return "omni" in model


def speaks(body: dict[str, Any]) -> bool:
    modalities = body.get("modalities")
    return isinstance(modalities, list) and "audio" in modalities


def pcm(words: int) -> bytes:
    """The simulated voice saying `words` words: a quiet 440 Hz tone, SECONDS_PER_WORD each."""
    samples = round(words * SECONDS_PER_WORD * PCM_RATE)
    tone = (int(3000 * math.sin(2 * math.pi * 440 * i / PCM_RATE)) for i in range(samples))
    return struct.pack(f"<{samples}h", *tone)


def input_media_tokens(body: dict[str, Any]) -> tuple[int, int]:
    """(audio tokens, video tokens) of the request's `input_audio`, `video_url` and `video` parts."""
    audio = video = 0
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else []:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "input_audio":
                data = part.get("input_audio", {}).get("data", "")
                audio += max(AUDIO_TOKENS_PER_SECOND, len(str(data)) * 3 // 4 // INPUT_AUDIO_BYTES_PER_TOKEN)
            elif kind in ("video_url", "video"):
                video += VIDEO_TOKENS
    return audio, video


def omni_frames(writer: replies.FrameWriter, env: replies.Envelope, reply: replies.Reply, body: dict[str, Any],
                chunks: int, *, include_usage: bool) -> list[bytes]:
    """An Omni stream: transcript frames, then the audio in base64 PCM chunks (or text frames when no audio was
    asked), the finish frame, and the usage frame when asked."""
    audio_in, video_in = input_media_tokens(body)
    frames: list[bytes] = []
    audio_out = 0
    if speaks(body):
        frames += [writer.frame(_delta({"audio": {"transcript": piece}}))
                   for piece in replies.split_pieces(reply.text, chunks)]
        voice = pcm(len(reply.text.split()))
        audio_out = math.ceil(len(voice) / PCM_BYTES_PER_SECOND * AUDIO_TOKENS_PER_SECOND)
        step = max(1, -(-len(voice) // chunks))
        step -= step % 2  # whole 16-bit samples per chunk
        for at in range(0, len(voice), max(2, step)):
            data = base64.b64encode(voice[at : at + max(2, step)]).decode()
            frames.append(writer.frame(_delta({"audio": {"data": data, "expires_at": env.created + 86400,
                                                         "id": f"audio_{env.id}"}})))
    else:
        frames += [writer.frame(_delta({"content": piece})) for piece in replies.split_pieces(reply.text, chunks)]
    frames.append(writer.frame(_delta({}, "stop")))
    if include_usage:
        text_in = reply.prompt_tokens
        text_out = reply.completion_tokens
        usage = {
            "prompt_tokens": text_in + audio_in + video_in,
            "completion_tokens": text_out + audio_out,
            "total_tokens": text_in + audio_in + video_in + text_out + audio_out,
            "prompt_tokens_details": {"text_tokens": text_in, "audio_tokens": audio_in, "video_tokens": video_in},
            "completion_tokens_details": {"text_tokens": text_out, "audio_tokens": audio_out},
        }
        frames.append(writer.usage_chunk(usage))
    return frames


def _delta(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "finish_reason": finish}


def stream_only_error() -> SimError:
    return SimError(400, STREAM_ONLY, "invalid_request_error", "invalid_parameter_error")


# ---- vLLM-style /v1/audio/transcriptions and /v1/audio/speech ------------------------------------------------------


def wav_seconds(data: bytes) -> float | None:
    """The duration of a WAV file; None when `data` is not one."""
    try:
        with wave.open(io.BytesIO(data), "rb") as wav:
            return wav.getnframes() / wav.getframerate()
    except (wave.Error, EOFError, ZeroDivisionError):
        return None


def speech_wav(text: str) -> bytes:
    """A real (small) WAV file saying `text` in the simulated voice."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(PCM_RATE)
        wav.writeframes(pcm(max(1, len(text.split()))))
    return out.getvalue()


def transcribe(form: Any, fields: dict[str, str], server: str) -> tuple[dict[str, str], web.Response]:
    """Answer a multipart upload (its form and text fields) with its text in the asked `response_format` (json,
    text, verbose_json, srt, vtt), json with `usage` in seconds; also what was received, for the stats."""
    upload = form.get("file")
    if not isinstance(upload, web.FileField):
        return fields, vllm_error(400, "Field 'file' is required and must be a file upload.")
    data = upload.file.read()
    fields = {**fields, "file": f"{upload.filename} ({len(data)} bytes, {upload.content_type})"}
    seconds = wav_seconds(data)
    if seconds is None:
        return fields, vllm_error(400, "Invalid or unsupported audio file.")
    text = f"[{server}] heard {seconds:.2f} seconds of audio"
    fmt = fields.get("response_format", "json")
    if fmt == "text":
        return fields, web.Response(text=text, content_type="text/plain")
    if fmt in ("srt", "vtt"):
        stamp = f"00:00:{seconds:06.3f}"
        cue = f"1\n00:00:00{',' if fmt == 'srt' else '.'}000 --> {stamp if fmt == 'vtt' else stamp.replace('.', ',')}"
        head = "WEBVTT\n\n" if fmt == "vtt" else ""
        return fields, web.Response(text=f"{head}{cue}\n{text}\n", content_type="text/plain")
    answer: dict[str, Any] = {"text": text, "usage": {"type": "duration", "seconds": math.ceil(seconds)}}
    if fmt == "verbose_json":
        answer = {"task": "transcribe", "language": fields.get("language", "en"), "duration": seconds, "text": text,
                  "segments": []}
    return fields, web.Response(body=orjson.dumps(answer), content_type="application/json")


async def speak(request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
    """Answer a speech request with a WAV of its input, written in chunks as a server streams audio."""
    text = body.get("input")
    if not isinstance(text, str) or not text:
        return vllm_error(400, "Field 'input' is required.")
    fmt = body.get("response_format", "mp3")
    audio = speech_wav(text)  # whatever the format asked, the simulation speaks WAV bytes under its content type
    response = web.StreamResponse(headers={"Content-Type": SPEECH_FORMATS.get(str(fmt), "audio/wav")})
    await response.prepare(request)
    try:
        for at in range(0, len(audio), 4096):
            await response.write(audio[at : at + 4096])
        await response.write_eof()
    except ConnectionError:
        pass  # the client went away
    return response


def vllm_error(status: int, message: str) -> web.Response:
    body = {"object": "error", "message": message, "type": "BadRequestError", "param": None, "code": status}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")
