"""A chat-completions server on loopback for fault injection: real HTTP, real client, scripted
replies. ``reply(prompt)`` returns the reply text, an int (answer with that HTTP status),
("sleep", seconds, text) to answer late, or ("status", code, message) for an error with its message."""

import asyncio
import socket
import threading
import time
from collections.abc import Callable

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

Reply = str | int | tuple[str, float, str] | tuple[str, int, str]


class FakeChatServer:
    def __init__(self, reply: Callable[[str], Reply]):
        self.reply = reply
        self.bodies: list[dict] = []
        app = FastAPI()
        app.post("/v1/chat/completions")(self._complete)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "fake chat server did not start"
            time.sleep(0.01)

    def prompts(self) -> list[str]:
        return [body["messages"][-1]["content"] for body in self.bodies]

    async def _complete(self, request: Request):
        body = await request.json()
        self.bodies.append(body)
        reply = self.reply(body["messages"][-1]["content"])
        if isinstance(reply, int):
            return JSONResponse({"error": {"message": "scripted failure"}}, status_code=reply)
        if isinstance(reply, tuple) and reply[0] == "status":
            return JSONResponse({"error": {"message": reply[2]}}, status_code=reply[1])
        if isinstance(reply, tuple):
            _, seconds, reply = reply
            await asyncio.sleep(seconds)
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    def stop(self):
        self._server.should_exit = True
        self._thread.join(timeout=10)
