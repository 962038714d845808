"""Writes corpus.json: recorded-shape upstream answers with their costs worked out in exact decimal arithmetic.

Run `python tests/unit/providers/golden/build_corpus.py` after changing a case. The costs here follow the billing
rules as the vendors publish them, written out independently of gateway/ (which this script does not import):
Model Studio picks one tier by the request's total input tokens (cached included) and bills every token of the
request at it; cache reads and writes have their own prices; a request that reasoned pays the thinking output
price for all its output where one is listed; Anthropic reports cache reads and writes beside `input_tokens`.
"""

from __future__ import annotations

import json
from decimal import Decimal as D
from pathlib import Path
from typing import Any

RATES = {"USD": D(1), "CNY": D("0.14"), "EUR": D("1.08")}
MID_2026 = 1_780_000_000  # 2026-05-28: before the dated entry of "dated"
MID_2027 = 1_810_000_000  # 2027-05-11: after it

# name -> (policy price as YAML flow text, tiers as (bound, input, output, cached, write, thinking), currency)
PRICES: dict[str, tuple[str, list[tuple[int | None, str, str, str | None, str | None, str | None]], str]] = {
    "qwen3.6-plus-intl": (
        "{tiers: [{max_input_tokens: 256000, input_per_mtok: 0.5, output_per_mtok: 3.0, cached_input_per_mtok: 0.1,"
        " cache_write_per_mtok: 0.625}, {input_per_mtok: 2.0, output_per_mtok: 6.0, cached_input_per_mtok: 0.4,"
        " cache_write_per_mtok: 2.5}]}",
        [(256000, "0.5", "3.0", "0.1", "0.625", None), (None, "2.0", "6.0", "0.4", "2.5", None)],
        "USD",
    ),
    "qwen-plus-cn-thinking": (
        "{input_per_mtok: 0.8, output_per_mtok: 2.0, thinking_output_per_mtok: 8.0, cached_input_per_mtok: 0.16,"
        " currency: CNY}",
        [(None, "0.8", "2.0", "0.16", None, "8.0")],
        "CNY",
    ),
    "qwen-flash-cn-3-tiers": (
        "{currency: CNY, tiers: [{max_input_tokens: 128000, input_per_mtok: 0.15, output_per_mtok: 1.5,"
        " cached_input_per_mtok: 0.03, cache_write_per_mtok: 0.1875}, {max_input_tokens: 256000, input_per_mtok: 0.6,"
        " output_per_mtok: 6, cached_input_per_mtok: 0.12, cache_write_per_mtok: 0.75}, {input_per_mtok: 1.2,"
        " output_per_mtok: 12, cached_input_per_mtok: 0.24, cache_write_per_mtok: 1.5}]}",
        [
            (128000, "0.15", "1.5", "0.03", "0.1875", None),
            (256000, "0.6", "6", "0.12", "0.75", None),
            (None, "1.2", "12", "0.24", "1.5", None),
        ],
        "CNY",
    ),
    "openai-usd": (
        "{input_per_mtok: 2.5, output_per_mtok: 10, cached_input_per_mtok: 1.25}",
        [(None, "2.5", "10", "1.25", None, None)],
        "USD",
    ),
    "anthropic-usd": (
        "{input_per_mtok: 3, output_per_mtok: 15, cached_input_per_mtok: 0.3, cache_write_per_mtok: 3.75}",
        [(None, "3", "15", "0.3", "3.75", None)],
        "USD",
    ),
    "embedding-eur": (
        "{input_per_mtok: 0.02, output_per_mtok: 0, currency: EUR}", [(None, "0.02", "0", None, None, None)], "EUR"
    ),
}
DATED = (
    "[{input_per_mtok: 1, output_per_mtok: 2}, {effective_from: 2027-01-01, input_per_mtok: 1.5, output_per_mtok: 3,"
    " cached_input_per_mtok: 0.3, currency: CNY}]"
)
DATED_ENTRIES = {  # POSIX time -> (tiers, currency) in force
    MID_2026: ([(None, "1", "2", None, None, None)], "USD"),
    MID_2027: ([(None, "1.5", "3", "0.3", None, None)], "CNY"),
}


