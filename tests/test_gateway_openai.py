"""The official openai client, sync and async, streaming and not, through a real gateway and fleet."""

from __future__ import annotations

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from harness import Harness

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "How green is this request?"}]


def client(h: Harness) -> openai.OpenAI:
    return openai.OpenAI(base_url=h.base_url + "/v1", api_key="any-key", max_retries=0)


def test_sync_chat_completion_with_headers_and_usage(gateway: Harness) -> None:
    before = len(gateway.tap.records)
    raw = client(gateway).chat.completions.with_raw_response.create(
        model="tiny-8b",
        messages=MESSAGES,
        max_tokens=7,
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "green " * 7
    assert completion.usage is not None and completion.usage.completion_tokens == 7
    assert raw.headers["x-bauxite-cluster"] in {"east", "west"}
    assert raw.headers["x-bauxite-region"] in {"us-east-1", "us-west-2"}
    assert raw.headers["x-bauxite-route-reason"]
    assert float(raw.headers["x-bauxite-grid-intensity"]) > 0
    assert float(raw.headers["x-bauxite-energy-wh"]) > 0
    assert float(raw.headers["x-bauxite-carbon-grams"]) > 0
    record = gateway.wait_records(before + 1)[before]
    assert (record.status, record.completion_tokens, record.model) == ("ok", 7, "tiny-8b")
    assert record.prompt_tokens == completion.usage.prompt_tokens
    assert record.cluster == raw.headers["x-bauxite-cluster"]
    assert record.department == "anonymous"


def test_sync_stream_passes_chunks_and_hides_gateway_usage_chunk(gateway: Harness) -> None:
    before = len(gateway.tap.records)
    stream = client(gateway).chat.completions.create(
        model="tiny-8b",
        messages=MESSAGES,
        max_tokens=5,
        stream=True,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "green " * 5
    # The gateway asked upstream for usage; the client did not, so it must not see the usage-only chunk.
    assert all(c.choices for c in chunks)
    record = gateway.wait_records(before + 1)[before]
    assert record.status == "ok" and record.completion_tokens == 5 and record.ttft_s >= 0


def test_sync_stream_with_client_requested_usage(gateway: Harness) -> None:
    stream = client(gateway).chat.completions.create(
        model="tiny-8b",
        messages=MESSAGES,
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4


async def test_async_client_chat_stream_completions_embeddings_models(gateway: Harness) -> None:
    aclient = openai.AsyncOpenAI(base_url=gateway.base_url + "/v1", api_key="k", max_retries=0)
    completion = await aclient.chat.completions.create(model="tiny-8b", messages=MESSAGES, max_tokens=3)
    assert completion.choices[0].message.content == "green " * 3
    stream = await aclient.chat.completions.create(
        model="tiny-8b",
        messages=MESSAGES,
        max_tokens=6,
        stream=True,
    )
    pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert "".join(pieces) == "green " * 6
    legacy = await aclient.completions.create(model="tiny-8b", prompt="Say hi", max_tokens=2)
    assert legacy.choices[0].text == "green " * 2
    embedding = await aclient.embeddings.create(model="embed-small", input=["a", "b"])
    assert len(embedding.data) == 2 and len(embedding.data[0].embedding) == 16
    models = await aclient.models.list()
    assert {m.id for m in models.data} == {"tiny-8b", "embed-small"}
    await aclient.close()


def test_unknown_model_is_404_in_openai_shape(gateway: Harness) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client(gateway).chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert "no-such-model" in str(info.value)


def test_least_loaded_spreads_across_clusters(gateway: Harness) -> None:
    seen = set()
    for _ in range(6):
        raw = client(gateway).chat.completions.with_raw_response.create(
            model="tiny-8b",
            messages=MESSAGES,
            max_tokens=1,
        )
        seen.add(raw.headers["x-bauxite-cluster"])
    assert seen == {"east", "west"}
