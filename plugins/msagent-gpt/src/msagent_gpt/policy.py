"""The ``gpt`` policy: any OpenAI-compatible chat-completions endpoint (OpenAI, sglang, vLLM).

Requests go through the ``openai`` SDK, whose own retry loop (``max_retries``, exponential
backoff, ``Retry-After`` honoured) covers 429s, 5xx and timeouts. What still fails after the
retries raises :class:`msagent.errors.PolicyError`; the agent records it on the trajectory and
ends the episode. Each reply's ``usage`` holds the token counts the server reported, the
latency, the SDK retries taken and, when a price table is given, ``cost_usd``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any

from msagent import Episode, Policy, Reply, protocol
from msagent.errors import InvalidInput, PolicyError
from msagent.options import Option

from . import messages as chat

MODEL_ENV = "MSAGENT_GPT_MODEL"


class GPTPolicy(Policy):
    """Chat-completions policy.

    Options: ``model`` (or ``$MSAGENT_GPT_MODEL``), ``api_key`` (or ``$OPENAI_API_KEY``;
    "EMPTY" is sent to a ``base_url`` without one, as local servers expect), ``base_url`` (or
    ``$OPENAI_BASE_URL``; default OpenAI), ``tool_mode`` ("native": ``tools=`` for API models;
    "prompt": the checkpoint's system prompt with the schemas as text, for the checkpoint
    served by sglang/vLLM), ``timeout`` (seconds per request, 60), ``max_retries`` (SDK
    retries, 3), ``max_concurrency`` (requests in flight per policy, 8), ``max_tokens`` (512),
    ``temperature`` (0.0; None sends none, for models that refuse one), ``retry_temperature``
    (0.7: used when the agent asks again after a rejected reply), ``tool_choice`` (native
    mode: "required", or "auto"/None for servers without it), ``cost_per_1k_input`` /
    ``cost_per_1k_output`` (USD per 1000 tokens), ``image_size`` (512), ``extra_body``
    (dict passed through, e.g. vLLM sampling options).
    """

    name = "gpt"
    # sampling only: the model, endpoint, key, timeouts and request bodies are the operator's
    client_options = {
        "temperature": Option(float, 0.0, 2.0, optional=True),
        "retry_temperature": Option(float, 0.0, 2.0),
        "max_tokens": Option(int, 1, 4096),
        "tool_mode": Option(str, choices=chat.TOOL_MODES),
    }

    def __init__(self, model: str | None = None, *, api_key: str | None = None,
                 base_url: str | None = None, tool_mode: str = "native", timeout: float = 60.0,
                 max_retries: int = 3, max_concurrency: int = 8, max_tokens: int = 512,
                 temperature: float | None = 0.0, retry_temperature: float = 0.7,
                 tool_choice: str | None = "required",
                 cost_per_1k_input: float | None = None, cost_per_1k_output: float | None = None,
                 image_size: int = protocol.POLICY_IMAGE_SIZE,
                 extra_body: Mapping[str, Any] | None = None) -> None:
        self.model = model or os.environ.get(MODEL_ENV) or ""
        if not self.model:
            raise InvalidInput(f"the gpt policy needs a model name: pass model= (CLI: "
                               f"--policy-option model=gpt-4o) or set ${MODEL_ENV}")
        if tool_mode not in chat.TOOL_MODES:
            raise InvalidInput(f"tool_mode must be one of {chat.TOOL_MODES}, got {tool_mode!r}")
        if int(max_concurrency) < 1 or int(max_retries) < 0 or float(timeout) <= 0:
            raise InvalidInput("max_concurrency must be ≥ 1, max_retries ≥ 0 and timeout > 0")
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or ("EMPTY" if self.base_url else "")
        if not self.api_key:
            raise InvalidInput("the gpt policy needs an API key: set $OPENAI_API_KEY or pass "
                               "api_key=; for a local sglang/vLLM server pass base_url= instead")
        self.tool_mode = tool_mode
        self.timeout, self.max_retries = float(timeout), int(max_retries)
        self.max_concurrency, self.max_tokens = int(max_concurrency), int(max_tokens)
        self.temperature = None if temperature is None else float(temperature)
        self.retry_temperature = float(retry_temperature)
        self.tool_choice = tool_choice
        self.prices = (cost_per_1k_input, cost_per_1k_output)
        self.image_size = int(image_size)
        self.extra_body = dict(extra_body or {})
        self._client = None
        self._sync_slots = threading.BoundedSemaphore(self.max_concurrency)
        self._per_loop: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._images: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    # -- the Policy contract -----------------------------------------------------
    def act(self, episode: Episode) -> Reply:
        request = self._request(episode)
        with self._sync_slots:
            start = time.perf_counter()
            with self._policy_errors():
                raw = self._sync_client().chat.completions.with_raw_response.create(
                    **as_sent(request))
                return self._reply(raw, start)

    async def aact(self, episode: Episode) -> Reply:
        request = await asyncio.to_thread(self._request, episode)  # PNG encoding off the loop
        client, slots = self._async_client()
        async with slots:
            start = time.perf_counter()
            with self._policy_errors():
                raw = await client.chat.completions.with_raw_response.create(**as_sent(request))
                return self._reply(raw, start)

    @contextlib.contextmanager
    def _policy_errors(self):
        """Turn API failures left after the SDK's retries into PolicyError (others propagate)."""
        try:
            yield
        except PolicyError:
            raise
        except Exception as exc:
            failure = self._error(exc)
            if failure is None:
                raise
            raise failure from exc

    def end_episode(self, episode: Episode) -> None:
        with self._lock:
            self._images.pop(episode.id, None)

    # -- requests ------------------------------------------------------------------
    def _request(self, episode: Episode) -> dict[str, Any]:
        with self._lock:
            cache = self._images.setdefault(episode.id, [])
        urls = chat.image_urls(episode, cache, self.image_size)
        retry = episode.feedback is not None
        request: dict[str, Any] = {"model": self.model,
                                   "messages": chat.build(episode, self.tool_mode, urls)}
        temperature = self.retry_temperature if retry else self.temperature
        if temperature is not None:
            request["temperature"] = temperature
        if self.tool_mode == "native":  # API models: the newer token-limit name, tools natively
            request.update(max_completion_tokens=self.max_tokens, tools=chat.tools())
            if self.tool_choice:
                request["tool_choice"] = self.tool_choice
        else:
            request["max_tokens"] = self.max_tokens
        if self.extra_body:
            request["extra_body"] = self.extra_body
        return request

    def _client_options(self) -> dict[str, Any]:
        return {"api_key": self.api_key, "base_url": self.base_url, "timeout": self.timeout,
                "max_retries": self.max_retries}

    def _sync_client(self):
        with self._lock:
            if self._client is None:
                from openai import OpenAI

                self._client = OpenAI(**self._client_options())
            return self._client

    def _async_client(self):
        """(AsyncOpenAI client, semaphore) of the running event loop: both are bound to a loop."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if loop not in self._per_loop:
                from openai import AsyncOpenAI

                self._per_loop[loop] = (AsyncOpenAI(**self._client_options()),
                                        asyncio.Semaphore(self.max_concurrency))
            return self._per_loop[loop]

    # -- replies -------------------------------------------------------------------
    def _reply(self, raw: Any, start: float) -> Reply:
        completion = raw.parse()
        latency = time.perf_counter() - start
        if not getattr(completion, "choices", None):
            raise PolicyError(f"{self.model} returned no choices: {str(completion)[:200]}")
        choice = completion.choices[0]
        usage: dict[str, Any] = {"latency_s": latency, "requests": 1 + int(getattr(raw, "retries_taken", 0)),
                                 "finish_reason": choice.finish_reason or "", "model": completion.model or ""}
        if completion.usage is not None:
            usage["prompt_tokens"] = completion.usage.prompt_tokens or 0
            usage["completion_tokens"] = completion.usage.completion_tokens or 0
            cost = self.cost(usage["prompt_tokens"], usage["completion_tokens"])
            if cost is not None:
                usage["cost_usd"] = cost
        return Reply(chat.reply_text(choice.message), usage)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """USD for the token counts with the configured prices (None without a price table)."""
        per_in, per_out = self.prices
        if per_in is None and per_out is None:
            return None
        return prompt_tokens / 1000 * (per_in or 0.0) + completion_tokens / 1000 * (per_out or 0.0)

    def _error(self, exc: Exception) -> PolicyError | None:
        """A PolicyError saying what failed, or None for an error that is a bug here."""
        import openai

        where = f"{self.model} at {redact_url(self.base_url) if self.base_url else 'api.openai.com'}"
        retries = f" after {self.max_retries} retries" if self.max_retries else ""
        if isinstance(exc, openai.APITimeoutError):
            return PolicyError(f"{where} timed out ({self.timeout:g} s per request){retries}; "
                               "raise timeout= or check the server")
        if isinstance(exc, openai.APIStatusError):
            return PolicyError(f"{where} answered HTTP {exc.status_code}{retries}: "
                               f"{_short(exc.message)}")
        if isinstance(exc, openai.APIConnectionError):
            return PolicyError(f"cannot reach {where}{retries}: {_short(str(exc))}; "
                               "check base_url and that the server is running")
        if isinstance(exc, (openai.OpenAIError, ValueError, TypeError, AttributeError)):
            return PolicyError(f"{where} sent an unusable answer: {type(exc).__name__}: "
                               f"{_short(str(exc))}")
        return None


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def as_sent(request: dict[str, Any]) -> dict[str, Any]:
    """``request`` with its JSON-ready ``messages`` and ``tools`` passed through ``extra_body``,
    which the SDK sends as they are. Given as parameters, the SDK walks every message against
    its typed schema first: about 13 ms of CPU a request with a few images, which serializes
    concurrent episodes (``msagent eval --concurrency 32``). The body on the wire is the same."""
    body = {key: request[key] for key in ("messages", "tools") if key in request}
    rest = {key: value for key, value in request.items() if key not in body}
    rest["extra_body"] = {**body, **rest.get("extra_body", {})}
    rest["messages"] = []  # a required parameter; the extra body's list replaces it
    return rest


def redact_url(url: str) -> str:
    """``url`` without its user:password and query (errors reach API clients of the server)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "the configured base_url"
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "") if parts.username or parts.password \
        else parts.netloc
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

