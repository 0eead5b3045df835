"""The AnyMAL paper's evaluation prompts as named templates (a system and a user message per task).

Source: the prompt list of the AnyMAL paper's appendix (Moon et al., arXiv:2309.16058; "Multimodal Prompts",
appendix B.1 of v1, which the later revision numbers E.1). Templates marked ``verbatim`` reproduce that list's
wording, with three mechanical changes: the printed ``\\n`` are line breaks (the spaces printed around them are
dropped), typographic quotes are ASCII quotes, and the paper's media tokens (``<img>``, ``<IMU>``) are the kit's
placeholders (``<image>``, ``<imu>``). The paper's typos are kept ("prahse" in VizWiz, the unclosed quote of the
COCO example), so a run uses the prompt the paper did. The v1 list has no prompt for MMBench, AI2D, MMMU, ChartQA
or MathVista (the benchmarks the revision added); their templates are ``reconstructed`` from the paper's
ScienceQA (multiple choice) and VQA prompts and say so in their ``source``: they are not quotes.

Select a template by name (``vqa``, ``coco_caption``, ...; aliases such as ``textvqa`` or ``mvbench`` name the
prompt the paper used for that benchmark). :func:`render_prompt` fills the ``{field}`` slots (``{question}``,
``{options}``, ``{ocr}``, ``{context}``) and returns chat messages; :func:`apply_prompt` rewrites a record's
conversation with a template, keeping its media and final answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from anymal_lit.data.records import Record, RecordError
from anymal_lit.models.causal_lm import DEFAULT_PLACEHOLDERS

VERBATIM = "verbatim: arXiv:2309.16058v1, appendix B.1"
RECONSTRUCTED = "reconstructed (not in the paper's prompt list)"
FIELD = re.compile(r"\{(question|options|ocr|context)\}")


@dataclass(frozen=True)
class PromptTemplate:
    """One task's prompt.

    Attributes:
        system: System message; holds the media placeholder where the paper puts it.
        user: User message with ``{field}`` slots.
        source: ``verbatim ...`` or ``reconstructed ...``.
        answer_format: ``text``, ``letter`` (an option letter), ``yes_no`` or ``json_caption``
            (``{"caption": ...}``, parsed by ``anymal_lit.metrics.json_caption`` before scoring).
    """

    system: str
    user: str
    source: str
    answer_format: str = "text"

    def render(self, **fields: Any) -> list[dict[str, str]]:
        """``[system, user]`` messages with the slots filled (``options``: a letter -> text dict or a list)."""
        if isinstance(fields.get("options"), dict):
            fields["options"] = format_options(fields["options"])
        elif isinstance(fields.get("options"), (list, tuple)):
            fields["options"] = ", ".join(str(o) for o in fields["options"])

        def fill(text: str) -> str:
            missing = sorted({m for m in FIELD.findall(text) if m not in fields})
            if missing:
                raise KeyError(f"prompt needs {missing}")
            # replace slot by slot: the COCO prompt's JSON examples hold braces str.format would read
            return FIELD.sub(lambda m: str(fields[m.group(1)]), text)

        return [{"role": "system", "content": fill(self.system)}, {"role": "user", "content": fill(self.user)}]


def format_options(options: dict[str, str]) -> str:
    """``A. red\\nB. blue`` (one option a line, letters in order)."""
    return "\n".join(f"{letter}. {options[letter]}" for letter in sorted(options))


_IMAGE_QA = "You are a multimodal assistant, designed to provide direct answers to users' image-related questions. "
_CHOICE_SYSTEM = (
    "Given the image, choose the correct option for the following question. Your response must be just a single "
    "letter that corresponds to the correct option (e.g. A, B)\n\nHere is the image: <image>."
)
PROMPTS: dict[str, PromptTemplate] = {
    "mm_it": PromptTemplate(
        "You are a multimodal assistant, designed to provide helpful answers to users' image-related questions."
        "\n\nHere is the image: <image>",
        "{question}",
        VERBATIM,
    ),
    "vqa": PromptTemplate(
        _IMAGE_QA + "Reply directly with only one phrase. *Do not* start your answer with 'Sure ...'."
        "\n\nHere is the image: <image>",
        "In the image, {question} Reply in one word.",
        VERBATIM,
    ),
    "vizwiz": PromptTemplate(
        "Answer the questions based on the image when possible, otherwise say 'unanswerable'."
        "\n\nHere is the image: <image>",
        "In the image, {question} Reply in one prahse/word or say 'unanswerable'",
        VERBATIM,
    ),
    "hateful_memes": PromptTemplate(
        "You are a social media content moderator, designed to detect hateful memes.\n\nHere is the meme: <image>"
        "\nThis meme contains text: '{ocr}'",
        "Is this a hateful meme? Answer yes or no.",
        VERBATIM,
        "yes_no",
    ),
    "coco_caption": PromptTemplate(
        "You are a multimodal assistant, designed to provide direct and concise answers to users' image-related "
        "requests.\n\nHere is the image: <image>",
        "Describe the image with one *generic* sentence using json format. Here are two examples:\n"
        'Specific: {"caption": "Body-Solid (Best Fitness) Inversion Table-2"}\n'
        'Generic: {"caption": "A man laying on top of an exercise table.}.',
        VERBATIM,
        "json_caption",
    ),
    "scienceqa": PromptTemplate(
        _CHOICE_SYSTEM,
        "{context} Question: {question}\n\nOptions: {options}\n\nReply in a single letter.",
        VERBATIM,
        "letter",
    ),  # fmt: skip
    "audio_caption": PromptTemplate(
        "You are a multimodal assistant. Designed to provide direct answers to users' audio-related questions. "
        "Here is the audio: <audio>",
        "Describe the sound.",
        VERBATIM,
    ),
    "video_qa": PromptTemplate(  # the paper's STAR / How2QA / NextQA prompt; its "[options]" is the options slot
        "You are a multimodal assistant. Designed to provide direct answers to users' video-related questions."
        "\n\nHere is the video: <video>.",
        "{question} Select exactly one option from the following: {options}.",
        VERBATIM,
        "letter",
    ),
    "imu_caption": PromptTemplate(
        "You are a multimodal assistant, designed to provide helpful, concise and direct answers to users' "
        "questions, based on the user's motion sensor signals reading from a head-mounted IMU device. The signals "
        "may indicate that a user may be running, walking, biking, driving, looking around, etc. Always answer "
        "under 30 words.\n\nHere are the user's predicted motions: <imu>",
        "Describe this motion.",
        VERBATIM,
    ),
    "multiple_choice": PromptTemplate(  # the ScienceQA prompt without its context slot
        _CHOICE_SYSTEM,
        "Question: {question}\n\nOptions: {options}\n\nReply in a single letter.",
        RECONSTRUCTED,
        "letter",
    ),  # fmt: skip
    "mmmu": PromptTemplate(  # the question text carries its own <image> placeholders (MMMU interleaves up to 7)
        "Given the images, answer the following question. If options are given, your response must be just a "
        "single letter that corresponds to the correct option (e.g. A, B); otherwise reply with a single word, "
        "phrase or number.",
        "Question: {question}\n\nOptions: {options}",
        RECONSTRUCTED,
        "letter",
    ),
    "mmmu_open": PromptTemplate(
        "Given the images, answer the following question. Reply with a single word, phrase or number.",
        "Question: {question}",
        RECONSTRUCTED,
    ),
    "chartqa": PromptTemplate(
        _IMAGE_QA + "Reply directly with only one phrase. *Do not* start your answer with 'Sure ...'."
        "\n\nHere is the chart: <image>",
        "In the chart, {question} Reply with a single word or number.",
        RECONSTRUCTED,
    ),
    "mathvista": PromptTemplate(  # MathVista's own query already ends with its answer-format hint
        "You are a multimodal assistant, designed to solve math problems about images. End your answer with the "
        "final value or option.\n\nHere is the image: <image>",
        "{question}",
        RECONSTRUCTED,
    ),
}
ALIASES = {
    "vqav2": "vqa", "textvqa": "vqa", "okvqa": "vqa", "mmbench": "multiple_choice", "ai2d": "multiple_choice",
    "egoschema": "video_qa", "mvbench": "video_qa", "star": "video_qa", "how2qa": "video_qa", "nextqa": "video_qa",
    "audiocaps": "audio_caption", "ego4d_imu": "imu_caption", "coco": "coco_caption",
}  # fmt: skip
OPEN_VARIANTS = {"mmmu": "mmmu_open"}  # the template a record without options gets (MMMU mixes both in one split)


def get_prompt(name: str) -> PromptTemplate:
    """The template called ``name`` (or an alias); a clear error listing the names otherwise."""
    key = ALIASES.get(name, name)
    if key not in PROMPTS:
        raise ValueError(f"unknown prompt {name!r}; known: {sorted(PROMPTS)} and aliases {sorted(ALIASES)}")
    return PROMPTS[key]


def render_prompt(name: str, **fields: Any) -> list[dict[str, str]]:
    """``[system, user]`` messages of the template ``name`` with its slots filled."""
    return get_prompt(name).render(**fields)


def apply_prompt(record: Record, name: str) -> Record:
    """The record with its conversation rewritten by the template ``name``, its media and final answer kept.

    Slots are filled from the record's keys (``question``, ``options``, ``ocr`` or ``text`` for Hateful Memes,
    ``context`` or ``hint``) or, for ``question``, its first user turn with the media placeholders removed (the
    template places them). The rewritten prompt must hold as many placeholders of each modality as the record has
    media; an error names the record otherwise. ``mmmu`` gives a record without options (an open question) the
    ``mmmu_open`` template.
    """
    extra = record.extra
    if not extra.get("options") and name in OPEN_VARIANTS:
        name = OPEN_VARIANTS[name]
    template = get_prompt(name)
    user_turn = next((m["content"] for m in record.messages if m["role"] == "user"), "")
    fields = {
        "question": extra.get("question"),
        "options": extra.get("options"),
        "ocr": extra.get("ocr", extra.get("text")),
        "context": extra.get("context", extra.get("hint", "")),
    }
    if fields["question"] is None:
        fields["question"] = user_turn
        if any(token in template.system for token in DEFAULT_PLACEHOLDERS.values()):
            for token in DEFAULT_PLACEHOLDERS.values():
                fields["question"] = fields["question"].replace(token, "")
            fields["question"] = " ".join(fields["question"].split())
    try:
        messages = template.render(**{k: v for k, v in fields.items() if v is not None})
    except KeyError as err:
        raise RecordError(f"{record.where()}: prompt {name!r}: {err.args[0]}") from None
    text = "".join(m["content"] for m in messages)
    for modality, token in DEFAULT_PLACEHOLDERS.items():
        items = sum(1 for m, _ in record.media if m == modality)
        if text.count(token) != items:
            raise RecordError(
                f"{record.where()}: prompt {name!r} holds {text.count(token)} {token} but the record has {items} "
                f"{modality} item(s)"
            )
    if record.messages[-1]["role"] == "assistant":
        messages.append(record.messages[-1])
    return replace(record, messages=messages)
