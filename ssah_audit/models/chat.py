"""Chat formatting through the tokenizer's own template, with one documented fallback.

Models without a chat template (base models) get the plain Alpaca-style layout FALLBACK_TEMPLATE and the
reports say so. Formatted text already holds any special tokens the template adds (BOS included), so
encode it with `add_special_tokens=False`.
"""

from __future__ import annotations

FALLBACK_TEMPLATE = "### Instruction:\n{prompt}\n\n### Response:\n"


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def format_prompt(tokenizer, prompt: str, system: str | None = None) -> str:
    """The text a model sees before it answers `prompt` (generation prompt included)."""
    if not has_chat_template(tokenizer):
        head = f"{system}\n\n" if system else ""
        return head + FALLBACK_TEMPLATE.format(prompt=prompt)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def format_exchange(tokenizer, prompt: str, response: str, system: str | None = None,
                    finished: bool = True) -> tuple[str, str]:
    """(prompt_text, full_text) for a prompt and its response; full_text starts with prompt_text, so the
    response tokens are the ones after the prompt's (what SFT loss and answer NLL are computed on).

    An unfinished response (a generation cut at its token limit) gets no end-of-turn token: training on it
    must not teach the model to stop mid-sentence."""
    prompt_text = format_prompt(tokenizer, prompt, system)
    if not finished:
        return prompt_text, prompt_text + response
    end = tokenizer.eos_token or ""
    if has_chat_template(tokenizer):
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        if full.startswith(prompt_text):
            return prompt_text, full
    return prompt_text, prompt_text + response + end


def encode_exchange(tokenizer, prompt: str, response: str, system: str | None = None,
                    finished: bool = True) -> tuple[list[int], int]:
    """Token ids of the whole exchange and how many of them are the prompt (the rest are the response)."""
    prompt_text, full_text = format_exchange(tokenizer, prompt, response, system, finished)
    n_prompt = len(tokenizer(prompt_text, add_special_tokens=False).input_ids)
    return tokenizer(full_text, add_special_tokens=False).input_ids, n_prompt
