"""The toy world's benchmark files in each benchmark's official release layout, so the kit's readers, metrics and
evaluation run end to end without downloads.

:func:`write_paper_benchmarks` writes a few questions (8 by default) per benchmark under ``paper_benchmarks/`` from
the world's val pictures and videos, each in its own layout (TextVQA, OK-VQA, VizWiz, the VLMEvalKit TSVs of
AI2D/MMMU/MathVista with base64 and multi-image rows, MMMU's release rows, ChartQA, EgoSchema with its videos,
MVBench, Hateful Memes), then reads them back with the kit's readers into ``paper_benchmarks/<name>.jsonl``. Every
answer is true of its picture or video by construction; the writers take ``(scene, picture)`` and
``(movie attributes, video)`` pairs and can be used on their own.
"""

from __future__ import annotations

import base64
import csv
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from anymal_lit.data import mmmu_release, video_qa_readers, vlmeval_tsv, vqa_readers
from anymal_lit.data.benchmarks import LETTERS, write_jsonl
from anymal_lit.toyworld import shapes, signals

Pictures = list[tuple[shapes.Scene, Path]]
Videos = list[tuple[dict[str, str], Path]]
TOY_MVBENCH_TASKS = {name: video_qa_readers.MVBENCH_TASKS[name] for name in ("Moving Direction", "Moving Attribute")}


def write_mmbench_tsv(rows: list[dict], path: str | Path) -> None:
    """Write rows (``index, question, hint, options, answer, category, image_path``) in MMBench's TSV format."""
    fields = ["index", "question", "hint", *LETTERS[:4], "answer", "category", "image"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields, delimiter="\t")
        writer.writeheader()
        for row in rows:
            image = base64.b64encode(Path(row["image_path"]).read_bytes()).decode()
            options = {k: row["options"].get(k, "") for k in LETTERS[:4]}
            writer.writerow(
                {
                    "index": row["index"],
                    "question": row["question"],
                    "hint": row.get("hint", ""),
                    **options,
                    "answer": row["answer"],
                    "category": row.get("category", ""),
                    "image": image,
                }
            )


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _copy_picture(source: Path, target: Path) -> None:
    """The picture in ``target``'s format (the releases' ``.jpg`` names hold JPEGs)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as img:
        img.convert("RGB").save(target, quality=95) if target.suffix == ".jpg" else img.save(target)


def _human_answers(answer: str, rng: np.random.Generator) -> list[str]:
    """Ten human answers, most of them the answer (as VQA annotations are)."""
    return [answer if rng.random() < 0.7 else answer.capitalize() for _ in range(10)]


def _choice(truth: str, pool: list[str], rng: np.random.Generator, count: int = 4) -> tuple[list[str], int]:
    """``count`` options (the truth among distractors from ``pool``) in random order, and the truth's position."""
    options = [truth, *[str(v) for v in rng.permutation([v for v in pool if v != truth])[: count - 1]]]
    order = [options[i] for i in rng.permutation(len(options))]
    return order, order.index(truth)


def write_textvqa(folder: Path, pictures: Pictures, rng: np.random.Generator) -> Path:
    rows = []
    for i, (scene, picture) in enumerate(pictures):
        question, answer = shapes.questions(scene, rng)[0]
        image_id = f"{0x7A0000 + i:016x}"
        _copy_picture(picture, folder / "train_images" / f"{image_id}.jpg")
        rows.append(
            {
                "question": question,
                "image_id": image_id,
                "image_classes": ["Shape"],
                "answers": _human_answers(answer, rng),
                "question_tokens": question.split(),
                "question_id": 34602 + i,
                "set_name": "val",
            }
        )
    path = folder / "TextVQA_0.5.1_val.json"
    release = {"dataset_type": "val", "dataset_name": "textvqa", "dataset_version": "0.5.1", "data": rows}
    path.write_text(json.dumps(release))
    return path


def write_okvqa(folder: Path, pictures: Pictures, rng: np.random.Generator) -> tuple[Path, Path]:
    questions, annotations = [], []
    for i, (scene, picture) in enumerate(pictures):
        question, answer = shapes.questions(scene, rng)[0]
        image_id, qid = 500 + i, 5000 + i
        _copy_picture(picture, folder / "val2014" / f"COCO_val2014_{image_id:012d}.jpg")
        questions.append({"image_id": image_id, "question": question, "question_id": qid})
        answers = [
            {"answer_id": j + 1, "raw_answer": a, "answer_confidence": "yes", "answer": a}
            for j, a in enumerate(_human_answers(answer, rng))
        ]
        annotations.append(
            {
                "image_id": image_id,
                "answer_type": "other",
                "question_type": "one",
                "question_id": qid,
                "answers": answers,
            }
        )
    q_path, a_path = folder / "OpenEnded_mscoco_val2014_questions.json", folder / "mscoco_val2014_annotations.json"
    q_path.write_text(json.dumps({"data_subtype": "val2014", "questions": questions}))
    a_path.write_text(json.dumps({"data_subtype": "val2014", "annotations": annotations}))
    return q_path, a_path


