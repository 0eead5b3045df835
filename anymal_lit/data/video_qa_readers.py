"""Readers of the paper's video QA benchmarks (EgoSchema, MVBench), from their release files to multiple-choice records.

* EgoSchema: ``questions.json`` (``[{q_uid, question, "option 0" .. "option 4"}]``), ``subset_answers.json``
  (``{q_uid: 0..4}``, the 500 public answers) and the videos ``{q_uid}.mp4``. Questions without a public answer are
  skipped and counted by default (``unanswered="skip"``; the full set is scored by the benchmark's server), or kept
  for prediction only with ``unanswered="keep"`` (``answer`` None, no response turn).
* MVBench: one JSON per task (``[{video, question, candidates, answer}]``, ``answer`` the text of one candidate) and
  a task -> (JSON, video folder) table, :data:`MVBENCH_TASKS` (the benchmark's own ``data_list``).

Records carry ``index``, ``options`` (letter -> text), the ``answer`` letter and ``category`` (MVBench's task), as
:class:`~anymal_lit.callbacks.qa_eval.ChoiceEvalCallback` reads them (plain accuracy, not circular).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from anymal_lit.data.benchmarks import LETTERS, MC_PROMPT, BadRows, conversation, missing_fields, multiple_choice_prompt
from anymal_lit.data.records import RecordError

log = logging.getLogger(__name__)

EGOSCHEMA_OPTIONS = 5
MVBENCH_TASKS: dict[str, tuple[str, str, str, bool]] = {
    "Action Sequence": ("action_sequence.json", "star/Charades_v1_480", "video", True),
    "Action Prediction": ("action_prediction.json", "star/Charades_v1_480", "video", True),
    "Action Antonym": ("action_antonym.json", "ssv2_video", "video", False),
    "Fine-grained Action": ("fine_grained_action.json", "Moments_in_Time_Raw/videos", "video", False),
    "Unexpected Action": ("unexpected_action.json", "FunQA_test/test", "video", False),
    "Object Existence": ("object_existence.json", "clevrer/video_validation", "video", False),
    "Object Interaction": ("object_interaction.json", "star/Charades_v1_480", "video", True),
    "Object Shuffle": ("object_shuffle.json", "perception/videos", "video", False),
    "Moving Direction": ("moving_direction.json", "clevrer/video_validation", "video", False),
    "Action Localization": ("action_localization.json", "sta/sta_video", "video", True),
    "Scene Transition": ("scene_transition.json", "scene_qa/video", "video", False),
    "Action Count": ("action_count.json", "perception/videos", "video", False),
    "Moving Count": ("moving_count.json", "clevrer/video_validation", "video", False),
    "Moving Attribute": ("moving_attribute.json", "clevrer/video_validation", "video", False),
    "State Change": ("state_change.json", "perception/videos", "video", False),
    "Fine-grained Pose": ("fine_grained_pose.json", "nturgbd", "video", False),
    "Character Order": ("character_order.json", "perception/videos", "video", False),
    "Egocentric Navigation": ("egocentric_navigation.json", "vlnqa", "video", False),
    "Episodic Reasoning": ("episodic_reasoning.json", "tvqa/frames_fps3_hq", "frame", True),
    "Counterfactual Inference": ("counterfactual_inference.json", "clevrer/video_validation", "video", False),
}
"""MVBench task -> (JSON in ``json/``, video folder under the video root, ``video`` file or ``frame`` folder, whether
rows carry ``start``/``end`` seconds). The folders are those of the ``OpenGVLab/MVBench`` release's ``video/``."""


def _load_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RecordError(f"{path}: cannot read the JSON file ({err})") from None


