"""Readers of the paper's benchmarks: each official layout, written here as the release lays it out, round-trips to
records the kit reads, and a broken row is named (file + row) or skipped and counted."""

import base64
import csv
import io
import json
import logging

import numpy as np
import pytest
from PIL import Image

from anymal_lit.data.benchmarks import MC_PROMPT, write_jsonl
from anymal_lit.data.mmmu_release import mmmu_records
from anymal_lit.data.records import RecordError, read_records
from anymal_lit.data.video_qa_readers import MVBENCH_TASKS, egoschema_records, mvbench_records
from anymal_lit.data.vlmeval_tsv import vlmeval_tsv_records
from anymal_lit.data.vqa_readers import (
    chartqa_records,
    hateful_memes_records,
    okvqa_records,
    textvqa_records,
    vizwiz_records,
)
from anymal_lit.models.causal_lm import DEFAULT_PLACEHOLDERS

COLOURS = {"red": (200, 0, 0), "blue": (0, 0, 200), "green": (0, 200, 0)}


def png(colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), COLOURS[colour]).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(colour: str) -> str:
    return base64.b64encode(png(colour)).decode()


def colour_of(path: str) -> str:
    pixel = Image.open(path).convert("RGB").getpixel((4, 4))
    return min(COLOURS, key=lambda c: sum(abs(a - b) for a, b in zip(COLOURS[c], pixel)))


def readable(records: list[dict], tmp_path, name: str = "out.jsonl") -> list:
    """The records as the kit's data modules and eval callbacks read them."""
    return read_records(write_jsonl(records, tmp_path / name), DEFAULT_PLACEHOLDERS, require_response=False)


def write_pictures(folder, names_colours):
    folder.mkdir(parents=True, exist_ok=True)
    for name, colour in names_colours.items():
        (folder / name).write_bytes(png(colour))


def test_textvqa_release_json(tmp_path):
    write_pictures(tmp_path / "train_images", {"0054c91397f2fe05.jpg": "red", "005635e119b9f32f.jpg": "blue"})
    answers = ["Nokia"] + ["nokia"] * 7 + ["nokia phone", "samsung"]
    data = {"dataset_type": "val", "dataset_name": "textvqa", "dataset_version": "0.5.1", "data": [
        {"question": "what is the brand of phone?", "image_id": "0054c91397f2fe05", "image_classes": ["Mobile phone"],
         "flickr_original_url": "https://farm6.staticflickr.com/2891/9134076951_f65b421097_o.jpg", "image_width": 1024,
         "image_height": 730, "answers": answers, "question_tokens": ["what", "is"], "question_id": 34602,
         "set_name": "val"},
        {"question": "what does the light sign read?", "image_id": "005635e119b9f32f", "answers": ["exit"] * 10,
         "question_id": 34603, "set_name": "val"},
        {"question": "who made it?", "image_id": "ffffffffffffffff", "answers": ["x"] * 10, "question_id": 34604},
    ]}  # fmt: skip
    (tmp_path / "TextVQA_0.5.1_val.json").write_text(json.dumps(data))
    with pytest.raises(RecordError, match=r"TextVQA_0.5.1_val.json: row 34604: image file not found"):
        textvqa_records(tmp_path / "TextVQA_0.5.1_val.json", tmp_path / "train_images")
    records = textvqa_records(tmp_path / "TextVQA_0.5.1_val.json", tmp_path / "train_images", skip_bad=True)
    assert [r["id"] for r in records] == ["34602", "34603"] and records[0]["answers"] == answers
    assert records[0]["conversations"][-1]["value"] == "nokia"  # the majority answer
    parsed = readable(records, tmp_path)
    assert parsed[0].messages[0]["content"].startswith("<image>\nwhat is the brand of phone?\n")
    assert colour_of(parsed[1].media[0][1]) == "blue"
    del data["data"][1]["answers"]
    (tmp_path / "TextVQA_0.5.1_val.json").write_text(json.dumps(data))
    with pytest.raises(RecordError, match=r"row 34603: missing field\(s\) \['answers'\]"):
        textvqa_records(tmp_path / "TextVQA_0.5.1_val.json", tmp_path / "train_images")