def write_vizwiz(folder: Path, pictures: Pictures, rng: np.random.Generator) -> Path:
    """Every third question asks about a colour the picture does not hold: its answers are "unanswerable"."""
    rows = []
    for i, (scene, picture) in enumerate(pictures):
        name = f"VizWiz_val_{i:08d}.jpg"
        _copy_picture(picture, folder / "val" / name)
        if i % 3 == 2:
            absent = next(c for c in shapes.COLOURS if all(o.colour != c for o in scene.objects))
            question, answers, kind = f"What shape is the {absent} object?", ["unanswerable"] * 10, "unanswerable"
        else:
            question, answer = shapes.questions(scene, rng)[0]
            answers, kind = _human_answers(answer, rng), "number" if answer in ("one", "two") else "other"
        rows.append(
            {
                "image": name,
                "question": question,
                "answerable": int(kind != "unanswerable"),
                "answer_type": kind,
                "answers": [{"answer": a, "answer_confidence": "yes"} for a in answers],
            }
        )
    path = folder / "val.json"
    path.write_text(json.dumps(rows))
    return path


def _write_tsv(path: Path, rows: list[dict]) -> Path:
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields, delimiter="\t", restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_vlmeval_tsvs(folder: Path, pictures: Pictures, rng: np.random.Generator) -> list[Path]:
    """``AI2D_TEST.tsv`` (A..D columns, base64 pictures, odd rows sharing the previous row's picture by its index),
    ``MMMU_DEV_VAL.tsv`` (two-picture rows with ``<image k>`` references, open rows) and ``MathVista_MINI.tsv``
    (``choices`` lists and free-form rows, pictures by ``image_path``)."""
    ai2d, mmmu, mathvista = [], [], []
    for i, (scene, picture) in enumerate(pictures):
        shared = i % 2 == 1  # VLMEvalKit stores a repeated picture as the index of the row holding it
        seen = pictures[i - 1][0].objects[0] if shared else scene.objects[0]
        kind, pool = ("position", list(shapes.POSITIONS)) if shared else ("shape", list(shapes.SHAPES))
        options, k = _choice(getattr(seen, kind), pool, rng)
        question = f"Where is the {seen.colour} {seen.shape}?" if shared else f"What shape is the {seen.colour} object?"
        ai2d.append(
            {"index": i, "question": question, **dict(zip("ABCD", options)), "answer": LETTERS[k], "category": kind}
        )
        ai2d[-1]["image"] = str(i - 1) if shared else _b64(picture)
        obj, (other_scene, other) = scene.objects[0], pictures[(i + 1) % len(pictures)]
        if i % 2 == 0:
            first = bool(rng.random() < 0.5)
            target = obj if first else other_scene.objects[0]
            mmmu.append(
                {
                    "index": i,
                    "question": f"<image 1> <image 2> Which picture shows a {target.colour} {target.shape}?",
                    "A": "<image 1>",
                    "B": "<image 2>",
                    "answer": "A" if first else "B",
                    "image": json.dumps([_b64(picture), _b64(other)]),
                }
            )
        else:
            mmmu.append(
                {"index": i, "question": "How many shapes are in <image 1>?", "answer": str(len(scene.objects))}
            )
            mmmu[-1]["image"] = _b64(picture)
        mmmu[-1].update({"category": "Toy_Shapes", "split": "validation"})
        _copy_picture(picture, folder / "images" / f"{i}.png")
        row = {"index": i, "image_path": f"images/{i}.png", "precision": ""}
        if i % 2 == 0:
            choices, k = _choice(obj.colour, list(shapes.COLOURS), rng)
            listed = "\n".join(f"({LETTERS[j]}) {c}" for j, c in enumerate(choices))
            hint = "Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end."
            row.update(
                question=f"Hint: {hint}\nQuestion: What colour is the {obj.shape}?\nChoices:\n{listed}",
                answer=obj.colour,
                question_type="multi_choice",
                answer_type="text",
                choices=json.dumps(choices),
                answer_option=LETTERS[k],
            )
        else:
            hint = "Please answer the question requiring an integer answer and provide the final value at the end."
            row.update(
                question=f"Hint: {hint}\nQuestion: How many shapes are there?",
                answer=str(len(scene.objects)),
                question_type="free_form",
                answer_type="integer",
            )
        mathvista.append(row)
    return [
        _write_tsv(folder / "AI2D_TEST.tsv", ai2d),
        _write_tsv(folder / "MMMU_DEV_VAL.tsv", mmmu),
        _write_tsv(folder / "MathVista_MINI.tsv", mathvista),
    ]


