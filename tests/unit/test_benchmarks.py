"""Readers of the real benchmark formats: round trips and bad rows reported with their id."""

import base64
import json

import pytest
from PIL import Image

from anymal_lit.data.benchmarks import (
    audiocaps_records,
    coco_caption_records,
    mmbench_records,
    multiple_choice_prompt,
    vqa_records,
    write_jsonl,
)
from anymal_lit.data.records import RecordError, read_records
from anymal_lit.metrics import ChoiceMetric, VQAMetric, circular_variants
from anymal_lit.toyworld.benchmark_files import write_mmbench_tsv


@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in (1, 2):
        Image.new("RGB", (8, 8), (i * 50, 0, 0)).save(folder / f"{i:06d}.png")
    return folder


def test_vqa_format_round_trip_and_bad_rows(tmp_path, images):
    questions = {"questions": [
        {"question_id": 10, "image_id": 1, "question": "What colour?"},
        {"question_id": 20, "image_id": 2, "question": "How many?"},
        {"question_id": 30, "image_id": 3, "question": "Missing image?"},
        {"question_id": 40, "image_id": 1, "question": "No annotation?"},
    ]}  # fmt: skip
    answers = lambda a: [{"answer": a, "answer_id": i} for i in range(10)]
    annotations = {"annotations": [
        {"question_id": 10, "answers": answers("red"), "answer_type": "other", "multiple_choice_answer": "red"},
        {"question_id": 20, "answers": answers("2"), "answer_type": "number"},
        {"question_id": 30, "answers": answers("x")},
    ]}  # fmt: skip
    (tmp_path / "q.json").write_text(json.dumps(questions))
    (tmp_path / "a.json").write_text(json.dumps(annotations))
    with pytest.raises(RecordError, match=r"q.json: row 30: image file not found"):
        vqa_records(tmp_path / "q.json", tmp_path / "a.json", images, "{image_id:06d}.png")
    records = vqa_records(tmp_path / "q.json", tmp_path / "a.json", images, "{image_id:06d}.png", skip_bad=True)
    assert [r["id"] for r in records] == ["10", "20"] and [r["image_id"] for r in records] == [1, 2]
    assert records[0]["answers"] == ["red"] * 10 and records[1]["answer_type"] == "number"
    assert records[0]["conversations"][0]["value"].startswith("<image>\nWhat colour?\n")
    metric = VQAMetric()
    metric.update(["10", "20"], ["Red", "two"], [r["answers"] for r in records])
    assert metric.compute()["vqa_official"] == 0.0  # identical human answers: no normalisation (official rule)


def test_written_records_keep_working_when_their_folder_moves(tmp_path, images):
    """Media inside the JSONL's folder are written relative to it; media elsewhere keep their absolute path."""
    elsewhere = tmp_path / "elsewhere.png"
    Image.new("RGB", (8, 8)).save(elsewhere)
    turns = [{"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "red"}]
    rows = [
        {"id": "in", "image": str(images / "000001.png"), "conversations": turns},
        {"id": "out", "image": str(elsewhere), "conversations": turns},
    ]
    written = write_jsonl(rows, tmp_path / "imgs" / "vqa.jsonl")
    lines = [json.loads(line) for line in written.read_text().splitlines()]
    assert lines[0]["image"] == "000001.png" and lines[1]["image"] == str(elsewhere)
    moved = images.rename(tmp_path / "moved")
    records = read_records(moved / "vqa.jsonl", {"image": "<image>"})
    assert [r.media for r in records] == [[("image", str(moved / "000001.png"))], [("image", str(elsewhere))]]


def test_mmbench_tsv_round_trip(tmp_path, images):
    options = {"A": "red", "B": "blue", "C": "green", "D": "white"}
    item = {"index": 5, "question": "What colour is it?", "options": options, "answer": "B", "category": "colour"}
    item["image_path"] = str(images / "000001.png")
    write_mmbench_tsv(circular_variants(item), tmp_path / "mm.tsv")
    records = mmbench_records(tmp_path / "mm.tsv", tmp_path / "decoded")
    assert [r["index"] for r in records] == [5, 1_000_005, 2_000_005, 3_000_005]
    assert all(r["options"][r["answer"]] == "blue" for r in records)
    assert records[0]["conversations"][0]["value"] == "<image>\n" + multiple_choice_prompt(
        "What colour is it?", item["options"]
    )
    assert Image.open(records[0]["image"]).size == (8, 8)
    metric = ChoiceMetric()
    metric.update([r["id"] for r in records], [r["answer"] for r in records[:3]] + ["A"], records)
    scores = metric.compute()
    assert scores["circular"] == 0.0 and scores["vanilla"] == 0.75


def test_mmbench_bad_rows_name_the_index(tmp_path, images):
    header = "index\tquestion\thint\tA\tB\tC\tD\tanswer\tcategory\timage\n"
    good = base64.b64encode((images / "000001.png").read_bytes()).decode()
    rows = [f"1\tq\t\tx\ty\t\t\tA\tc\t{good}", "2\tq\t\tx\ty\t\t\tA\tc\tnot-base64!", "3\tq\t\tx\t\t\t\tA\tc\t" + good]
    (tmp_path / "mm.tsv").write_text(header + "\n".join(rows) + "\n")
    with pytest.raises(RecordError, match=r"row 2: image cannot be decoded"):
        mmbench_records(tmp_path / "mm.tsv", tmp_path / "out")
    kept = mmbench_records(tmp_path / "mm.tsv", tmp_path / "out2", skip_bad=True)
    assert [r["index"] for r in kept] == [1]


def test_coco_caption_records(tmp_path, images):
    coco = {"images": [{"id": 1, "file_name": "000001.png"}, {"id": 9, "file_name": "gone.png"}],
            "annotations": [{"image_id": 1, "id": 1, "caption": "a red square"}]}  # fmt: skip
    (tmp_path / "c.json").write_text(json.dumps(coco))
    records = coco_caption_records(tmp_path / "c.json", images, skip_bad=True)
    assert len(records) == 1 and records[0]["references"] == ["a red square"]


def test_audiocaps_csv_groups_captions_per_clip_and_reports_missing_audio(tmp_path):
    import numpy as np
    import soundfile as sf

    (tmp_path / "audio").mkdir()
    for name in ("abc_30", "def_0"):
        sf.write(tmp_path / "audio" / f"{name}.wav", np.zeros(1600, np.float32), 16000)
    rows = [
        "audiocap_id,youtube_id,start_time,caption",
        "1,abc,30,A dog barks",
        "2,abc,30,A dog is barking loudly",
        "3,def,0,Rain falls on a roof",
        "4,gone,10,A car passes",
    ]
    (tmp_path / "test.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(RecordError, match=r"test.csv: row 4: audio file not found: .*gone_10.wav"):
        audiocaps_records(tmp_path / "test.csv", tmp_path / "audio")
    records = audiocaps_records(tmp_path / "test.csv", tmp_path / "audio", skip_bad=True)
    assert [r["id"] for r in records] == ["abc_30", "def_0"]
    assert records[0]["references"] == ["A dog barks", "A dog is barking loudly"]
    assert records[0]["conversations"][0]["value"].startswith("<audio>")
    (tmp_path / "bad.csv").write_text("id,caption\n1,x\n")
    with pytest.raises(RecordError, match="needs columns"):
        audiocaps_records(tmp_path / "bad.csv", tmp_path / "audio")
