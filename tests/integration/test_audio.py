"""Audio through the gateway as a user meets it: Omni speech streamed from the simulated Model Studio, audio input,
capability routing, audio tokens on /metrics and in /admin/usage with their cost, transcriptions (json, text,
fallback) and speech (the upstream's bytes, its content type) from simulated vLLM servers, and bad uploads.

Real processes on loopback: one gateway, a simulated Model Studio and two simulated vLLM servers; the official
`openai` and `anthropic` clients.
"""

from __future__ import annotations

import base64
import io
import json
import time
import urllib.error
import urllib.request
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import openai
import pytest

from gateway.demo.sim_audio import speech_wav
from tests.support.processes import GatewayProcess, Upstream, start_gateway, start_simulated
from tests.support.prometheus import scrape, total

POLICY = """
version: 1
providers:
  modelstudio: {{type: openai, base_url: {cloud}, hosting: cloud, jurisdiction: sg, vendor: alibaba}}
  vllm-a: {{type: openai, base_url: {a}, hosting: self_hosted, jurisdiction: onprem, vendor: self}}
  vllm-b: {{type: openai, base_url: {b}, hosting: self_hosted, jurisdiction: onprem, vendor: self}}
deployments:
  omni: {{provider: modelstudio, model: qwen3.5-omni-plus, capabilities: [vision, audio_in, audio_out, video_in],
          price: {{input_per_mtok: 1, output_per_mtok: 4, audio_input_per_mtok: 10, audio_output_per_mtok: 100}}}}
  text-local: {{provider: vllm-a, model: Qwen/Qwen3-32B, capabilities: [tools],
                price: {{input_per_mtok: 0.1, output_per_mtok: 0.2}}}}
  whisper-a: {{provider: vllm-a, model: openai/whisper-large-v3, kind: transcription, price: {{per_second: 0.001}}}}
  whisper-b: {{provider: vllm-b, model: openai/whisper-large-v3, kind: transcription, price: {{per_second: 0.002}}}}
  voice: {{provider: vllm-b, model: sim-tts, kind: speech, price: {{per_mchar: 15}}}}
aliases:
  talk: {{targets: [text-local, omni]}}
  plain: {{targets: [text-local]}}
  stt: {{targets: [whisper-a, whisper-b]}}
  tts: {{targets: [voice]}}
fallback:
  retries: {{attempts: 0, backoff: 10ms, max_backoff: 50ms}}
tenants:
  team: {{api_keys: [team-key]}}
  tight: {{api_keys: [tight-key], budget: {{usd_per_day: 0.0002}}}}
"""
SPOKEN = "say hello to the audio world"
PCM_BYTES_PER_AUDIO_TOKEN = 48_000 // 25  # 24 kHz 16-bit mono, 25 audio tokens a second (Model Studio's Omni)
WAIT_S = 30.0