def write_mmmu_release(folder: Path, pictures: Pictures, rng: np.random.Generator) -> Path:
    """MMMU's release rows as JSONL (pictures as ``{bytes: base64, path}``: the parquet's image structs in JSON):
    single-picture colour questions, two-picture questions whose options are pictures, open count questions."""
    rows = []
    for i, (scene, picture) in enumerate(pictures):
        obj, (other_scene, other) = scene.objects[0], pictures[(i + 1) % len(pictures)]
        row = {"id": f"validation_Toy_Shapes_{i + 1}", "image_1": {"bytes": _b64(picture), "path": None}}
        if i % 3 == 0:
            options, k = _choice(obj.colour, list(shapes.COLOURS), rng)
            question, answer, kind = f"<image 1> What colour is the {obj.shape}?", LETTERS[k], "multiple-choice"
        elif i % 3 == 1:
            first = bool(rng.random() < 0.5)
            target = obj if first else other_scene.objects[0]
            question, options = f"Which picture shows a {target.colour} {target.shape}?", ["<image 1>", "<image 2>"]
            answer, kind = "A" if first else "B", "multiple-choice"
            row["image_2"] = {"bytes": _b64(other), "path": None}
        else:
            question, options, answer, kind = "How many shapes are in <image 1>?", [], str(len(scene.objects)), "open"
        row.update(question=question, options=str(options), answer=answer, question_type=kind, subfield="Shapes")
        rows.append({**row, "explanation": "", "img_type": "['Diagrams']", "topic_difficulty": "Easy"})
    path = folder / "Toy_Shapes" / "validation.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_chartqa(folder: Path, pictures: Pictures, rng: np.random.Generator) -> list[Path]:
    """``test/test_human.json`` (count questions, numeric labels) and ``test/test_augmented.json`` (colours)."""
    human, augmented = [], []
    for i, (scene, picture) in enumerate(pictures):
        _copy_picture(picture, folder / "test" / "png" / f"toy_{i}.png")
        if i % 2 == 0:
            human.append(
                {"imgname": f"toy_{i}.png", "query": "How many shapes are there?", "label": str(len(scene.objects))}
            )
        else:
            obj = scene.objects[int(rng.integers(len(scene.objects)))]
            augmented.append(
                {"imgname": f"toy_{i}.png", "query": f"What colour is the {obj.shape}?", "label": obj.colour}
            )
    paths = [folder / "test" / "test_human.json", folder / "test" / "test_augmented.json"]
    for path, rows in zip(paths, (human, augmented)):
        path.write_text(json.dumps(rows))
    return paths


def write_hateful_memes(folder: Path, pictures: Pictures, rng: np.random.Generator) -> Path:
    """Memes whose text is true of the picture (label 0) or of a corrupted scene (label 1: the toy's "hateful")."""
    rows = []
    for i, (scene, picture) in enumerate(pictures):
        meme_id = 10000 + i
        _copy_picture(picture, folder / "img" / f"{meme_id}.png")
        label = i % 2
        text = shapes.caption(shapes.corrupt(scene, rng) if label else scene, rng)
        rows.append({"id": meme_id, "img": f"img/{meme_id}.png", "label": label, "text": text})
    path = folder / "dev_seen.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_egoschema(folder: Path, videos: Videos, rng: np.random.Generator) -> tuple[Path, Path]:
    """Five-option questions about the direction of the moving shape; the last two have no public answer (as most of
    EgoSchema's questions), so the reader's handling of them runs too."""
    questions, answers = [], {}
    for i, (movie, video) in enumerate(videos):
        q_uid = f"00000000-toy0-4000-8000-{i:012d}"
        target = folder / "videos" / f"{q_uid}.mp4"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(video, target)
        options, k = _choice(movie["motion"], list(signals.MOTIONS), rng, count=5)
        question = f"In which direction does the {movie['colour']} {movie['shape']} move?"
        questions.append({"q_uid": q_uid, "question": question, **{f"option {j}": o for j, o in enumerate(options)}})
        if i < len(videos) - 2:
            answers[q_uid] = k
    q_path, a_path = folder / "questions.json", folder / "subset_answers.json"
    q_path.write_text(json.dumps(questions))
    a_path.write_text(json.dumps(answers))
    return q_path, a_path


