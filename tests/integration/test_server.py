"""`anymal-lit serve` with the official `openai` client: every modality, streaming, batching, bad requests, API key."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from anymal_lit.inference import chat, load_model

openai = pytest.importorskip("openai")

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
KEY = "test-key"
MAX_TOKENS = 8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str, key: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture(scope="module")
def server(trained_exports, tiny_world, tmp_path_factory):
    """The server on the DPO export, a free port of 127.0.0.1, the tiny world as --media-root, an API key, a 1 MB
    body limit; started as a user would (``python -m anymal_lit.cli serve``) and stopped with its workers."""
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    cmd = [sys.executable, "-m", "anymal_lit.cli", "serve", "--model", str(trained_exports["dpo"]), "--port",
           str(port), "--media-root", str(tiny_world), "--api-key", KEY, "--device", "cpu", "--max-body-mb", "1",
           "--batch-timeout", "0.1", "--model-name", "toy"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            assert proc.poll() is None, f"the server exited ({proc.returncode}):\n{log.read_text()[-5000:]}"
            assert time.monotonic() < deadline, f"not healthy after 600 s:\n{log.read_text()[-5000:]}"
            try:
                if get(f"{url}/health")[0] == 200:  # no key: the health route is open
                    break
            except OSError:
                pass
            time.sleep(2)
        yield {"url": url, "client": openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=300),
               "log": log}  # fmt: skip
    finally:
        proc.send_signal(signal.SIGTERM)  # the server stops its workers; anything left of its group goes after
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def model(trained_exports):
    return load_model(trained_exports["dpo"])


def data_url(path: Path, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def first_media(world: Path, jsonl: str, key: str) -> Path:
    record = json.loads((world / jsonl).read_text().splitlines()[0])
    return world / (record[key] if isinstance(record[key], str) else record[key][0])


def vqa(world: Path, i: int, local: bool = False) -> list[dict]:
    """Image VQA question ``i`` of the tiny world: the image inline (or by its path under the media root)."""
    record = json.loads((world / "image_vqa_val.jsonl").read_text().splitlines()[i])
    url = record["image"] if local else data_url(world / record["image"])
    question = record["conversations"][0]["value"].removeprefix("<image>\n")
    return [{"role": "user", "content": [image_part(url), {"type": "text", "text": question}]}]


def ask(server, messages, **kwargs) -> str:
    kwargs = {"max_tokens": MAX_TOKENS, "temperature": 0, **kwargs}
    reply = server["client"].chat.completions.create(model="toy", messages=messages, **kwargs)
    return reply.choices[0].message.content


def image_part(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def audio_b64(data: str) -> dict:
    return {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}


def audio_part(world: Path) -> dict:
    return audio_b64(base64.b64encode(first_media(world, "audio_caption_val.jsonl", "audio").read_bytes()).decode())


def streamed(server, messages: list[dict]) -> list[str]:
    """The text pieces of a streamed reply, as the client receives them."""
    stream = server["client"].chat.completions.create(model="toy", messages=messages, max_tokens=MAX_TOKENS,
                                                      temperature=0, stream=True)  # fmt: skip
    return [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]


def test_greedy_replies_equal_chat_for_text_image_audio_several_media_and_turns(server, model, tiny_world):
    def same(messages: list[dict]) -> str:
        reply = ask(server, messages)
        assert reply == chat(model, messages, max_new_tokens=MAX_TOKENS), messages
        return reply

    assert any(same(vqa(tiny_world, i)) for i in range(3))  # the shipped chat LM answers something
    same([{"role": "user", "content": "Hello! What can you do?"}])
    same([{"role": "user", "content": [audio_part(tiny_world), {"type": "text", "text": "A short audio caption:"}]}])
    several = [
        {"type": "text", "text": "Describe all of these."},
        {"type": "imu", "imu": data_url(first_media(tiny_world, "imu_caption_val.jsonl", "imu"), "text/csv")},
        image_part(data_url(first_media(tiny_world, "image_caption_val.jsonl", "image"))),
        audio_part(tiny_world),
        {"type": "video", "video": data_url(first_media(tiny_world, "video_caption_val.jsonl", "video"), "video/mp4")},
    ]  # fmt: skip
    first = same([{"role": "user", "content": several}])
    same([{"role": "user", "content": several}, {"role": "assistant", "content": first},
          {"role": "user", "content": "And what colour is it?"}])  # fmt: skip


def test_local_paths_only_under_the_media_root(server, tiny_world, tmp_path):
    assert ask(server, vqa(tiny_world, 0, local=True)) == ask(server, vqa(tiny_world, 0))
    outside = tmp_path / "secret.png"
    outside.write_bytes((tiny_world / json.loads((tiny_world / "image_vqa_val.jsonl").read_text().splitlines()[0])
                         ["image"]).read_bytes())  # fmt: skip
    for path in (str(outside), "../" * 12 + str(outside).lstrip("/"), f"file://{outside}"):
        messages = [{"role": "user", "content": [image_part(path)]}]
        with pytest.raises(openai.BadRequestError, match="outside the allowed media folder"):
            ask(server, messages)


def test_streamed_pieces_join_to_the_reply(server, tiny_world):
    messages = vqa(tiny_world, 1)
    pieces = streamed(server, messages)
    reply = ask(server, messages)
    assert "".join(pieces) == reply
    assert len(pieces) >= min(2, len(reply.split()))  # streamed as generated, not in one piece


def test_concurrent_requests_batched_answer_as_alone(server, tiny_world):
    """Eight clients at once (one or two generate calls), streamed and not, a too-long one among them: each good
    one gets the reply it gets alone, the bad one its 400."""
    alone = [ask(server, vqa(tiny_world, i)) for i in range(8)]
    long_text = " ".join(["word"] * 470)  # fits as text; the six images' tokens push it past the context
    images = [image_part(data_url(tiny_world / "images/val/000000.png"))] * 6
    too_long = [{"role": "user", "content": [*images, {"type": "text", "text": long_text}]}]

    def one(i: int):
        if i == 8:
            try:
                ask(server, too_long)
            except openai.BadRequestError as err:
                return err.message
            return "no error"
        if i % 2:
            return "".join(streamed(server, vqa(tiny_world, i)))
        return ask(server, vqa(tiny_world, i))

    with ThreadPoolExecutor(9) as pool:
        replies = list(pool.map(one, range(9)))
    assert replies[:8] == alone
    assert "exceeds the model's context (512 tokens) with its media" in replies[8]


def bad_requests(world: Path) -> list[tuple[object, str]]:
    """(request body or raw bytes, a fragment the 400's message must hold): each kind of bad request."""
    png = data_url(world / "images/val/000000.png")

    def parts(*content):
        return {"messages": [{"role": "user", "content": list(content)}], "max_tokens": 4}

    image = image_part(png)
    return [
        (parts(image_part("images/val/no_such.png")), "media file not found"),
        (parts({"type": "video", "video": "video/none.mp4"}), "media file not found"),
        (parts(image_part("data:image/png;base64,aGVsbG8=")), "image file cannot be decoded: messages[0].content[0]"),
        (parts(audio_b64("aGVsbG8=")), "audio file cannot be decoded: messages[0].content[0]"),
        (parts({"type": "imu", "imu": "data:text/csv;base64,bm90LGEsdHJhY2UK"}), "IMU file"),
        (parts(image_part("data:image/png;base64,@@not base64@@")), "undecodable base64"),
        (parts(audio_b64("%%%")), "undecodable base64"),
        (parts({"type": "pdf", "pdf": "x"}), "unknown part type 'pdf'"),
        (parts({"type": "depth_map", "depth_map": png}), "unknown part type 'depth_map'"),
        (parts(image, {"type": "text", "text": "What is <image>?"}), "send media as content parts"),
        (parts(image_part("https://example.com/cat.png")), "remote URLs"),
        ({"messages": [{"role": "user", "content": "word " * 2000}], "max_tokens": 4}, "the model's context"),
        ({"messages": [], "max_tokens": 4}, "non-empty list"),
        ({"messages": [{"role": "user", "content": []}]}, "non-empty list of parts"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "needs a role"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, "nothing to answer"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": -1}, "temperature must be >= 0"),
        ({"model": "toy"}, "messages: Field required"),
        (b"{not json", "JSON"),
        ({"messages": [{"role": "user", "content": "x" * (2 << 20)}]}, "larger than 1 MB"),
    ]  # fmt: skip


def test_bad_requests_get_400_naming_the_problem_and_the_server_keeps_serving(server, tiny_world):
    before = ask(server, vqa(tiny_world, 2))
    cases = bad_requests(tiny_world)
    assert len(cases) == 20
    for body, fragment in cases:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        request = urllib.request.Request(f"{server['url']}/v1/chat/completions", data, headers, method="POST")
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=120)
        status, error = caught.value.code, json.loads(caught.value.read())["error"]
        assert (status, fragment in error["message"]) == (400, True), (body if isinstance(body, bytes) else
                                                                       str(body)[:200], status, error)  # fmt: skip
    with pytest.raises(openai.BadRequestError, match="unknown part type"):  # what the openai client shows
        ask(server, [{"role": "user", "content": [{"type": "pdf", "pdf": "x"}]}])
    assert ask(server, vqa(tiny_world, 2)) == before


def test_api_key_on_every_route_but_health(server):
    url = server["url"]
    assert get(f"{url}/health") == (200, "ok")
    assert get(f"{url}/v1/models")[0] == 401
    assert get(f"{url}/v1/models", key="wrong")[0] == 401
    status, body = get(f"{url}/v1/models", key=KEY)
    assert status == 200 and [m["id"] for m in json.loads(body)["data"]] == ["toy"]
    assert [m.id for m in server["client"].models.list()] == ["toy"]
    stranger = openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.chat.completions.create(model="toy", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