def test_okvqa_question_annotation_pair(tmp_path):
    write_pictures(tmp_path / "val2014", {"COCO_val2014_000000297147.jpg": "green"})
    questions = {"license": {}, "data_subtype": "val2014", "questions": [
        {"image_id": 297147, "question": "What sport can you use this for?", "question_id": 2971475}]}  # fmt: skip
    answers = [{"answer_id": i + 1, "raw_answer": a, "answer_confidence": "yes", "answer": a}
               for i, a in enumerate(["race"] * 6 + ["motocross"] * 4)]  # fmt: skip
    annotations = {"annotations": [{"image_id": 297147, "answer_type": "other", "question_type": "four",
                                    "question_id": 2971475, "confidence": 3, "answers": answers}]}  # fmt: skip
    (tmp_path / "q.json").write_text(json.dumps(questions))
    (tmp_path / "a.json").write_text(json.dumps(annotations))
    (record,) = okvqa_records(tmp_path / "q.json", tmp_path / "a.json", tmp_path / "val2014")
    assert record["answers"] == ["race"] * 6 + ["motocross"] * 4 and record["question_type"] == "four"
    assert colour_of(readable([record], tmp_path)[0].media[0][1]) == "green"


def test_vizwiz_keeps_unanswerable_references(tmp_path):
    write_pictures(tmp_path / "val", {"VizWiz_val_00000000.jpg": "red", "VizWiz_val_00000001.jpg": "blue"})
    rows = [
        {"image": "VizWiz_val_00000000.jpg", "question": "What is this?", "answerable": 0,
         "answer_type": "unanswerable", "answers": [{"answer": "unanswerable", "answer_confidence": "yes"}] * 8
         + [{"answer": "box", "answer_confidence": "maybe"}] * 2},
        {"image": "VizWiz_val_00000001.jpg", "question": "What colour?", "answerable": 1, "answer_type": "other",
         "answers": [{"answer": "blue", "answer_confidence": "yes"}] * 10},
        {"image": "VizWiz_val_00000002.jpg", "question": "Gone?", "answerable": 1, "answer_type": "other",
         "answers": [{"answer": "x", "answer_confidence": "yes"}] * 10},
    ]  # fmt: skip
    (tmp_path / "val.json").write_text(json.dumps(rows))
    with pytest.raises(RecordError, match=r"val.json: row VizWiz_val_00000002.jpg: image file not found"):
        vizwiz_records(tmp_path / "val.json", tmp_path / "val")
    records = vizwiz_records(tmp_path / "val.json", tmp_path / "val", skip_bad=True)
    assert records[0]["answers"] == ["unanswerable"] * 8 + ["box"] * 2 and records[0]["answerable"] == 0
    assert records[0]["conversations"][-1]["value"] == "unanswerable"
    assert "Unanswerable" in records[0]["conversations"][0]["value"]
    assert [r.id for r in readable(records, tmp_path)] == ["VizWiz_val_00000000", "VizWiz_val_00000001"]


