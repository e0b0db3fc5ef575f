"""A small OpenAI-compatible chat server over a real (tiny) transformers model, for test_endpoint_judge.py: the
`endpoint:` judge is tested against a real server process and real HTTP, as a vLLM or llama.cpp server would
answer it (GET /v1/models; POST /v1/chat/completions with max_tokens 1, temperature 0, logprobs, top_logprobs).

Run: python tests/endpoint_server.py MODEL_FOLDER PORT_FILE [MODE]; it writes its port to PORT_FILE once it
listens. MODE: `ok`; `text` (no log-probabilities in answers); `flaky` (the first two completions answer 503);
`slow` (every completion waits 3 s first); `rambling` (answers "maybe").
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

MODEL_NAME = "tiny-judge"


def main() -> None:
    folder, port_file, mode = sys.argv[1], Path(sys.argv[2]), (sys.argv[3] if len(sys.argv) > 3 else "ok")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    lock, failures = threading.Lock(), {"left": 2 if mode == "flaky" else 0}

    def complete(body: dict) -> dict:
        text = tokenizer.apply_chat_template(body["messages"], tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with lock, torch.inference_mode():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), dim=-1)
        values, indices = logp.topk(min(int(body.get("top_logprobs") or 0) or 1, logp.numel()))
        top = [{"token": tokenizer.decode([int(i)]), "logprob": float(v)} for v, i in zip(values, indices, strict=True)]
        content = "maybe" if mode == "rambling" else top[0]["token"]
        choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "length"}
        if body.get("logprobs") and mode not in ("text", "rambling"):
            choice["logprobs"] = {"content": [{"token": content, "logprob": top[0]["logprob"], "top_logprobs": top}]}
        return {"object": "chat.completion", "model": MODEL_NAME, "choices": [choice]}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def answer(self, code: int, document: dict) -> None:
            data = json.dumps(document).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path.rstrip("/") == "/v1/models":
                self.answer(200, {"object": "list", "data": [{"id": MODEL_NAME, "object": "model"}]})
            else:
                self.answer(404, {"error": "not found"})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if self.path.rstrip("/") != "/v1/chat/completions":
                return self.answer(404, {"error": "not found"})
            if body.get("model") != MODEL_NAME:
                return self.answer(404, {"error": f"model {body.get('model')!r} not found"})
            with lock:
                failing = failures["left"] > 0
                failures["left"] -= failing
            if failing:
                return self.answer(503, {"error": "loading"})
            if mode == "slow":
                time.sleep(3)
            self.answer(200, complete(body))

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port_file.write_text(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    main()
