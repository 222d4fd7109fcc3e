"""What the simulated provider hands litellm: usage objects shaped as the real models',
and litellm's logging left out of sim calls nobody listens to (issue 11).

Split from :mod:`orchestrator.sim_provider` (the behaviour of the simulation) because this
is the part that follows litellm's own types and internals, checked against litellm 1.110.2
(docs/sources.md#litellm-custom-provider-and-callbacks).
"""

from __future__ import annotations

from typing import Any

from cliffwatch.orchestrator import sim_cache
from cliffwatch.telemetry.pricing import import_litellm


def sim_usage(
    model: str,
    prompt: int,
    completion: int,
    read: int = 0,
    written: int = 0,
) -> Any:
    """The litellm ``Usage`` of a sim answer, in the shape litellm gives the real model's.

    ``prompt_tokens`` includes the cache reads and writes. Models whose provider bills cache
    writes (Anthropic's, :class:`orchestrator.sim_cache.CacheStyle` ``BREAKPOINT``) get what
    litellm's Anthropic transformation builds: ``prompt_tokens_details`` with
    ``cached_tokens``, ``cache_creation_tokens`` and ``text_tokens``, plus
    ``cache_creation_input_tokens`` / ``cache_read_input_tokens``. The others get OpenAI's
    ``prompt_tokens_details.cached_tokens``, 0 included: the simulated provider always says
    how much was cached, as real ones do.

    Args:
        model: the real model.
        prompt: prompt tokens, cache reads and writes included.
        completion: completion tokens.
        read: prompt tokens read from the cache.
        written: prompt tokens written to the cache.
    """
    from litellm.types.utils import PromptTokensDetailsWrapper, Usage

    if sim_cache.cache_style(model) is sim_cache.CacheStyle.BREAKPOINT:
        details = PromptTokensDetailsWrapper(
            cached_tokens=read,
            cache_creation_tokens=written,
            text_tokens=prompt - read - written,
        )
        return Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            prompt_tokens_details=details,
            cache_creation_input_tokens=written,
            cache_read_input_tokens=read,
        )
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details={"cached_tokens": read},
    )


_CALLBACK_LISTS = (
    "callbacks",
    "success_callback",
    "failure_callback",
    "input_callback",
    "service_callback",
    "_async_success_callback",
    "_async_failure_callback",
    "_async_input_callback",
)
"""litellm's module-level callback lists: a user's logger (``litellm.callbacks =
[CliffwatchLogger(...)]``, Langfuse, ...) is in one of them."""


def litellm_callbacks_registered() -> bool:
    """Whether any litellm callback is registered (then sim calls are logged as any call)."""
    litellm = import_litellm()
    return any(getattr(litellm, name, None) for name in _CALLBACK_LISTS)


def skip_litellm_logging(logging_obj: Any) -> bool:
    """Spare a sim call litellm's success and failure logging when nobody listens.

    litellm builds a standard logging payload and prices every response again after each
    call, callbacks or not (about a third of its per-call work in a demo, issue 11). When no
    callback is registered (:func:`litellm_callbacks_registered`), this marks the call's
    logging object as already logged, which is litellm's own guard against logging a call
    twice (``Logging.should_run_logging``) and its one-success-log-per-request claim
    (``claim_async_success_log``). With a callback registered nothing changes, so the
    litellm callback path (:mod:`telemetry.litellm_callback`) sees sim calls as any other.
    Best effort: a litellm without these internals simply logs.

    Returns:
        Whether logging was skipped.
    """
    if logging_obj is None or litellm_callbacks_registered():
        return False
    details = getattr(logging_obj, "model_call_details", None)
    if not isinstance(details, dict):
        return False
    for event in ("async_success", "sync_success", "async_failure", "sync_failure"):
        details[f"has_logged_{event}"] = True
    claim = getattr(logging_obj, "claim_async_success_log", None)
    if callable(claim):
        claim()
    return True
