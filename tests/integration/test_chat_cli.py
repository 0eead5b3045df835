"""``anymal-lit chat``: the real command driven through a pseudo-terminal, its replies checked against ``chat``."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import sys
from pathlib import Path

import pytest

from anymal_lit.demo import next_steps, stage_export
from tests.conftest import REPO

pexpect = pytest.importorskip("pexpect")

PROMPT = "you> "
REPLY = re.compile(r"model> ([^\n]*)\n")
MAX_NEW_TOKENS = 8


def first_media(world: Path, modality: str) -> Path:
    """The media file of the first record of the tiny world's ``<modality>_caption_val.jsonl``."""
    jsonl = world / f"{modality}_caption_val.jsonl"
    value = json.loads(jsonl.read_text().splitlines()[0])[modality]
    return (jsonl.parent / (value if isinstance(value, str) else value[0])).resolve()


def parts(world: Path, *modalities: str) -> list[dict]:
    """OpenAI-style parts of each modality's first media file, written independently of the command's own."""
    out = []
    for modality in modalities:
        path = first_media(world, modality)
        if modality == "image":
            out.append({"type": "image_url", "image_url": {"url": str(path)}})
        elif modality == "audio":
            data = base64.b64encode(path.read_bytes()).decode()
            out.append({"type": "input_audio", "input_audio": {"data": data, "format": "wav"}})
        else:
            out.append({"type": modality, modality: str(path)})
    return out


def user(text: str, media: list[dict] | None = None) -> dict:
    return {"role": "user", "content": [*(media or []), {"type": "text", "text": text}]}


@pytest.fixture(scope="module")
def dpo_model(trained_exports):
    from anymal_lit.inference import load_model

    return load_model(trained_exports["dpo"])


class Terminal:
    """The ``anymal-lit chat`` process on a pseudo-terminal (stdin is a tty: the readline path a user gets)."""

    def __init__(self, model: Path, cwd: Path) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO),
               "TERM": "dumb"}  # fmt: skip
        args = ["-m", "anymal_lit.cli", "chat", "--model", str(model), "--max-new-tokens", str(MAX_NEW_TOKENS)]
        self.child = pexpect.spawn(sys.executable, args, cwd=str(cwd), env=env, encoding="utf-8", timeout=300,
                                   dimensions=(50, 2000))  # fmt: skip
        self.transcript = io.StringIO()
        self.child.logfile_read = self.transcript
        self.child.expect_exact(PROMPT)

    def say(self, line: str) -> str:
        """Send a line; what the command printed before its next prompt (without the echoed line)."""
        self.child.sendline(line)
        self.child.expect_exact(PROMPT)
        return self.child.before.replace("\r\n", "\n").split("\n", 1)[-1]

    def ask(self, line: str) -> str:
        """Send a message; the reply the command streamed."""
        match = REPLY.search(self.say(line))
        assert match, self.transcript.getvalue()[-2000:]
        return match[1].strip()


@pytest.mark.integration
@pytest.mark.slow
def test_chat_in_a_terminal_answers_as_chat_does(tmp_path, tiny_world, trained_exports, dpo_model):
    from anymal_lit.inference import chat

    term = Terminal(trained_exports["dpo"], cwd=tiny_world)
    image = first_media(tiny_world, "image")
    question = "How many shapes are there?"

    # an image by a path relative to where the user runs the command; greedy reply = anymal_lit.chat's
    assert "attached image" in term.say(f"/image {image.relative_to(tiny_world)}")
    reply = term.ask(question)
    history = [user(question, parts(tiny_world, "image"))]
    assert reply == chat(dpo_model, history, max_new_tokens=MAX_NEW_TOKENS)
    assert reply  # the shipped chat LM answers: the comparison is not between two empty strings

    # the next turn sees the first one
    follow_up = "What colour is it?"
    history += [{"role": "assistant", "content": reply}, user(follow_up)]
    reply = term.ask(follow_up)
    assert reply == chat(dpo_model, history, max_new_tokens=MAX_NEW_TOKENS)
    history.append({"role": "assistant", "content": reply})

    # bad attachments: one error line each, nothing attached, the chat goes on
    (tmp_path / "broken.png").write_text("not an image")
    for line in ["/image no/such/file.png", f"/image {tmp_path / 'broken.png'}", "/audio", "/pdf x.pdf"]:
        out = term.say(line)
        assert out.startswith("error: ") and out.count("\n") == 1, out

    # audio, video and IMU in one message, in the order attached, before the text
    for modality in ("audio", "video", "imu"):
        assert f"attached {modality}" in term.say(f"/{modality} {first_media(tiny_world, modality)}")
    describe = "Describe all of these."
    history.append(user(describe, parts(tiny_world, "audio", "video", "imu")))
    assert term.ask(describe) == chat(dpo_model, history, max_new_tokens=MAX_NEW_TOKENS)

    # /reset forgets the conversation and the pending media
    term.say(f"/image {image}")
    assert "cleared" in term.say("/reset")
    assert term.ask(question) == chat(dpo_model, [user(question)], max_new_tokens=MAX_NEW_TOKENS)

    term.child.sendline("/quit")
    term.child.expect(pexpect.EOF)
    term.child.close()
    assert term.child.exitstatus == 0
    assert "Traceback" not in term.transcript.getvalue()


