"""An OpenAI-compatible chat server on 127.0.0.1 that answers like the scripted engine.

It stands in for a vLLM or Ollama server so the remote backend (``dspy.LM`` with ``api_base``) is tested over real
HTTP without leaving the machine.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.scripted import ScriptedEngine


class ScriptedOpenAIServer:
    def __init__(self, engine: ScriptedEngine):
        self.engine = engine
        self.requests = 0
        engine_ref = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # http.server dispatches on this exact name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if not self.path.endswith("/chat/completions"):
                    self.send_error(404)
                    return
                engine_ref.requests += 1
                stop = body.get("stop") or ()
                text = engine_ref.engine.answer(body["messages"], tuple([stop] if isinstance(stop, str) else stop))
                payload = {"id": f"chatcmpl-{engine_ref.requests}", "object": "chat.completion", "created": 0,
                           "model": body.get("model", "scripted"),
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": text}}],
                           "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                """Quiet: tests read results, not access logs."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> ScriptedOpenAIServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
