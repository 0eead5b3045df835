"""``anymal-lit chat --model <bundle or export>``: talk to a trained model in the terminal.

::

    you> /image cat.jpg
    attached image: /home/me/cat.jpg (1 pending)
    you> What colour is the cat?
    model> black

Media are attached by path (``/image``, ``/audio``, ``/video``, ``/imu``) and go into the next message, in the order
attached, before its text. The conversation is kept (multi-turn) until ``/reset``; replies are printed as they are
generated. A bad attachment or request prints one ``error:`` line and the chat goes on.
"""

from __future__ import annotations

import argparse
import base64
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from anymal_lit.encoders.base import MediaError
from anymal_lit.inference.chat import chat
from anymal_lit.inference.messages import MessageError

PROMPT = "you> "
REPLY = "model> "
MEDIA_COMMANDS = ("image", "audio", "video", "imu")
HELP = """commands:
  /image PATH   attach an image to the next message (also /audio, /video, /imu); several attach in order
  /reset        forget the conversation and any pending attachments
  /help         this list
  /quit         leave (also /exit, Ctrl-D)
anything else is sent as your message, with the pending attachments before its text"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``chat`` command's options (also the sampling settings of every reply)."""
    parser.add_argument("--model", required=True, help="a bundle (anymal-lit export) or a stage's checkpoints/export")
    parser.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (0: greedy)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (with --temperature > 0)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="longest reply, in tokens")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default=None, help="bfloat16, float16 or float32 (default: the model's own)")


def main(args: argparse.Namespace) -> None:
    """Load the model named by ``args`` and chat on the process's terminal."""
    from anymal_lit.inference.loading import load_model

    if args.max_new_tokens < 1 or args.temperature < 0 or not 0 < args.top_p <= 1:
        raise ValueError("--max-new-tokens must be >= 1, --temperature >= 0 and --top-p in (0, 1]")
    logging.getLogger().setLevel(logging.WARNING)  # the loaders' progress lines would bury the chat's first prompt
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    print(f"chatting with {args.model} (reads {', '.join(model.modalities)}; /help lists the commands)", flush=True)
    run(model, max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p)


@dataclass
class Session:
    """The conversation so far and the media waiting for the next message."""

    history: list[dict[str, Any]] = field(default_factory=list)
    pending: list[tuple[str, Path]] = field(default_factory=list)

    def user_message(self, text: str) -> dict[str, Any]:
        parts = [media_part(modality, path) for modality, path in self.pending]
        return {"role": "user", "content": [*parts, {"type": "text", "text": text}]}


def media_part(modality: str, path: Path) -> dict[str, Any]:
    """An OpenAI-style content part for a local media file (audio goes inline: the API takes it as base64 only)."""
    if modality == "image":
        return {"type": "image_url", "image_url": {"url": str(path)}}
    if modality == "audio":
        data = base64.b64encode(path.read_bytes()).decode()
        return {"type": "input_audio", "input_audio": {"data": data, "format": path.suffix.lstrip(".") or "wav"}}
    return {"type": modality, modality: str(path)}


def run(
    model: Any,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
) -> Session:
    """The chat loop: read lines from ``stdin`` until ``/quit`` or end of input, answer on ``stdout``.

    On an interactive terminal (the process's own stdin and stdout) lines are read with ``readline`` editing when
    the platform has it. Returns the session (conversation and pending media) as it ended.

    Args:
        model: A model from :func:`anymal_lit.load_model`.
        stdin: Where the user's lines come from (default: the process's stdin).
        stdout: Where prompts, replies and errors go (default: the process's stdout).
        max_new_tokens: Longest reply.
        temperature: Sampling temperature (0: greedy).
        top_p: Nucleus sampling mass (with ``temperature > 0``).
    """
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    read = _line_reader(stdin, stdout)
    session = Session()
    processors = model.media_processors()

    def say(text: str) -> None:
        stdout.write(text + "\n")
        stdout.flush()

    while True:
        try:
            line = read(PROMPT)
        except EOFError:
            say("")
            return session
        except KeyboardInterrupt:  # Ctrl-C at the prompt drops the line, as Python's own prompt does
            say("")
            continue
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            command, _, argument = line[1:].partition(" ")
            if command in ("quit", "exit"):
                return session
            try:
                say(_command(command, argument.strip(), session, processors))
            except Exception as err:  # noqa: BLE001 - a file no loader can read prints one line, the chat goes on
                say(error_line(err))
            continue
        _answer(model, session, line, stdout, say, max_new_tokens, temperature, top_p)