@dataclass
class Audio:
    gateway: GatewayProcess
    cloud: Upstream
    vllm_a: Upstream
    vllm_b: Upstream

    def client(self, key: str = "team-key") -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gateway.url("/v1"), api_key=key, max_retries=0)

    def admin(self, path: str) -> Any:
        request = urllib.request.Request(self.gateway.url(path), headers={"authorization": "Bearer adm"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def post(self, path: str, body: bytes, content_type: str) -> tuple[int, Any]:
        request = urllib.request.Request(self.gateway.url(path), data=body, method="POST", headers={
            "content-type": content_type, "authorization": "Bearer team-key"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            with err:
                return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Audio]:
    cloud = start_simulated("modelstudio", name="sim-cloud", chunks=5)
    vllm_a = start_simulated("vllm", name="sim-a")
    vllm_b = start_simulated("vllm", name="sim-b")
    policy = tmp_path_factory.mktemp("audio") / "policy.yaml"
    policy.write_text(POLICY.format(cloud=cloud.base_url, a=vllm_a.base_url, b=vllm_b.base_url))
    gateway = start_gateway(policy, env={"POLYROUTE_ADMIN_KEY": "adm"})
    try:
        yield Audio(gateway, cloud, vllm_a, vllm_b)
    finally:
        gateway.stop()
        for upstream in (cloud, vllm_a, vllm_b):
            upstream.stop()


def wav(seconds: float, rate: int = 16_000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * int(seconds * rate))
    return out.getvalue()


def speak(client: openai.OpenAI, **extra: Any) -> tuple[str, bytes, Any, str]:
    """A streamed chat asking for speech: (transcript, PCM, usage, deployment)."""
    raw = client.chat.completions.with_raw_response.create(
        model="talk", messages=[{"role": "user", "content": SPOKEN}], modalities=["text", "audio"],
        audio={"voice": "Cherry", "format": "wav"}, stream=True, stream_options={"include_usage": True}, **extra,
    )
    transcript, data, usage = "", "", None
    with raw.parse() as stream:
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                sound = (choice.delta.model_extra or {}).get("audio")
                if sound:
                    transcript += sound.get("transcript", "")
                    data += sound.get("data", "")
    return transcript, base64.b64decode(data), usage, raw.headers["x-polyroute-deployment"]


def test_a_streamed_chat_with_audio_output_arrives_whole(audio: Audio) -> None:
    with audio.client() as client:
        transcript, pcm, usage, deployment = speak(client)
    assert deployment == "omni"  # text-local, first in `talk`, does not declare audio_out
    assert transcript == f"[sim-cloud] echo: {SPOKEN}"
    assert usage is not None and usage.completion_tokens_details is not None
    spoken_tokens = usage.completion_tokens_details.audio_tokens
    assert spoken_tokens and len(pcm) == spoken_tokens * PCM_BYTES_PER_AUDIO_TOKEN  # no base64 chunk lost


def test_input_audio_goes_to_a_target_that_hears(audio: Audio) -> None:
    clip = base64.b64encode(wav(2.0, rate=24_000)).decode()
    with audio.client() as client:
        raw = client.chat.completions.with_raw_response.create(
            model="talk", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": [
                {"type": "input_audio", "input_audio": {"data": clip, "format": "wav"}},
                {"type": "text", "text": "what is this?"}]}],
        )
        with raw.parse() as stream:
            usage = [chunk.usage for chunk in stream if chunk.usage is not None][-1]
    assert raw.headers["x-polyroute-deployment"] == "omni"
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.audio_tokens == 50
    assert audio.cloud.stats()["last_body"]["messages"][0]["content"][0]["input_audio"]["data"] == clip


def test_video_parts_go_unchanged_to_a_target_that_sees_video(audio: Audio) -> None:
    frames = {"type": "video", "video": ["http://127.0.0.1:9/f1.jpg", "http://127.0.0.1:9/f2.jpg"]}
    clip = {"type": "video_url", "video_url": {"url": "http://127.0.0.1:9/clip.mp4"}}
    with audio.client() as client:
        for part in (frames, clip):
            messages: Any = [{"role": "user", "content": [part, {"type": "text", "text": "what happens?"}]}]
            raw = client.chat.completions.with_raw_response.create(model="talk", messages=messages, stream=True)
            with raw.parse() as stream:
                assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices).endswith("what happens?")
            assert raw.headers["x-polyroute-deployment"] == "omni"
            assert audio.cloud.stats()["last_body"]["messages"][0]["content"][0] == part
        with pytest.raises(openai.BadRequestError, match="no target of alias plain supports video_in"):
            client.chat.completions.create(model="plain", messages=messages)


def test_no_capable_target_is_a_400_naming_the_capability(audio: Audio) -> None:
    with audio.client() as client, pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="plain", messages=[{"role": "user", "content": "hi"}],
                                       modalities=["text", "audio"], audio={"voice": "Cherry", "format": "wav"})
    assert caught.value.code == "unsupported_capability"
    assert "no target of alias plain supports audio_out" in caught.value.message
    with anthropic.Anthropic(base_url=audio.gateway.url(""), api_key="team-key", max_retries=0) as claude:
        with pytest.raises(anthropic.BadRequestError) as refused:
            claude.messages.create(model="plain", max_tokens=16, messages=[{"role": "user", "content": [
                {"type": "image", "source": {"type": "url", "url": "http://127.0.0.1:9/cat.png"}},
                {"type": "text", "text": "what is this?"}]}])
        assert refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index,call-overload]
        assert "no target of alias plain supports vision" in refused.value.message
        with pytest.raises(anthropic.BadRequestError, match=r"'modalities'.*cannot carry audio output"):
            claude.messages.create(model="talk", max_tokens=16, messages=[{"role": "user", "content": "hi"}],
                                   extra_body={"modalities": ["text", "audio"]})


