"""The request handlers of a simulated upstream: its routes, the faults it serves, admin endpoints and statistics."""

from __future__ import annotations

import itertools
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from aiohttp import web

from gateway.demo import sim_audio as audio
from gateway.demo import sim_native as native
from gateway.demo import sim_replies as replies
from gateway.demo.sim_engine import SimulatedEngineLoad
from gateway.demo.sim_faults import FAULT_HEADER, Fault, FaultQueue, parse_fault, parse_fault_header
from gateway.demo.sim_flavors import Flavor, SimError
from gateway.demo.sim_thinking import thinks
from gateway.demo.sim_wire import JSON, PACED_FAULTS, SSE_HEADERS, SimulatedWire

_FAULT_LOG_SIZE = 2000


class SimulatedUpstream(SimulatedWire):
    """One simulated server's configuration, fault queue and request statistics."""

    def __init__(
        self, flavor: Flavor, *, name: str, api_key: str | None, models: Sequence[str] | None, chunks: int
    ) -> None:
        self.flavor = flavor
        self.name = name
        self.chunks = max(1, chunks)
        self.models = tuple(models) if models else flavor.default_models
        self._strict_models = bool(models)
        self._auth = f"Bearer {api_key}" if api_key else None
        self._serial = itertools.count(1)
        self.faults = FaultQueue()
        self.total_requests = 0
        self.by_path: Counter[str] = Counter()
        self.by_model: Counter[str] = Counter()
        self.faults_served: Counter[str] = Counter()
        self.clients_gone = 0  # requests whose client disconnected before the answer was complete
        self.last_path: str | None = None
        self.last_headers: Mapping[str, str] = {}
        self.last_body: Any = None
        self.traceparents: deque[str] = deque(maxlen=100)  # W3C trace context received, newest last
        # The faults served, newest last, with the request id the gateway sent: a soak matches them to its failures.
        self.fault_log: deque[dict[str, Any]] = deque(maxlen=_FAULT_LOG_SIZE)
        self.engine_load: SimulatedEngineLoad | None = None  # set when the server serves engine metrics

    # ---- admin -------------------------------------------------------------------------------------------------

    async def post_faults(self, request: web.Request) -> web.Response:
        try:
            payload = orjson.loads(await request.read())
            specs = payload["faults"]
            if not isinstance(specs, list) or not all(isinstance(spec, dict) for spec in specs):
                raise ValueError("'faults' must be a list of objects")
            self.faults.extend([parse_fault(spec) for spec in specs])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            return web.json_response({"error": f"bad fault request: {exc}"}, status=400)
        return web.json_response({"pending": self.faults.pending()})

    async def delete_faults(self, request: web.Request) -> web.Response:
        self.faults.clear()
        return web.json_response({"pending": []})

    async def get_stats(self, request: web.Request) -> web.Response:
        stats = {
            "name": self.name,
            "flavor": self.flavor.name,
            "simulated": True,
            "total_requests": self.total_requests,
            "requests_by_path": dict(self.by_path),
            "requests_by_model": dict(self.by_model),
            "faults_served": dict(self.faults_served),
            "faults_pending": self.faults.pending(),
            "clients_gone": self.clients_gone,
            "last_path": self.last_path,
            "last_headers": {_canonical(key): value for key, value in self.last_headers.items()},
            "last_body": self.last_body,
            "traceparents": list(self.traceparents),
            "fault_log": list(self.fault_log),
        }
        return web.Response(body=orjson.dumps(stats), content_type=JSON)

    async def delete_stats(self, request: web.Request) -> web.Response:
        self.total_requests = 0
        self.by_path.clear()
        self.by_model.clear()
        self.faults_served.clear()
        self.clients_gone = 0
        self.last_path, self.last_headers, self.last_body = None, {}, None
        self.traceparents.clear()
        self.fault_log.clear()
        return web.json_response({"reset": True})

    # ---- OpenAI-compatible routes ------------------------------------------------------------------------------

    def _record(self, request: web.Request, body: Any) -> None:
        self.total_requests += 1
        self.by_path[request.path] += 1
        self.last_path = request.path
        self.last_headers = request.headers  # canonicalized only when someone asks for stats
        traceparent = request.headers.get("traceparent")
        if traceparent is not None:
            self.traceparents.append(traceparent)
        self.last_body = body

    async def list_models(self, request: web.Request) -> web.Response:
        self._record(request, None)
        if self._auth is not None and request.headers.get("Authorization") != self._auth:
            return self._error(self.flavor.errors["invalid_key"])
        created = int(time.time())
        data = [{"id": m, "object": "model", "created": created, "owned_by": self.flavor.owned_by} for m in self.models]
        return web.Response(body=orjson.dumps({"object": "list", "data": data}), content_type=JSON)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "chat")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "completion")

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "embedding")

    async def messages(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "messages")

    async def responses(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "responses")

    async def transcriptions(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        fields = {key: value for key, value in form.items() if isinstance(value, str)}
        self._record(request, fields)
        early = await self._audio_gate(request, fields.get("model"))
        if early is not None:
            return early
        self.last_body, response = audio.transcribe(form, fields, self.name)
        return response

    async def speech(self, request: web.Request) -> web.StreamResponse:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            body = None
        self._record(request, body)
        if not isinstance(body, dict):
            return audio.vllm_error(400, "The request body is not a valid JSON object.")
        early = await self._audio_gate(request, body.get("model"))
        return early if early is not None else await audio.speak(request, body)

    async def _audio_gate(self, request: web.Request, model: Any) -> web.StreamResponse | None:
        """Auth and queued faults of an audio request; None when it is answered."""
        if self._auth is not None and request.headers.get("Authorization") != self._auth:
            return self._error(self.flavor.errors["invalid_key"])
        name = model if isinstance(model, str) and model else self.models[0]
        self.by_model[name] += 1
        fault = self.faults.take(name)
        if fault is None:
            return None
        self.faults_served[fault.kind] += 1
        return await self._early_fault(request, fault)

    async def _serve(self, request: web.Request, endpoint: str) -> web.StreamResponse:
        if self.engine_load is None:
            return await self._serve_held(request, endpoint)
        with self.engine_load.hold():  # the answer's whole life, streamed or not, as an engine holds a request
            return await self._serve_held(request, endpoint)

    async def _serve_held(self, request: web.Request, endpoint: str) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        self._record(request, body if body is not None else raw.decode("utf-8", "replace"))
        if self._auth is not None and request.headers.get("Authorization") != self._auth:
            return self._error(self.flavor.errors["invalid_key"])
        if not isinstance(body, dict):
            return self._error(SimError(400, "The request body is not a valid JSON object."))
        model = body.get("model")
        if not isinstance(model, str) or not model:
            if self.flavor.name != "vllm":  # vLLM serves its first model when none is named
                return self._error(SimError(400, "you must provide a model parameter"))
            model = self.models[0]
        self.by_model[model] += 1
        if self._strict_models and model not in self.models:
            return self._error(SimError(404, self.flavor.model_not_found.format(model=model), code="model_not_found"))
        try:
            header = request.headers.get(FAULT_HEADER)
            fault = parse_fault_header(header) if header else self.faults.take(model)
        except ValueError as exc:
            return self._error(SimError(400, str(exc)))
        if fault is not None:
            self.faults_served[fault.kind] += 1
            self.fault_log.append({
                "at": time.time(), "fault": fault.kind, "path": request.path, "model": model,
                "stream": body.get("stream") is True, "request_id": request.headers.get("x-request-id"),
            })
            early = await self._early_fault(request, fault)
            if early is not None:
                return early
        return await self._answer(request, endpoint, model, body, fault)

    async def _answer(
        self, request: web.Request, endpoint: str, model: str, body: dict[str, Any], fault: Fault | None
    ) -> web.StreamResponse:
        serial = next(self._serial)
        kind = fault.kind if fault is not None else None
        stream = body.get("stream") is True and endpoint != "embedding"
        if fault is not None and kind == "inband_error" and not stream:
            return web.Response(body=self._inband_payload(fault), content_type=JSON)
        if endpoint in ("messages", "responses"):
            return await self._native(request, endpoint, body, stream, fault, serial)
        if endpoint == "embedding":
            known = replies.EMBEDDING_KEYS
            payload = replies.embeddings_body(model, body, replies.extra_keys(body, known))
            return await self._send(request, payload, fault)
        if endpoint == "chat" and self.flavor.name == "modelstudio" and audio.is_omni(model):
            return await self._omni(request, model, body, stream, fault, serial)
        if endpoint == "chat":
            call_id = f"call_sim_{serial:08x}"
            thinking = thinks(self.flavor, model, body, stream=stream)
            if isinstance(thinking, SimError):
                return self._error(thinking)
            reply = replies.chat_reply(body, server=self.name, thinking=thinking, call_id=call_id)
            env = self._envelope(f"chatcmpl-sim-{serial:08x}", "chat.completion", model, body, replies.CHAT_KEYS)
        else:
            reply = replies.completion_reply(body, server=self.name)
            env = self._envelope(f"cmpl-sim-{serial:08x}", "text_completion", model, body, replies.COMPLETION_KEYS)
        with_usage = kind != "no_usage"
        if not stream:
            render = replies.chat_body if endpoint == "chat" else replies.completion_body
            return await self._send(request, render(env, reply, with_usage=with_usage), fault)
        stream_options = body.get("stream_options")
        include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
        if endpoint == "chat":
            env = self._envelope(env.id, "chat.completion.chunk", model, body, replies.CHAT_KEYS)
            writer = replies.FrameWriter(env)
            frames = replies.chat_frames(writer, reply, self.chunks)
        else:
            writer = replies.FrameWriter(env)
            frames = replies.completion_frames(writer, reply, self.chunks)
        if include_usage and with_usage:
            frames.append(writer.usage_frame(reply))
        return await self._stream(request, frames, fault)

    async def _omni(
        self, request: web.Request, model: str, body: dict[str, Any], stream: bool, fault: Fault | None, serial: int
    ) -> web.StreamResponse:
        """Model Studio's Omni: streamed only; speech in base64 PCM when `modalities` asks for audio."""
        if not stream:
            return self._error(audio.stream_only_error())
        reply = replies.chat_reply(body, server=self.name, thinking=False, call_id="")
        env = self._envelope(f"chatcmpl-sim-{serial:08x}", "chat.completion.chunk", model, body, replies.CHAT_KEYS)
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        frames = audio.omni_frames(replies.FrameWriter(env), env, reply, body, self.chunks, include_usage=include_usage)
        return await self._stream(request, frames, fault)

    async def _native(
        self, request: web.Request, protocol: str, body: dict[str, Any], stream: bool, fault: Fault | None, serial: int
    ) -> web.StreamResponse:
        """A native Messages or Responses answer; of the paced faults, streams simulate only `inband_error`."""
        reply = native.native_reply(body, server=self.name, protocol=protocol, serial=serial)
        messages = protocol == "messages"
        if not stream:
            return await self._send(request, native.message_body(reply) if messages else native.response_body(reply),
                                    fault)
        frames = native.message_frames(reply, self.chunks) if messages else native.response_frames(reply, self.chunks)
        if fault is not None and fault.kind in PACED_FAULTS:
            if fault.kind != "inband_error":
                return self._error(SimError(400, f"fault {fault.kind!r} is not simulated on native streams"))
            message = fault.message or self.flavor.errors["internal"].message
            strike = min(fault.after, len(frames))
            error = native.message_error_frame(message) if messages else native.response_error_frame(message, strike)
            frames = [*frames[:strike], error]
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        try:
            await response.write(b"".join(frames))
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away mid-stream
        return response

    def _envelope(
        self, response_id: str, obj: str, model: str, body: dict[str, Any], known: frozenset[str]
    ) -> replies.Envelope:
        extra = replies.extra_keys(body, known)
        return replies.Envelope(response_id, obj, int(time.time()), model, extra, self.flavor.cached_tokens)


def _canonical(header: str) -> str:
    """`x-request-id` -> `X-Request-Id`, so stats read the same whatever case the client sent."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in header.split("-"))