def _command(command: str, argument: str, session: Session, processors: dict[str, Any]) -> str:
    if command == "help":
        return HELP
    if command == "reset":
        session.history.clear()
        session.pending.clear()
        return "conversation and attachments cleared"
    if command not in MEDIA_COMMANDS:
        raise MessageError(f"unknown command /{command} (/help lists the commands)")
    if not argument:
        raise MessageError(f"/{command} needs a file path, e.g. /{command} {_EXAMPLES[command]}")
    if command not in processors:
        raise MessageError(f"this model has no {command} encoder (it reads {', '.join(processors)})")
    path = Path(_unquote(argument)).expanduser().resolve()
    if not path.is_file():
        raise MessageError(f"/{command}: {'not a file' if path.exists() else 'no such file'}: {argument}")
    processors[command](str(path))  # decode it now: a bad file is refused here, not at the next message
    session.pending.append((command, path))
    return f"attached {command}: {path} ({len(session.pending)} pending)"


_EXAMPLES = {"image": "cat.jpg", "audio": "dog.wav", "video": "clip.mp4", "imu": "trace.csv"}


def _unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" else text


def _answer(
    model: Any,
    session: Session,
    text: str,
    stdout: TextIO,
    say: Callable[[str], None],
    max_new_tokens: int,
    temperature: float,
    top_p: float,
) -> None:
    """Send ``text`` (with the pending media) and stream the reply; on success both join the conversation."""
    pieces: list[str] = []
    started = False
    try:
        message = session.user_message(text)
        stream = chat(model, [*session.history, message], max_new_tokens, temperature, top_p, stream=True)
        stdout.write(REPLY)  # a bad request was refused above; from here on the reply is being generated
        stdout.flush()
        started = True
        for piece in stream:
            if not pieces and not piece.strip():
                continue  # the printed reply starts at its first word, as the non-streamed reply does
            pieces.append(piece.lstrip() if not pieces else piece)
            stdout.write(pieces[-1])
            stdout.flush()
        say("")
    except KeyboardInterrupt:
        say("\n(reply stopped; it is not kept in the conversation)")
        return
    except Exception as err:  # noqa: BLE001 - one line, and the chat goes on, whatever a request runs into
        pending = f" ({len(session.pending)} attachment(s) still pending, /reset clears)" if session.pending else ""
        say(("\n" if started else "") + error_line(err) + pending)
        return
    session.history += [message, {"role": "assistant", "content": "".join(pieces).strip()}]
    session.pending.clear()


def error_line(err: Exception) -> str:
    """One line for the user: the message of a known user error, else the error's type too."""
    kind = "" if isinstance(err, (MessageError, MediaError, OSError)) else f"{type(err).__name__}: "
    return "error: " + f"{kind}{err}".replace("\n", " ")


def _line_reader(stdin: TextIO, stdout: TextIO) -> Callable[[str], str]:
    """``prompt -> line``: ``input()`` with readline editing on the process's terminal, else plain stream reads."""
    if stdin is sys.stdin and stdout is sys.stdout and stdin.isatty():
        try:
            import readline  # noqa: F401 - importing it gives input() line editing and history
        except ImportError:  # Windows has no readline: input() still works, without editing
            pass
        return input

    def read(prompt: str) -> str:
        stdout.write(prompt)
        stdout.flush()
        line = stdin.readline()
        if not line:
            raise EOFError
        return line

    return read