def cost(tiers: list[Any], currency: str, total_in: int, cached: int, written: int, output: int, reasoning: int) -> D:
    _bound, inp, out, cached_p, write_p, thinking = next(t for t in tiers if t[0] is None or total_in <= t[0])
    fresh = total_in - cached - written
    out_price = D(thinking) if reasoning and thinking else D(out)
    amount = (
        fresh * D(inp)
        + cached * D(cached_p if cached_p is not None else inp)
        + written * D(write_p if write_p is not None else inp)
        + output * out_price
    ) / D(1_000_000)
    return amount * RATES[currency]


def chat_usage(prompt: int, completion: int, cached: int, written: int, reasoning: int) -> dict[str, Any]:
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                             "total_tokens": prompt + completion}
    details: dict[str, Any] = {"cached_tokens": cached}
    if written:  # Model Studio's explicit cache
        details.update({"cache_creation": {"ephemeral_5m_input_tokens": written},
                        "cache_creation_input_tokens": written, "cache_type": "ephemeral"})
    usage["prompt_tokens_details"] = details
    if reasoning:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return usage


def chat_answer(model: str, usage: dict[str, Any], stream: bool, reasoning: bool) -> Any:
    if not stream:
        message: dict[str, Any] = {"role": "assistant", "content": "Hello."}
        if reasoning:
            message["reasoning_content"] = "The user greets me."
        return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1780000000, "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}], "usage": usage}
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1780000000, "model": model}
    events = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
    if reasoning:
        events.append({**base, "choices": [{"index": 0, "delta": {"content": None,
                                                                  "reasoning_content": "The user greets me."}}]})
    events += [
        {**base, "choices": [{"index": 0, "delta": {"content": "Hello."}}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {**base, "choices": [], "usage": usage},  # the include_usage chunk
    ]
    return events


def messages_answer(inp: int, cached: int, written: int, output: int, stream: bool, full_delta: bool) -> Any:
    """A Messages reply or stream; `full_delta`: its message_delta repeats the cumulative input and cache counts
    (as Anthropic's current API does), else it carries only output_tokens (as older versions did)."""
    start_usage = {"input_tokens": inp, "cache_creation_input_tokens": written, "cache_read_input_tokens": cached,
                   "output_tokens": 1}
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
               "content": [{"type": "text", "text": "Hello."}], "stop_reason": "end_turn", "stop_sequence": None,
               "usage": {**start_usage, "output_tokens": output}}
    if not stream:
        return message
    return [
        ["message_start", {"type": "message_start", "message": {**message, "content": [], "stop_reason": None,
                                                                "usage": start_usage}}],
        ["content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}],
        ["content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "Hello."}}],
        ["content_block_stop", {"type": "content_block_stop", "index": 0}],
        ["message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {**start_usage, "output_tokens": output} if full_delta
                           else {"output_tokens": output}}],
        ["message_stop", {"type": "message_stop"}],
    ]


def case(
    name: str, price: str, endpoint: str, stream: bool, answer: Any, usd: D, at: int | None = None
) -> dict[str, Any]:
    return {"name": name, "price": price, "endpoint": endpoint, "stream": stream, "answer": answer,
            "at": at, "expected_usd": str(usd)}


def build() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    chat_sets = {
        "qwen3.6-plus-intl": [  # (prompt, completion, cached, written, reasoning)
            (1_000, 200, 0, 0, 0), (1_000, 200, 500, 0, 0), (255_999, 1_000, 0, 0, 0), (256_000, 1_000, 0, 0, 0),
            (256_001, 1_000, 0, 0, 0), (256_001, 10, 250_000, 0, 0), (300_000, 4_000, 0, 20_000, 0),
            (900_000, 8_000, 100_000, 0, 3_000), (12_345, 678, 0, 4_096, 0), (200_000, 32_000, 150_000, 0, 30_000),
            (256_000, 1, 256_000, 0, 0), (1, 1, 0, 0, 0), (500_000, 2_000, 0, 0, 0), (1_000_000, 1_000, 0, 0, 0),
            (64_000, 500, 32_000, 0, 0), (256_001, 0, 0, 256_001, 0), (100, 50, 0, 0, 40),
        ],
        "qwen-plus-cn-thinking": [
            (2_000, 500, 0, 0, 0), (2_000, 500, 0, 0, 300), (50_000, 8_000, 25_000, 0, 6_000), (10, 1, 0, 0, 1),
            (131_072, 16_384, 65_536, 0, 0),
        ],
        "qwen-flash-cn-3-tiers": [
            (128_000, 100, 0, 0, 0), (128_001, 100, 0, 0, 0), (256_000, 100, 64_000, 0, 0),
            (256_001, 100, 0, 2_048, 0), (999_000, 32_000, 500_000, 0, 0),
        ],
        "openai-usd": [
            (1_200, 300, 1_024, 0, 0), (50_000, 2_000, 0, 0, 1_500), (8, 2, 0, 0, 0),
            (400_000, 100_000, 200_000, 0, 90_000), (128, 4_096, 0, 0, 4_000),
        ],
    }
    for price_name, sets in chat_sets.items():
        yaml, tiers, currency = PRICES[price_name]
        for prompt, completion, cached, written, reasoning in sets:
            usd = cost(tiers, currency, prompt, cached, written, completion, reasoning)
            usage = chat_usage(prompt, completion, cached, written, reasoning)
            for stream in (False, True):
                name = f"{price_name} chat {'stream' if stream else 'reply'} in={prompt} cached={cached} " \
                       f"written={written} out={completion} reasoning={reasoning}"
                cases.append(case(name, yaml, "chat", stream, chat_answer("m", usage, stream, bool(reasoning)), usd))
    yaml, tiers, currency = PRICES["anthropic-usd"]
    for index, (inp, cached, written, output) in enumerate([
        (12, 0, 0, 40), (12, 4_000, 0, 40), (12, 0, 4_000, 40), (300, 10_000, 2_000, 800), (0, 50_000, 0, 1),
        (2_048, 0, 100_000, 4_096), (7, 1_024, 1_024, 7), (150_000, 40_000, 9_000, 64_000),
        (1, 0, 0, 0), (90_000, 90_000, 10_000, 2_000),
    ]):
        usd = cost(tiers, currency, inp + cached + written, cached, written, output, 0)
        for stream in (False, True):
            name = f"anthropic messages {'stream' if stream else 'reply'} input={inp} read={cached} " \
                   f"written={written} out={output}"
            answer = messages_answer(inp, cached, written, output, stream, index % 2 == 1)
            cases.append(case(name, yaml, "messages", stream, answer, usd))
    for inp, cached, written, output in [(300, 10_000, 2_000, 800), (12, 0, 4_000, 40)]:
        # Anthropic translated by litellm: OpenAI's shape, cache reads and writes counted inside prompt_tokens
        usd = cost(tiers, currency, inp + cached + written, cached, written, output, 0)
        usage = {"prompt_tokens": inp + cached + written, "completion_tokens": output,
                 "total_tokens": inp + cached + written + output,
                 "prompt_tokens_details": {"cached_tokens": cached, "cache_creation_tokens": written,
                                           "text_tokens": inp},
                 "cache_creation_input_tokens": written, "cache_read_input_tokens": cached}
        for stream in (False, True):
            name = f"anthropic via litellm chat {'stream' if stream else 'reply'} input={inp} read={cached} " \
                   f"written={written} out={output}"
            cases.append(case(name, yaml, "chat", stream, chat_answer("claude", usage, stream, False), usd))
    yaml, tiers, currency = PRICES["embedding-eur"]
    for prompt in (1, 8, 512, 8_192, 100_000, 2_000_000):
        usd = cost(tiers, currency, prompt, 0, 0, 0, 0)
        answer = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.1, -0.2]}],
                  "model": "text-embedding-v4", "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}
        cases.append(case(f"embedding-eur embeddings in={prompt}", yaml, "embedding", False, answer, usd))
    for at, (tiers, currency) in DATED_ENTRIES.items():
        for prompt, completion, cached in [(10_000, 1_000, 0), (10_000, 1_000, 4_000), (3, 3, 1)]:
            usd = cost(tiers, currency, prompt, cached, 0, completion, 0)
            usage = chat_usage(prompt, completion, cached, 0, 0)
            for stream in (False, True):
                name = f"dated book at {at} chat {'stream' if stream else 'reply'} in={prompt} cached={cached}"
                cases.append(case(name, DATED, "chat", stream, chat_answer("m", usage, stream, False), usd, at))
    return cases


if __name__ == "__main__":
    corpus = build()
    path = Path(__file__).with_name("corpus.json")
    path.write_text(json.dumps({"cases": corpus}, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{len(corpus)} cases written to {path}")
