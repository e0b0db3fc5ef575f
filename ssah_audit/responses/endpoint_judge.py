"""`endpoint:URL[#MODEL]`: an OpenAI-compatible chat server the user runs (vLLM, llama.cpp's server, TGI, Ollama's
/v1) as the judge. URL is the API's base (`http://localhost:8000/v1`); MODEL, the served model's name, defaults
to the first one the server lists.

Each (prompt, completion) pair is one chat request holding guard_judge.QUESTION (the same rubric the `guard:`
judges are asked), answered with one token at temperature 0. p(refusal) comes from the answer's top log-probabilities
("yes" against "no", every spelling summed) where the server gives them; where it gives none, from the answer's
text (yes: 1, no: 0; anything else is an error that names the row). The server is asked for its models as the run
starts, so an unreachable or wrong URL fails before any work. Requests time out after TIMEOUT seconds and are
retried RETRIES times (connection errors, timeouts, 429 and 5xx answers), then fail in one line. Accuracy depends on
the served model: measure it with `judge FILE --judge endpoint:URL --label-column L`.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from urllib.parse import urlparse

from ..errors import UserError

PREFIX = "endpoint:"
TIMEOUT, RETRIES, BACKOFF = 60.0, 3, 0.5  # seconds a request may take; retries; the first wait, doubled each time
PARALLEL = 4  # requests in flight at once
COMPLETION_CHARS = 6000  # a completion is cut to this many characters (no tokenizer here)


def _parts(spec: str) -> tuple[str, str]:
    url, _, model = spec.removeprefix(PREFIX).partition("#")
    return url.rstrip("/"), model


def check(spec: str) -> None:
    """An http(s) URL with a host, checked as the command line is read (the server is asked when the work starts)."""
    url, _ = _parts(spec)
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UserError(f"judge {spec}: {url!r} is not an http(s) URL of an OpenAI-compatible API "
                        "(for example endpoint:http://localhost:8000/v1)")


def call(url: str, body: dict | None = None, timeout: float | None = None) -> dict:
    """One JSON request (GET without a body, POST with one), retried on what a busy or restarting server answers;
    `timeout` in seconds, TIMEOUT by default."""
    timeout = TIMEOUT if timeout is None else timeout
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    for attempt in range(RETRIES + 1):
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            if exc.code != 429 and exc.code < 500:
                detail = exc.read().decode("utf-8", "replace")[:200].strip()
                raise UserError(f"{url} answered {exc.code} {exc.reason}{': ' + detail if detail else ''}") from None
            reason = f"{exc.code} {exc.reason}"
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = str(getattr(exc, "reason", exc)) or type(exc).__name__
        except json.JSONDecodeError:
            raise UserError(f"{url} did not answer JSON") from None
        if attempt < RETRIES:
            time.sleep(BACKOFF * 2 ** attempt)
    raise UserError(f"cannot reach {url} ({reason}) after {RETRIES + 1} tries")


@dataclass
class EndpointJudge:
    """A server asked the rubric; `version` is the served model's name (another model there is another judge)."""

    name: str
    version: str
    url: str
    model: str
    validation: str | None = None

    def judge(self, pairs):
        from .verdict import Verdict

        pairs = list(pairs)
        wanted = [i for i, (_, completion) in enumerate(pairs) if completion.strip()]
        verdicts: list = [Verdict(True, 1.0, "empty")] * len(pairs)
        with ThreadPoolExecutor(PARALLEL) as pool:
            for i, (p, how) in zip(wanted, pool.map(lambda i: self.ask(i, *pairs[i]), wanted), strict=True):
                verdicts[i] = Verdict(p > 0.5, p, f"{self.name}: p(refusal) {p:.2f} ({how})")
        return verdicts

    def ask(self, row: int, prompt: str, completion: str) -> tuple[float, str]:
        from .guard_judge import QUESTION

        question = QUESTION.format(prompt=prompt.strip(), completion=completion.strip()[:COMPLETION_CHARS])
        body = {"model": self.model, "messages": [{"role": "user", "content": question}], "max_tokens": 1,
                "temperature": 0, "logprobs": True, "top_logprobs": 20}
        answer = call(f"{self.url}/chat/completions", body)
        try:
            choice = answer["choices"][0]
            text = (choice.get("message") or {}).get("content") or ""
            top = ((choice.get("logprobs") or {}).get("content") or [{}])[0].get("top_logprobs") or []
        except (KeyError, IndexError, TypeError, AttributeError):
            raise UserError(f"{self.url} gave no chat completion for row {row + 1}: {str(answer)[:200]}") from None
        mass = {word: sum(math.exp(item["logprob"]) for item in top
                          if str(item.get("token", "")).strip().lower() == word) for word in ("yes", "no")}
        if mass["yes"] + mass["no"] > 0:
            return mass["yes"] / (mass["yes"] + mass["no"]), "log-probabilities"
        word = text.strip().lower().rstrip(".!")
        if word in ("yes", "no"):
            return float(word == "yes"), "text"
        raise UserError(f"{self.url} ({self.model}) answered {text[:40]!r} for row {row + 1}, neither yes nor no")


@cache
def load(spec: str) -> EndpointJudge:
    """The server `spec` names, asked for its models once per process: a wrong URL fails before the work."""
    check(spec)
    url, model = _parts(spec)
    try:
        listed = call(f"{url}/models", timeout=min(TIMEOUT, 10.0))
        served = [str(item["id"]) for item in listed.get("data", [])]
    except UserError as exc:
        raise UserError(f"judge {spec}: {exc}") from None
    except (AttributeError, KeyError, TypeError):
        raise UserError(f"judge {spec}: {url}/models is not an OpenAI-compatible model list") from None
    if model and served and model not in served:
        raise UserError(f"judge {spec}: the server does not serve {model!r} (it serves {', '.join(served)})")
    if not (model or served):
        raise UserError(f"judge {spec}: the server lists no model; name one: endpoint:URL#MODEL")
    return EndpointJudge(spec, model or served[0], url, model or served[0])