def test_speech_output_without_stream_is_model_studios_400(audio: Audio) -> None:
    with audio.client() as client, pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="talk", messages=[{"role": "user", "content": "hi"}],
                                       modalities=["text", "audio"], audio={"voice": "Cherry", "format": "wav"})
    assert "only support stream mode" in caught.value.message


def omni_usage(audio: Audio) -> dict[str, Any]:
    groups = audio.admin("/admin/usage?days=1&group_by=deployment")["groups"]
    return next((g for g in groups if g["deployment"] == "omni"), {"audio_output_tokens": 0, "cost_usd": 0.0})


def test_audio_tokens_are_metered_and_billed(audio: Audio) -> None:
    before = omni_usage(audio)
    metered = total(scrape(audio.gateway.url("/metrics")), "polyroute_tokens_total", deployment="omni",
                    type="audio_output")
    with audio.client() as client:
        _, _, usage, _ = speak(client)
    spoken = usage.completion_tokens_details.audio_tokens
    after_metrics = scrape(audio.gateway.url("/metrics"))
    assert total(after_metrics, "polyroute_tokens_total", deployment="omni", type="audio_output") == metered + spoken
    deadline = time.monotonic() + WAIT_S
    while (after := omni_usage(audio))["audio_output_tokens"] < before["audio_output_tokens"] + spoken:
        assert time.monotonic() < deadline, f"the usage record did not arrive: {after}"
        time.sleep(0.05)
    # Audio tokens are counted inside completion_tokens: billed at the audio price, and not again as text.
    text_out = usage.completion_tokens - spoken
    expected = (usage.prompt_tokens * 1 + text_out * 4 + spoken * 100) / 1_000_000
    assert after["cost_usd"] - before["cost_usd"] == pytest.approx(expected, rel=1e-4)


def test_transcriptions_json_and_text(audio: Audio) -> None:
    with audio.client() as client:
        raw = client.audio.transcriptions.with_raw_response.create(
            model="stt", file=("hello.wav", wav(1.5), "audio/wav"), language="en",
            timestamp_granularities=["word", "segment"], response_format="json")
        text = client.audio.transcriptions.create(model="stt", file=("hello.wav", wav(2.25), "audio/wav"),
                                                  response_format="text")
    assert raw.parse().text == "[sim-a] heard 1.50 seconds of audio"
    assert raw.headers["x-polyroute-deployment"] == "whisper-a"
    assert text.strip() == "[sim-a] heard 2.25 seconds of audio"
    received = audio.vllm_a.stats()["last_body"]
    assert received["model"] == "openai/whisper-large-v3" and received["response_format"] == "text"
    deadline = time.monotonic() + WAIT_S
    while (row := audio.admin("/admin/usage?days=1&group_by=deployment")["groups"]) and not any(
        g["deployment"] == "whisper-a" and g["audio_seconds"] >= 4.25 for g in row
    ):
        assert time.monotonic() < deadline, f"usage records did not arrive: {row}"
        time.sleep(0.05)
    whisper = next(g for g in row if g["deployment"] == "whisper-a")
    # json: the 2 seconds the server reported (rounded up); text: the 2.25 seconds of the WAV itself
    assert whisper["audio_seconds"] == pytest.approx(4.25)
    assert whisper["cost_usd"] == pytest.approx(4.25 * 0.001)


def test_a_failed_transcription_falls_back(audio: Audio) -> None:
    audio.vllm_a.inject([{"fault": "internal", "count": 1}])
    with audio.client() as client:
        raw = client.audio.transcriptions.with_raw_response.create(model="stt", file=("a.wav", wav(1.0), "audio/wav"))
    assert raw.headers["x-polyroute-deployment"] == "whisper-b"
    assert raw.headers["x-polyroute-fallback-reason"] == "server_error"
    assert raw.parse().text == "[sim-b] heard 1.00 seconds of audio"