def egoschema_records(
    questions_json: str | Path,
    answers_json: str | Path | None,
    video_dir: str | Path,
    video_pattern: str = "{q_uid}.mp4",
    unanswered: str = "skip",
    prompt: str = MC_PROMPT,
    skip_bad: bool = False,
    system: str | None = None,
) -> list[dict]:
    """EgoSchema's ``questions.json`` + ``subset_answers.json`` -> five-option records about ``{q_uid}.mp4``.

    Args:
        questions_json: The questions (all 5031, or any subset).
        answers_json: ``{q_uid: answer index}`` (``subset_answers.json``); None: no answers (prediction only).
        video_dir: The videos' folder.
        video_pattern: File name of a video from the row's fields.
        unanswered: ``"skip"`` questions without an answer (counted in the log) or ``"keep"`` them for prediction.
        prompt: Instruction after the options.
        skip_bad: Skip (and count) bad rows instead of raising.
        system: Optional system message.
    """
    if unanswered not in ("skip", "keep"):
        raise ValueError(f"unanswered must be 'skip' or 'keep', got {unanswered!r}")
    path = Path(questions_json)
    questions = _load_json(path)
    answers = _load_json(Path(answers_json)) if answers_json is not None else {}
    if not isinstance(questions, list) or not isinstance(answers, dict):
        raise RecordError(f"{path}: expected a list of questions and a {{q_uid: answer}} answers file")
    out, bad, without = [], BadRows(str(path), skip_bad), 0
    keys = ["q_uid", "question", *(f"option {k}" for k in range(EGOSCHEMA_OPTIONS))]
    for i, row in enumerate(questions):
        qid = row.get("q_uid", f"#{i}") if isinstance(row, dict) else f"#{i}"
        missing = missing_fields(row, keys)
        if missing:
            bad.bad(qid, f"missing field(s) {missing}")
            continue
        answer = answers.get(row["q_uid"])
        if answer is None:
            without += 1
            if unanswered == "skip":
                continue
        elif not isinstance(answer, int) or not 0 <= answer < EGOSCHEMA_OPTIONS:
            bad.bad(qid, f"answer must be an option number 0..{EGOSCHEMA_OPTIONS - 1}, got {answer!r}")
            continue
        video = Path(video_dir) / video_pattern.format(**row)
        if not video.exists():
            bad.bad(qid, f"video file not found: {video}")
            continue
        options = {LETTERS[k]: str(row[f"option {k}"]) for k in range(EGOSCHEMA_OPTIONS)}
        letter = LETTERS[answer] if answer is not None else None
        out.append(
            {
                "id": row["q_uid"],
                "index": i,
                "video": str(video.resolve()),
                "question": row["question"],
                "options": options,
                "answer": letter,
                "category": "egoschema",
                "conversations": conversation(
                    f"<video>\n{multiple_choice_prompt(str(row['question']), options, None, prompt)}", letter, system
                ),
            }
        )
    if without:
        verb = "skipped" if unanswered == "skip" else "kept for prediction only"
        log.warning(
            "%s: %d of %d questions have no answer in %s: %s", path, without, len(questions), answers_json, verb
        )
    return bad.done(out)


def mvbench_records(
    json_dir: str | Path,
    video_root: str | Path,
    tasks: list[str] | dict[str, tuple[str, str, str, bool]] | None = None,
    prompt: str = MC_PROMPT,
    skip_bad: bool = False,
    system: str | None = None,
) -> list[dict]:
    """MVBench's per-task JSON files -> records with the candidates as lettered options and ``category`` the task.

    Rows of tasks with clip bounds keep ``start``/``end`` (seconds) in the record; the kit decodes the whole video.
    ``frame`` tasks (Episodic Reasoning) point at a folder of frames, which the kit's video reader accepts.

    Args:
        json_dir: Folder of the task JSON files (the release's ``json/``).
        video_root: Folder the task video folders are under (the release's ``video/``).
        tasks: Task names from :data:`MVBENCH_TASKS`, or a table of the same shape (None: all 20 tasks).
        prompt: Instruction after the options.
        skip_bad: Skip (and count) bad rows instead of raising.
        system: Optional system message.
    """
    if tasks is None or isinstance(tasks, list):
        unknown = sorted(set(tasks or []) - set(MVBENCH_TASKS))
        if unknown:
            raise ValueError(f"unknown MVBench task(s) {unknown}; known: {sorted(MVBENCH_TASKS)}")
        tasks = {name: MVBENCH_TASKS[name] for name in tasks or MVBENCH_TASKS}
    out: list[dict] = []
    for task, (json_name, folder, _kind, bounded) in tasks.items():
        path = Path(json_dir) / json_name
        rows = _load_json(path)
        if not isinstance(rows, list):
            raise RecordError(f"{path}: expected a JSON list of {{video, question, candidates, answer}}")
        bad = BadRows(str(path), skip_bad)
        for i, row in enumerate(rows):
            missing = missing_fields(row, ("video", "question", "candidates", "answer"))
            if missing:
                bad.bad(i, f"missing field(s) {missing}")
                continue
            candidates = [str(c) for c in row["candidates"]] if isinstance(row["candidates"], list) else []
            if not 2 <= len(candidates) <= len(LETTERS) or str(row["answer"]) not in candidates:
                bad.bad(i, f"answer {row['answer']!r} is not one of the candidates {row['candidates']!r}")
                continue
            video = Path(video_root) / folder / str(row["video"])
            if not video.exists():
                bad.bad(i, f"video file not found: {video}")
                continue
            options = dict(zip(LETTERS, candidates))
            question = multiple_choice_prompt(str(row["question"]), options, None, prompt)
            letter = LETTERS[candidates.index(str(row["answer"]))]
            bounds = {k: row[k] for k in ("start", "end") if bounded and k in row}
            out.append(
                {
                    "id": f"{Path(json_name).stem}-{i}",
                    "index": len(out),
                    "video": str(video.resolve()),
                    "question": row["question"],
                    "options": options,
                    "answer": letter,
                    "category": task,
                    **bounds,
                    "conversations": conversation(f"<video>\n{question}", letter, system),
                }
            )
        bad.done([])
    return out