@pytest.mark.integration
def test_chat_streams_the_reply_and_ends_at_end_of_input(tiny_world, dpo_model):
    """``run`` on plain streams: the reply is written piece by piece as generated; end of input (Ctrl-D) ends it."""
    from anymal_lit.inference import chat
    from anymal_lit.inference.terminal import run

    class Recorder(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.writes: list[str] = []

        def write(self, text: str) -> int:
            self.writes.append(text)
            return super().write(text)

    image = first_media(tiny_world, "image")
    prompt = "Write a caption."
    out = Recorder()
    session = run(dpo_model, io.StringIO(f"/image {image}\n{prompt}\n"), out, max_new_tokens=24)
    expected = chat(dpo_model, [user(prompt, parts(tiny_world, "image"))], max_new_tokens=24)
    assert len(expected) >= 8  # several tokens (the tiny model may write them without spaces: "largelarge...")
    start = out.writes.index("model> ")
    end = out.writes.index("you> ", start)
    pieces = out.writes[start + 1 : end]
    assert len([p for p in pieces if p.strip()]) >= 2 and "".join(pieces).strip() == expected
    assert [m["role"] for m in session.history] == ["user", "assistant"] and not session.pending


@pytest.mark.integration
def test_attachments_go_into_the_next_message_in_the_order_attached(tiny_world, dpo_model):
    from anymal_lit.inference.terminal import run

    order = ("imu", "image", "audio", "video")
    lines = [f"/{m} {first_media(tiny_world, m)}" for m in order] + ["Describe all of these.", "/image"]
    session = run(dpo_model, io.StringIO("\n".join(lines) + "\n"), io.StringIO(), max_new_tokens=2)
    content = session.history[0]["content"]
    assert [p["type"] for p in content] == ["imu", "image_url", "input_audio", "video", "text"]
    assert content[0]["imu"] == str(first_media(tiny_world, "imu")) and not session.pending


@pytest.mark.integration
def test_reset_forgets_the_conversation_and_the_pending_media(tiny_world, dpo_model):
    from anymal_lit.inference.terminal import run

    image = first_media(tiny_world, "image")
    lines = [f"/image {image}", "How many shapes are there?", f"/audio {first_media(tiny_world, 'audio')}", "/reset"]
    out = io.StringIO()
    session = run(dpo_model, io.StringIO("\n".join(lines) + "\n"), out, max_new_tokens=2)
    assert session.history == [] and session.pending == []
    assert "conversation and attachments cleared" in out.getvalue()


def test_demo_names_the_export_of_its_last_stage_and_how_to_use_it():
    export = stage_export(REPO / "experiments" / "demo" / "dpo.yaml", "unused")
    assert export == Path("runs/demo/dpo/checkpoints/export")
    text = next_steps(export, "runs/demo", "runs/toyworld")
    for command in (f"anymal-lit chat --model {export}", f"anymal-lit serve --model {export}",
                    f"anymal-lit export --from {export} --out runs/demo/bundle"):  # fmt: skip
        assert command in text
