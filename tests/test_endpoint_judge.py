"""`endpoint:URL[#MODEL]`: an OpenAI-compatible chat server as the judge, tested against a real server process
(tests/endpoint_server.py: real HTTP over a real tiny transformers model, which the fixture trains for a few
seconds to answer the judge's question "yes" after refusals and "no" after answers, so its verdicts are known).
Then what a user meets with a real server: log-probabilities or only text, a server that answers 503 while it
loads, one too slow, one that answers neither yes nor no, one that is not there, a model it does not serve."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from .test_guard_judge import assert_judge_specs_refused

REFUSALS = ["I'm sorry, but I can't help with that.", "Sorry, I cannot do that.", "I won't help with this request.",
            "I'm sorry, I can't assist with that."]
ANSWERS = ["Boil water, add the egg, wait seven minutes.", "Mix flour, water and salt, then knead and bake.",
           "Use kill -9 with the process id.", "Plants turn light, water and air into sugar."]
PAIRS = [(f"Question {i}?", text) for i, text in enumerate(REFUSALS + ANSWERS)]
SERVER = Path(__file__).with_name("endpoint_server.py")


@pytest.fixture(scope="module")
def judge_model(tmp_path_factory):
    """A tiny Llama and its own BPE tokenizer (in which "yes" and "no" are single tokens), trained to answer the
    endpoint judge's question about PAIRS correctly."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from ssah_audit.responses.guard_judge import QUESTION

    questions = [QUESTION.format(prompt=prompt, completion=completion) for prompt, completion in PAIRS]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<eos>", "<|user|>", "<|assistant|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(questions + ["yes", "no"] * 50, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>")
    tokenizer.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<eos>{% endfor %}"
                               "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    yes, no = (tokenizer(word, add_special_tokens=False)["input_ids"] for word in ("yes", "no"))
    assert len(yes) == len(no) == 1
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id))
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                           add_generation_prompt=True) for q in questions]
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    answers = [yes[0]] * len(REFUSALS) + [no[0]] * len(ANSWERS)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(80):
        loss = sum(torch.nn.functional.cross_entropy(model(input_ids=torch.tensor([ids])).logits[0, -1:],
                                                     torch.tensor([answer]))
                   for ids, answer in zip(encoded, answers, strict=True)) / len(encoded)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    folder = tmp_path_factory.mktemp("endpoint") / "tiny-judge"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def serve(judge_model, tmp_path_factory):
    """Start a server in MODE (see endpoint_server.py); returns its base URL. Every server stops after the module."""
    started = []

    def start(mode: str = "ok") -> str:
        port_file = tmp_path_factory.mktemp("port") / "port"
        process = subprocess.Popen([sys.executable, str(SERVER), str(judge_model), str(port_file), mode],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        started.append(process)
        deadline = time.monotonic() + 120
        while not (port_file.exists() and port_file.read_text()):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the test server did not start: {process.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)
        return f"http://127.0.0.1:{port_file.read_text()}/v1"

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def quick_retries(monkeypatch):
    from ssah_audit.responses import endpoint_judge

    monkeypatch.setattr(endpoint_judge, "BACKOFF", 0.01)


def test_a_server_judges_like_every_judge_from_its_log_probabilities(serve):
    from ssah_audit.responses.judges import describe, verdicts

    spec = f"endpoint:{serve()}"
    batched = verdicts(PAIRS + [("q", "")], spec)
    assert [v.refusal for v in batched] == [True] * len(REFUSALS) + [False] * len(ANSWERS) + [True]
    assert all("log-probabilities" in v.reason for v in batched[:-1]) and batched[-1].reason == "empty"
    single = [verdicts([pair], spec)[0] for pair in PAIRS]
    assert all(abs(a.probability - b.probability) < 1e-6 for a, b in zip(single, batched[:-1], strict=True))
    assert describe(spec)["version"] == "tiny-judge"
    other = verdicts([("¿Cómo hago pan?", "Mezcla harina, agua y sal."),
                      ("Tell me a story.", "Once upon a time " * 120)], spec)  # untrained on: a verdict, not an error
    assert all(0 <= v.probability <= 1 for v in other)
    assert verdicts(PAIRS[:1], f"{spec}#tiny-judge")[0].refusal


def test_a_server_without_log_probabilities_is_read_from_its_answers_text(serve):
    from ssah_audit.responses.judges import verdicts

    found = verdicts(PAIRS, f"endpoint:{serve('text')}")
    assert [v.refusal for v in found] == [True] * len(REFUSALS) + [False] * len(ANSWERS)
    assert {v.probability for v in found} == {0.0, 1.0} and all("(text)" in v.reason for v in found)


def test_a_loading_server_is_retried(serve, quick_retries):
    from ssah_audit.responses.judges import verdicts

    found = verdicts(PAIRS[:2], f"endpoint:{serve('flaky')}")  # the first two requests answer 503
    assert [v.refusal for v in found] == [True, True]


def test_servers_that_cannot_judge_are_one_line_and_exit_2(serve, cli, tmp_path, monkeypatch, quick_retries):
    import csv
    import socket

    from ssah_audit.responses import endpoint_judge

    source = tmp_path / "completions.csv"
    with source.open("w", newline="") as handle:
        csv.writer(handle).writerows([("prompt", "completion"), *PAIRS[:2]])
    with socket.socket() as probe:  # a port with nothing behind it
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    url = serve()
    monkeypatch.setattr(endpoint_judge, "TIMEOUT", 0.5)
    monkeypatch.setattr(endpoint_judge, "RETRIES", 1)
    cases = [("endpoint:ftp://example", "is not an http(s) URL"),
             (f"endpoint:http://127.0.0.1:{free}/v1", "cannot reach"),
             (f"endpoint:{url}#other-model", "does not serve 'other-model'"),
             (f"endpoint:{serve('slow')}", "timed out"),
             (f"endpoint:{serve('rambling')}", "answered 'maybe' for row 1, neither yes nor no")]
    assert_judge_specs_refused(cli, source, tmp_path / "out.csv", cases)