def test_vlmeval_tsv_choice_open_multi_image_and_shared_rows(tmp_path):
    header = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category", "split", "image"]
    rows = [
        [0, "Which colour is the square?", "Look closely.", "red", "blue", "", "", "A", "colour", "perception", "dev",
         b64("red")],
        [1, "Is it blue?", "nan", "yes", "no", "", "", "B", "colour", "perception", "dev", "0"],  # shares row 0's
        [2, "<image 2> is left of <image 1>. Which is red?", "", "<image 1>", "<image 2>", "", "", "B", "Art",
         "", "validation", json.dumps([b64("blue"), b64("red")])],
        [3, "How many squares?", "", "", "", "", "", "2", "count", "", "validation", b64("green")],
        [4, "Broken picture?", "", "x", "y", "", "", "A", "c", "", "dev", base64.b64encode(b"no picture" * 9).decode()],
        [5, "Answer elsewhere?", "", "x", "y", "", "", "C", "c", "", "dev", b64("red")],
    ]  # fmt: skip
    lines = ["\t".join(header)] + ["\t".join(str(v) for v in row) for row in rows]
    (tmp_path / "MMMU_DEV_VAL.tsv").write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError, match=r"MMMU_DEV_VAL.tsv: row 4: image cannot be decoded"):
        vlmeval_tsv_records(tmp_path / "MMMU_DEV_VAL.tsv", tmp_path / "img")
    records = vlmeval_tsv_records(tmp_path / "MMMU_DEV_VAL.tsv", tmp_path / "img2", skip_bad=True)
    assert [r["index"] for r in records] == [0, 1, 2, 3]
    choice, shared, multi, open_ = records
    assert choice["options"] == {"A": "red", "B": "blue"} and choice["answer"] == "A"
    assert choice["category"] == "colour" and choice["l2-category"] == "perception" and choice["split"] == "dev"
    assert (
        choice["conversations"][0]["value"]
        == "<image>\nLook closely.\nWhich colour is the square?\nA. red\nB. blue\n" + MC_PROMPT
    )
    assert "hint" not in shared and "nan" not in shared["conversations"][0]["value"]
    assert multi["options"] == {"A": "<image>", "B": "<image>"} and multi["answer_text"] == "<image 2>"
    assert multi["question"] == "<image> is left of <image>. Which is red?" and choice["hint"] == "Look closely."
    assert choice["question"] == "Which colour is the square?"  # no placeholder: a template places the picture
    assert open_["answers"] == ["2"] and "options" not in open_ and open_["conversations"][-1]["value"] == "2"
    parsed = readable(records, tmp_path)
    assert colour_of(parsed[1].media[0][1]) == "red"  # the picture of the row its cell names
    # <image 2> comes first in the text, then <image 1> (question), <image 1>, <image 2> (options)
    assert (
        parsed[2].messages[0]["content"].startswith("<image> is left of <image>. Which is red?\nA. <image>\nB. <image>")
    )
    assert [colour_of(p) for _, p in parsed[2].media] == ["red", "blue", "blue", "red"]
    (tmp_path / "t.tsv").write_text("\n".join(lines[:5] + lines[6:]) + "\n")  # without the broken picture
    with pytest.raises(RecordError, match=r"t.tsv: row 5: answer 'C' is not one of the options \['A', 'B'\]"):
        vlmeval_tsv_records(tmp_path / "t.tsv", tmp_path / "img3")


def test_vlmeval_tsv_mathvista_choices_and_image_paths(tmp_path):
    write_pictures(tmp_path / "images", {"1.jpg": "red", "2.jpg": "blue"})
    query = "Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end.\n" \
            "Question: What colour is it?\nChoices:\n(A) blue\n(B) red"  # fmt: skip
    rows = [
        {"index": 1, "question": query, "answer": "red", "question_type": "multi_choice", "answer_type": "text",
         "precision": "", "choices": "['blue', 'red']", "answer_option": "B", "skills": "['scientific reasoning']",
         "image_path": "images/1.jpg", "unit": ""},
        {"index": 2, "question": "Hint: integer answer.\nQuestion: How many?", "answer": "3", "question_type":
         "free_form", "answer_type": "integer", "precision": "", "choices": "", "answer_option": "", "skills": "",
         "image_path": "images/2.jpg", "unit": "cm"},
        {"index": 3, "question": "Where?", "answer": "1.5", "question_type": "free_form", "answer_type": "float",
         "precision": "1.0", "choices": "", "answer_option": "", "skills": "", "image_path": "images/3.jpg",
         "unit": ""},
    ]  # fmt: skip
    with (tmp_path / "MathVista_MINI.tsv").open("w", newline="") as f:  # as pandas writes it: newlines quoted
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(RecordError, match=r"MathVista_MINI.tsv: row 3: image file not found: .*3.jpg"):
        vlmeval_tsv_records(tmp_path / "MathVista_MINI.tsv", tmp_path / "decoded")
    choice, free = vlmeval_tsv_records(tmp_path / "MathVista_MINI.tsv", tmp_path / "decoded", skip_bad=True)
    assert choice["options"] == {"A": "blue", "B": "red"} and choice["answer"] == "B"
    assert choice["answer_text"] == "red" and choice["skills"] == "['scientific reasoning']"
    assert choice["conversations"][0]["value"] == "<image>\n" + query  # the query already lists the choices
    assert free["answers"] == ["3"] and free["answer_type"] == "integer" and free["unit"] == "cm"
    assert free["conversations"][0]["value"] == "<image>\nHint: integer answer.\nQuestion: How many?"
    assert [colour_of(r.media[0][1]) for r in readable([choice, free], tmp_path)] == ["red", "blue"]