def write_mvbench(folder: Path, videos: Videos, rng: np.random.Generator) -> Path:
    """``json/moving_direction.json`` and ``json/moving_attribute.json`` over videos in the tasks' release folders
    (:data:`TOY_MVBENCH_TASKS`); answers are candidate texts."""
    tasks: dict[str, list[dict]] = {name: [] for name in TOY_MVBENCH_TASKS}
    for i, (movie, video) in enumerate(videos):
        name = list(TOY_MVBENCH_TASKS)[i % 2]
        json_name, video_folder, _, _ = TOY_MVBENCH_TASKS[name]
        target = folder / "video" / video_folder / f"video_{i:05d}.mp4"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(video, target)
        if name == "Moving Direction":
            question, truth, pool = "Which direction does the shape move?", movie["motion"], list(signals.MOTIONS)
        else:
            question, truth, pool = "What colour is the shape?", movie["colour"], list(signals.COLOURS)
        candidates, _ = _choice(truth, pool, rng, count=3)
        tasks[name].append({"video": target.name, "question": question, "candidates": candidates, "answer": truth})
    (folder / "json").mkdir(parents=True, exist_ok=True)
    for name, rows in tasks.items():
        (folder / "json" / TOY_MVBENCH_TASKS[name][0]).write_text(json.dumps(rows))
    return folder / "json"


def write_paper_benchmarks(root: str | Path, rng: np.random.Generator, count: int = 8) -> dict[str, Path]:
    """Every benchmark above from ``count`` of the world's val pictures / videos, under ``root/paper_benchmarks``,
    read back into ``paper_benchmarks/<name>.jsonl`` with the kit's readers. Returns name -> JSONL."""
    root = Path(root)
    out = root / "paper_benchmarks"
    scenes = json.loads((root / "image_scenes_val.json").read_text())
    pictures = [
        (shapes.Scene.from_dict(scenes[k]), root / f"images/val/{int(k):06d}.png") for k in list(scenes)[:count]
    ]
    movies = json.loads((root / "video_scenes_val.json").read_text())
    videos = [(m, root / f"video/val/{int(k):06d}.mp4") for k, m in movies.items()]
    videos = [(m, v) for m, v in videos if v.is_file()][:count]  # some val videos are frame folders
    f = {name: out / name for name in ("textvqa", "okvqa", "vizwiz", "vlmeval", "mmmu", "chartqa", "hateful_memes")}
    f.update(egoschema=out / "egoschema", mvbench=out / "mvbench")
    for folder in f.values():
        folder.mkdir(parents=True, exist_ok=True)
    ok_q, ok_a = write_okvqa(f["okvqa"], pictures, rng)
    ego_q, ego_a = write_egoschema(f["egoschema"], videos, rng)
    ai2d, mmmu_tsv, mathvista = write_vlmeval_tsvs(f["vlmeval"], pictures, rng)
    human, augmented = write_chartqa(f["chartqa"], pictures, rng)
    records = {
        "textvqa": vqa_readers.textvqa_records(
            write_textvqa(f["textvqa"], pictures, rng), f["textvqa"] / "train_images"
        ),
        "okvqa": vqa_readers.okvqa_records(ok_q, ok_a, f["okvqa"] / "val2014"),
        "vizwiz": vqa_readers.vizwiz_records(write_vizwiz(f["vizwiz"], pictures, rng), f["vizwiz"] / "val"),
        "ai2d": vlmeval_tsv.vlmeval_tsv_records(ai2d, f["vlmeval"] / "decoded"),
        "mmmu_tsv": vlmeval_tsv.vlmeval_tsv_records(mmmu_tsv, f["vlmeval"] / "decoded_mmmu"),
        "mathvista": vlmeval_tsv.vlmeval_tsv_records(mathvista, f["vlmeval"] / "decoded"),
        "mmmu": mmmu_release.mmmu_records(write_mmmu_release(f["mmmu"], pictures, rng), f["mmmu"] / "decoded"),
        "chartqa": _chartqa_both(human, augmented),
        "egoschema": video_qa_readers.egoschema_records(ego_q, ego_a, f["egoschema"] / "videos"),
        "mvbench": video_qa_readers.mvbench_records(
            write_mvbench(f["mvbench"], videos, rng), f["mvbench"] / "video", TOY_MVBENCH_TASKS
        ),
        "hateful_memes": vqa_readers.hateful_memes_records(write_hateful_memes(f["hateful_memes"], pictures, rng)),
    }
    return {name: write_jsonl(rows, out / f"{name}.jsonl") for name, rows in records.items()}


def _chartqa_both(human: Path, augmented: Path) -> list[dict]:
    """ChartQA's two test splits as one record list (``split`` tells them apart)."""
    return vqa_readers.chartqa_records(human) + vqa_readers.chartqa_records(augmented)