def test_speech_is_the_upstreams_audio(audio: Audio) -> None:
    words = "hello there world"
    with audio.client() as client:
        raw = client.audio.speech.with_raw_response.create(model="tts", voice="alloy", input=words,
                                                           response_format="wav")
        assert raw.content == speech_wav(words)
        assert raw.headers["content-type"] == "audio/wav"
        assert raw.headers["x-polyroute-deployment"] == "voice"
        with client.audio.speech.with_streaming_response.create(model="tts", voice="alloy", input=words,
                                                                response_format="mp3") as streamed:
            assert streamed.headers["content-type"] == "audio/mpeg"
            assert b"".join(streamed.iter_bytes()) == speech_wav(words)


def test_speech_cost_counts_against_the_budget(audio: Audio) -> None:
    with audio.client("tight-key") as client:
        client.audio.speech.create(model="tts", voice="alloy", input="x" * 20)  # 20 characters: $0.0003 > $0.0002
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                client.audio.speech.create(model="tts", voice="alloy", input="again")
            except openai.RateLimitError as err:
                assert err.code == "insufficient_quota"
                break
            assert time.monotonic() < deadline, "the budget never saw the speech's cost"
            time.sleep(0.05)


def test_bad_uploads_are_400s_naming_the_field(audio: Audio) -> None:
    status, body = audio.post("/v1/audio/transcriptions", b"--x\r\ngarbage", "multipart/form-data; boundary=x")
    assert status == 400 and body["error"]["param"] == "file"
    form = b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nstt\r\n--b--\r\n'
    status, body = audio.post("/v1/audio/transcriptions", form, "multipart/form-data; boundary=b")
    assert status == 400 and body["error"]["param"] == "file" and "'file' is required" in body["error"]["message"]
    status, body = audio.post("/v1/audio/transcriptions", b'{"model": "stt"}', "application/json")
    assert status == 400 and "multipart/form-data" in body["error"]["message"]
    clip = wav(0.5)
    form = (b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nstt\r\n'
            b'--b\r\nContent-Disposition: form-data; name="response_format"\r\n\r\nmp4\r\n'
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            b"Content-Type: audio/wav\r\n\r\n" + clip + b"\r\n--b--\r\n")
    status, body = audio.post("/v1/audio/transcriptions", form, "multipart/form-data; boundary=b")
    assert status == 400 and body["error"]["param"] == "response_format"
    status, body = audio.post("/v1/audio/transcriptions", form[: len(form) // 2], "multipart/form-data; boundary=b")
    assert status == 400 and "closing boundary" in body["error"]["message"]
    with audio.client() as client:
        with pytest.raises(openai.BadRequestError) as kind:
            client.chat.completions.create(model="stt", messages=[{"role": "user", "content": "hi"}])
        assert kind.value.code == "model_kind_mismatch" and "transcription" in kind.value.message
        with pytest.raises(openai.BadRequestError) as missing:
            client.audio.speech.create(model="tts", voice="alloy", input="")
        assert missing.value.param == "input"


def explain(audio: Audio, endpoint: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        audio.gateway.url(f"/admin/routes/explain?endpoint={endpoint}&tenant=team"), data=json.dumps(body).encode(),
        method="POST", headers={"authorization": "Bearer adm", "content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_route_explain_knows_audio(audio: Audio) -> None:
    assert explain(audio, "transcription", {"model": "stt", "language": "en"})["attempts"] == ["whisper-a", "whisper-b"]
    assert explain(audio, "speech", {"model": "tts", "input": "hi", "voice": "alloy"})["attempts"] == ["voice"]
    spoken = explain(audio, "chat", {"model": "talk", "modalities": ["text", "audio"],
                                     "messages": [{"role": "user", "content": "hi"}]})
    assert spoken["attempts"] == ["omni"]
    assert spoken["excluded"] == [{"deployment": "text-local", "reason": "capabilities (lacks audio_out)"}]