def test_mmmu_release_rows(tmp_path):
    def row(i, question, options, answer, kind="multiple-choice", **images):
        base = {"id": f"validation_Art_Theory_{i}", "question": question, "options": options, "explanation": "",
                "answer": answer, "img_type": "['Paintings']", "topic_difficulty": "Easy", "question_type": kind,
                "subfield": "Art History"}  # fmt: skip
        return {**base, **{f"image_{k}": None for k in range(1, 8)}, **images}

    rows = [
        row(1, "<image 1> Which colour dominates?", "['red', 'blue', 'green']", "A",
            image_1={"bytes": b64("red"), "path": "1.png"}),
        row(2, "Which of these is blue?", "['<image 1>', '<image 2>']", "B",
            image_1={"bytes": b64("red"), "path": None}, image_2=b64("blue")),
        row(3, "How many squares are in <image 1>?", "[]", "['2', 'two']", "open", image_1=b64("green")),
        row(4, "Bad options <image 1>", "['a', 'b'", "A", image_1=b64("red")),
    ]  # fmt: skip
    (tmp_path / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(RecordError, match=r"validation.jsonl: row validation_Art_Theory_4: options cannot be parsed"):
        mmmu_records(tmp_path / "validation.jsonl", tmp_path / "img")
    records = mmmu_records(tmp_path / "validation.jsonl", tmp_path / "img", skip_bad=True)
    assert [r["index"] for r in records] == [0, 1, 2] and records[0]["category"] == "Art_Theory"
    assert records[0]["options"] == {"A": "red", "B": "blue", "C": "green"} and records[0]["answer"] == "A"
    assert records[2]["answers"] == ["2", "two"] and records[2]["question_type"] == "open"
    assert records[2]["conversations"][0]["value"].startswith("How many squares are in <image>?\n")
    parsed = readable(records, tmp_path)
    assert parsed[1].messages[0]["content"].startswith("Which of these is blue?\nA. <image>\nB. <image>\n")
    assert [colour_of(p) for _, p in parsed[1].media] == ["red", "blue"]
    rows[3] = row(4, "<image 2> vs <image 1>?", "['a', 'b']", "A", image_1=b64("red"))
    (tmp_path / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(RecordError, match=r"row validation_Art_Theory_4: the text refers to <image 2> but the row"):
        mmmu_records(tmp_path / "validation.jsonl", tmp_path / "img")
    rows[3] = row(4, "<image 1>?", "['a', 'b']", "C", image_1=b64("red"))
    (tmp_path / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(RecordError, match=r"row validation_Art_Theory_4: answer 'C' is not one of the options"):
        mmmu_records(tmp_path / "validation.jsonl", tmp_path / "img")


def test_mmmu_release_parquet(tmp_path):
    """The release's own parquet: pictures as image structs of raw bytes (skipped without pyarrow)."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    picture = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("id", pa.string()), ("question", pa.string()), ("options", pa.string()),
                        ("answer", pa.string()), ("image_1", picture), ("image_2", picture),
                        ("question_type", pa.string())])  # fmt: skip
    rows = [{"id": "validation_Art_1", "question": "Compare <image 2> with <image 1>.", "options": "['same', 'not']",
             "answer": "B", "image_1": {"bytes": png("red"), "path": "1.png"}, "image_2": {"bytes": png("blue"),
             "path": None}, "question_type": "multiple-choice"}]  # fmt: skip
    (tmp_path / "Art").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / "Art" / "validation-00000-of-00001.parquet")
    (record,) = mmmu_records([tmp_path / "Art" / "validation-00000-of-00001.parquet"], tmp_path / "img")
    assert record["answer"] == "B" and record["category"] == "Art"
    assert [colour_of(p) for p in record["image"]] == ["blue", "red"]


def test_chartqa_splits(tmp_path):
    write_pictures(tmp_path / "test" / "png", {"two_col_1.png": "red", "multi_col_2.png": "blue"})
    (tmp_path / "test" / "test_human.json").write_text(json.dumps([
        {"imgname": "two_col_1.png", "query": "What is the highest value?", "label": "64.5"},
        {"imgname": "missing.png", "query": "Lowest?", "label": "3"}]))  # fmt: skip
    (tmp_path / "test" / "test_augmented.json").write_text(json.dumps([
        {"imgname": "multi_col_2.png", "query": "How many bars?", "label": 4}]))  # fmt: skip
    with pytest.raises(RecordError, match=r"test_human.json: row 1: image file not found"):
        chartqa_records(tmp_path / "test" / "test_human.json")
    human = chartqa_records(tmp_path / "test" / "test_human.json", skip_bad=True)
    augmented = chartqa_records(tmp_path / "test" / "test_augmented.json")
    assert human[0]["answers"] == ["64.5"] and human[0]["split"] == "human"
    assert augmented[0]["answers"] == ["4"] and augmented[0]["split"] == "augmented"
    assert [r.id for r in readable(human + augmented, tmp_path)] == ["human-0", "augmented-0"]


def test_egoschema_subset_answers(tmp_path, caplog):
    (tmp_path / "videos").mkdir()
    uids = ["001934bb-81bd-4cd8-a574-0472ef3f6678", "00b9a0de-c59e-49cb-a127-6081e2fb8c8e", "0074f737-ffff"]
    for uid in uids[:2]:
        (tmp_path / "videos" / f"{uid}.mp4").write_bytes(b"\x00")
    questions = [{"q_uid": uid, "google_drive_id": "1x", "question": f"What did C do? ({uid[:4]})",
                  **{f"option {k}": f"choice {k}" for k in range(5)}} for uid in uids]  # fmt: skip
    (tmp_path / "questions.json").write_text(json.dumps(questions))
    (tmp_path / "subset_answers.json").write_text(json.dumps({uids[0]: 3, uids[2]: 1}))
    with pytest.raises(RecordError, match=r"questions.json: row 0074f737-ffff: video file not found"):
        egoschema_records(tmp_path / "questions.json", tmp_path / "subset_answers.json", tmp_path / "videos")
    with caplog.at_level(logging.WARNING):
        scored = egoschema_records(
            tmp_path / "questions.json", tmp_path / "subset_answers.json", tmp_path / "videos", skip_bad=True
        )
    assert [r["id"] for r in scored] == [uids[0]] and scored[0]["answer"] == "D"
    assert "1 of 3 questions have no answer" in caplog.text and "skipped" in caplog.text
    assert scored[0]["options"] == {k: f"choice {i}" for i, k in enumerate("ABCDE")}
    kept = egoschema_records(
        tmp_path / "questions.json", tmp_path / "subset_answers.json", tmp_path / "videos", "{q_uid}.mp4", "keep",
        skip_bad=True,
    )  # fmt: skip
    assert [r["answer"] for r in kept] == ["D", None] and len(kept[1]["conversations"]) == 1
    parsed = readable(kept, tmp_path)
    assert parsed[0].media[0][0] == "video" and parsed[0].messages[0]["content"].startswith("<video>\nWhat did C do?")
    (tmp_path / "subset_answers.json").write_text(json.dumps({uids[0]: 7}))
    with pytest.raises(RecordError, match=r"row 001934bb-81bd-4cd8-a574-0472ef3f6678: answer must be an option"):
        egoschema_records(tmp_path / "questions.json", tmp_path / "subset_answers.json", tmp_path / "videos")


def test_mvbench_answer_text_becomes_letter(tmp_path):
    table = {name: MVBENCH_TASKS[name] for name in ("Action Sequence", "Episodic Reasoning")}
    (tmp_path / "json").mkdir()
    (tmp_path / "video" / "star" / "Charades_v1_480").mkdir(parents=True)
    (tmp_path / "video" / "star" / "Charades_v1_480" / "ZS9XR.mp4").write_bytes(b"\x00")
    (tmp_path / "video" / "tvqa" / "frames_fps3_hq" / "castle_s07e04_seg02_clip_14").mkdir(parents=True)
    (tmp_path / "json" / "action_sequence.json").write_text(json.dumps([
        {"video": "ZS9XR.mp4", "question": "What happened after the person took the food?",
         "candidates": ["Ate the medicine.", "Tidied up the blanket.", "Put down the cup/glass/bottle.",
                        "Took the box."], "answer": "Ate the medicine.", "start": 11.1, "end": 19.6}]))  # fmt: skip
    (tmp_path / "json" / "episodic_reasoning.json").write_text(json.dumps([
        {"video": "castle_s07e04_seg02_clip_14", "question": "What did Beckett say?",
         "candidates": ["A", "B", "C"], "answer": "B", "start": 0.0, "end": 5.0},
        {"video": "castle_s07e04_seg02_clip_14", "question": "Who?", "candidates": ["x", "y"],
         "answer": "z"}]))  # fmt: skip
    with pytest.raises(RecordError, match=r"episodic_reasoning.json: row 1: answer 'z' is not one of the candidates"):
        mvbench_records(tmp_path / "json", tmp_path / "video", list(table))
    records = mvbench_records(tmp_path / "json", tmp_path / "video", list(table), skip_bad=True)
    assert [(r["category"], r["answer"], r["index"]) for r in records] == [
        ("Action Sequence", "A", 0), ("Episodic Reasoning", "B", 1)]  # fmt: skip
    assert records[0]["start"] == 11.1 and records[0]["options"]["D"] == "Took the box."
    assert [r.media[0][0] for r in readable(records, tmp_path)] == ["video", "video"]
    with pytest.raises(ValueError, match="unknown MVBench task"):
        mvbench_records(tmp_path / "json", tmp_path / "video", ["Action Dancing"])


def test_hateful_memes_jsonl(tmp_path):
    write_pictures(tmp_path / "img", {"42953.png": "red", "23058.png": "blue"})
    lines = [{"id": 42953, "img": "img/42953.png", "label": 0, "text": "its their character not their color"},
             {"id": 23058, "img": "img/23058.png", "label": 1, "text": "don't be afraid"},
             {"id": 13894, "img": "img/13894.png", "label": 0, "text": "putting bows on your pet"},
             {"id": 37408, "img": "img/42953.png", "label": 2, "text": "bad label"}]  # fmt: skip
    (tmp_path / "dev_seen.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    with pytest.raises(RecordError, match=r"dev_seen.jsonl: row 13894: image file not found"):
        hateful_memes_records(tmp_path / "dev_seen.jsonl")
    records = hateful_memes_records(tmp_path / "dev_seen.jsonl", skip_bad=True)
    assert [(r["label"], r["answers"], r["conversations"][-1]["value"]) for r in records] == [
        (0, ["no"], "no"), (1, ["yes"], "yes")]  # fmt: skip
    assert '"don\'t be afraid"' in records[1]["conversations"][0]["value"]
    assert "hateful" in records[1]["conversations"][0]["value"]
    assert len(readable(records, tmp_path)) == 2


@pytest.fixture(scope="module")
def toy_files(tmp_path_factory):
    """The toy-world writers on a few synthetic scenes and videos (not a whole world): root, name -> JSONL, movies."""
    from anymal_lit.toyworld import shapes, signals
    from anymal_lit.toyworld.benchmark_files import write_paper_benchmarks
    from anymal_lit.toyworld.media_world import write_video

    tmp_path = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(0)
    (tmp_path / "images" / "val").mkdir(parents=True)
    (tmp_path / "video" / "val").mkdir(parents=True)
    scenes, movies = {}, {}
    for i in range(4):
        scene = shapes.sample_scene(rng)
        shapes.render(scene, rng, 32).save(tmp_path / "images" / "val" / f"{i:06d}.png")
        scenes[str(i)] = scene.to_dict()
        movie = signals.sample_movie(rng)
        write_video(signals.render_movie(movie, rng, 4, 32), tmp_path / "video" / "val" / f"{i:06d}.mp4", 4)
        movies[str(i)] = movie.attributes()
    (tmp_path / "image_scenes_val.json").write_text(json.dumps(scenes))
    (tmp_path / "video_scenes_val.json").write_text(json.dumps(movies))
    return tmp_path, write_paper_benchmarks(tmp_path, np.random.default_rng(1), count=4), movies


def test_toy_world_writes_each_format_and_reads_it_back(toy_files):
    """Every benchmark's toy files read back into records whose references are true of the scene."""
    _, written, movies = toy_files
    counts = {}
    for name, path in written.items():
        records = read_records(path, DEFAULT_PLACEHOLDERS, require_response=False)
        counts[name] = len(records)
    assert counts == {"textvqa": 4, "okvqa": 4, "vizwiz": 4, "ai2d": 4, "mmmu_tsv": 4, "mathvista": 4, "mmmu": 4,
                      "chartqa": 4, "egoschema": 2, "mvbench": 4, "hateful_memes": 4}  # fmt: skip
    lines = lambda name: [json.loads(x) for x in written[name].read_text().splitlines()]
    for record in lines("egoschema"):  # the answer letter names the true motion
        motion = next(
            m["motion"] for m in movies.values() if f"{m['colour']} {m['shape']}" in record["conversations"][0]["value"]
        )
        assert record["options"][record["answer"]] == motion
    # two pictures, each mentioned in the question and as an option: four placeholders
    assert sum(isinstance(r["image"], list) and len(r["image"]) == 4 for r in lines("mmmu_tsv")) == 2
    assert [r["answers"][0] for r in lines("vizwiz")][2] == "unanswerable"
    for record in lines("ai2d"):
        assert record["options"][record["answer"]] in record["conversations"][0]["value"]


def test_convert_reads_each_new_format(toy_files, tmp_path):
    """``anymal-lit convert <format>`` on the toy world's files gives the records the readers give."""
    from anymal_lit.cli import main

    root, written, _ = toy_files
    pb = root / "paper_benchmarks"
    runs = {
        "textvqa": ["--questions", pb / "textvqa/TextVQA_0.5.1_val.json", "--images", pb / "textvqa/train_images"],
        "okvqa": ["--questions", pb / "okvqa/OpenEnded_mscoco_val2014_questions.json", "--annotations",
                  pb / "okvqa/mscoco_val2014_annotations.json", "--images", pb / "okvqa/val2014"],
        "vizwiz": ["--annotations", pb / "vizwiz/val.json", "--images", pb / "vizwiz/val"],
        "chartqa": ["--data", pb / "chartqa/test/test_human.json", pb / "chartqa/test/test_augmented.json"],
        "hateful-memes": ["--data", pb / "hateful_memes/dev_seen.jsonl"],
        "vlmeval-tsv": ["--tsv", pb / "vlmeval/MathVista_MINI.tsv", "--images", tmp_path / "decoded"],
        "mmmu": ["--data", pb / "mmmu/Toy_Shapes/validation.jsonl", "--images", tmp_path / "mmmu"],
        "egoschema": ["--questions", pb / "egoschema/questions.json", "--videos", pb / "egoschema/videos",
                      "--annotations", pb / "egoschema/subset_answers.json", "--unanswered", "keep"],
        "mvbench": ["--data", pb / "mvbench/json", "--videos", pb / "mvbench/video", "--tasks", "Moving Direction"],
    }  # fmt: skip
    expected = {"textvqa": 4, "okvqa": 4, "vizwiz": 4, "chartqa": 4, "hateful-memes": 4, "vlmeval-tsv": 4, "mmmu": 4,
                "egoschema": 4, "mvbench": 2}  # fmt: skip
    for name, args in runs.items():
        out = tmp_path / f"{name}.jsonl"
        main(["convert", name, "--out", str(out), *map(str, args)])
        records = read_records(out, DEFAULT_PLACEHOLDERS, require_response=False)
        assert len(records) == expected[name], name
    answers = [json.loads(x)["answers"] for x in (tmp_path / "vizwiz.jsonl").read_text().splitlines()]
    assert answers == [json.loads(x)["answers"] for x in written["vizwiz"].read_text().splitlines()]
    with pytest.raises(SystemExit):
        main(["convert", "mvbench", "--out", str(tmp_path / "x.jsonl"), "--data", str(pb / "mvbench/json")])
