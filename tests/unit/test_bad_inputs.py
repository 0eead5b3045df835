"""The bad-input matrix: broken media of every modality and broken records, in strict and skipping mode.

Each case writes one record (and its media) between good records of every modality the data module reads. Strict
mode must stop with one line naming the data file, the record's place in it and the problem; ``skip_bad_records``
must count the record once, and the good records around it must still make a batch that trains (forward and
backward through the tiny model). Inputs the loaders *accept* (EXIF rotation, CMYK, 16-bit, palette transparency,
MP3/OGG/FLAC, silence) are checked for the pixels or samples they give.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from anymal_lit import AnyMALModel
from anymal_lit.data import (
    AudioTextDataModule,
    ChatTokenizer,
    ConversationDataModule,
    ConversationDataset,
    ImageTextDataModule,
    MixtureDataModule,
    RecordError,
    read_records,
)
from anymal_lit.encoders import (
    MediaError,
    load_audio,
)
from anymal_lit.toyworld.media_world import write_video
from anymal_lit.toyworld.signals import Movie, render_movie
from tests.conftest import build_four_modality_model

RATE = 16000
GOOD = {  # modality -> (file name, prompt)
    "image": ("good.png", "<image>\nWhat is this?"),
    "audio": ("good.wav", "<audio>\nWhat is this sound?"),
    "imu": ("good.csv", "<imu>\nWhat am I doing?"),
    "video": ("good.mp4", "<video>\nWhat happens?"),
}


@pytest.fixture(scope="module")
def model(tiny_world: Path) -> AnyMALModel:
    model = build_four_modality_model(tiny_world, latents=2, audio_tokens=2, imu_tokens=2)
    model.llm.requires_grad_(False)  # the projectors are what a bad record could poison; their gradients are checked
    return model


@pytest.fixture(scope="module")
def good_media(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("good")
    shutil.copy(tiny_world / "images/val/000000.png", folder / "good.png")
    sf.write(folder / "good.wav", tone(0.5), RATE)
    shutil.copy(tiny_world / "imu/val/000000.csv", folder / "good.csv")
    write_video(
        render_movie(Movie("red", "circle", "right"), np.random.default_rng(0), frames=4, side=32),
        folder / "good.mp4",
        fps=4,
    )
    return folder


def tone(seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def record(prompt: str, rid: str = "bad", answer: str = "an answer", **media: Any) -> dict[str, Any]:
    return {"id": rid, **media, "conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": answer}]}


# ---- the bad inputs ------------------------------------------------------------------------------------------------


@dataclass
class Case:
    """``write(folder)`` writes the media and returns the record (or a raw line); ``error``: a regex the strict
    error must match (None: the input is accepted); ``check(model, folder)``: what an accepted input must give."""

    id: str
    write: Callable[[Path], dict[str, Any] | str]
    error: str | None
    module: type[ConversationDataModule] = ConversationDataModule
    check: Callable[[AnyMALModel, Path], None] | None = None
    named: bool = True  # the record has an id the error can name
    extra: dict[str, Any] = field(default_factory=dict)


def image_case(name: str, make: Callable[[Path], None], error: str | None, check=None, suffix=".jpg") -> Case:
    def write(folder: Path) -> dict[str, Any]:
        make(folder / f"bad{suffix}")
        return record("<image>\nWhat is this?", image=f"bad{suffix}")

    return Case(f"image-{name}", write, error, check=check)


def audio_case(name: str, make: Callable[[Path], None], error: str | None, check=None, suffix=".wav") -> Case:
    def write(folder: Path) -> dict[str, Any]:
        make(folder / f"bad{suffix}")
        return record("<audio>\nWhat is this sound?", audio=f"bad{suffix}")

    return Case(f"audio-{name}", write, error, check=check)


def imu_case(name: str, make: Callable[[Path], None], error: str, suffix=".csv") -> Case:
    def write(folder: Path) -> dict[str, Any]:
        make(folder / f"bad{suffix}")
        return record("<imu>\nWhat am I doing?", imu=f"bad{suffix}")

    return Case(f"imu-{name}", write, error)


def video_case(name: str, make: Callable[[Path], None], error: str, name_on_disk="bad.mp4") -> Case:
    def write(folder: Path) -> dict[str, Any]:
        make(folder / name_on_disk)
        return record("<video>\nWhat happens?", video=name_on_disk)

    return Case(f"video-{name}", write, error)


def raw_case(name: str, line: str, error: str) -> Case:
    return Case(name, lambda folder: line, error, named=False)


def truncated(path: Path, make: Callable[[Path], None]) -> None:
    make(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def exif_rotated(path: Path) -> None:
    """Stored 40 x 20 with red left, blue right; EXIF orientation 6 shows it rotated 90 degrees clockwise."""
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 20))
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(path, exif=exif, quality=95)


def palette_transparent(path: Path) -> None:
    img = Image.new("P", (16, 16), 0)
    img.putpalette([0, 0, 0, 255, 0, 0])  # index 0 black but transparent, index 1 red
    img.paste(1, (0, 8, 16, 16))
    img.save(path, transparency=0)


def pixels(model: AnyMALModel, path: Path) -> np.ndarray:
    """The loaded image as 0..1 RGB ``[R, R, 3]`` (normalisation undone)."""
    proc = model.encoders["image"].media_processor()
    tiles = proc(str(path))[0]
    mean, std = torch.tensor(proc.mean)[:, None, None], torch.tensor(proc.std)[:, None, None]
    return (tiles * std + mean).permute(1, 2, 0).numpy()


def check_exif(model: AnyMALModel, folder: Path) -> None:
    img = pixels(model, folder / "bad.jpg")  # upright: 20 wide, 40 high, red on top
    top, bottom = img[: len(img) // 2 - 2].mean((0, 1)), img[len(img) // 2 + 2 :].mean((0, 1))
    assert top[0] > 0.9 and top[2] < 0.1 and bottom[2] > 0.9 and bottom[0] < 0.1, (top, bottom)


def check_colour(expected: tuple[float, float, float], suffix: str = ".jpg") -> Callable[[AnyMALModel, Path], None]:
    def check(model: AnyMALModel, folder: Path) -> None:
        img = pixels(model, folder / f"bad{suffix}")
        assert np.abs(img.mean((0, 1)) - np.array(expected)).max() < 0.03, img.mean((0, 1))

    return check


def check_palette(model: AnyMALModel, folder: Path) -> None:
    img = pixels(model, folder / "bad.png")
    top, bottom = img[: len(img) // 2 - 2].mean((0, 1)), img[len(img) // 2 + 2 :].mean((0, 1))
    assert np.allclose(top, 1.0, atol=0.03) and np.allclose(bottom, [1, 0, 0], atol=0.03), (top, bottom)


def check_pitch(suffix: str, exact: bool = False) -> Callable[[AnyMALModel, Path], None]:
    def check(model: AnyMALModel, folder: Path) -> None:
        wave = load_audio(str(folder / f"bad{suffix}"), RATE)
        assert abs(len(wave) - RATE) < 0.05 * RATE
        spectrum = np.abs(np.fft.rfft(wave))
        assert abs(np.argmax(spectrum) * RATE / len(wave) - 440) < 5
        if exact:
            assert np.abs(wave - tone(1.0)).max() < 1e-3

    return check


def check_silence(model: AnyMALModel, folder: Path) -> None:
    pieces = model.encoders["audio"].media_processor()(str(folder / "bad.wav"))
    assert pieces.isfinite().all()


def write_audio(fmt: str, subtype: str) -> Callable[[Path], None]:
    return lambda p: sf.write(p, tone(1.0), RATE, format=fmt, subtype=subtype)


def zero_frame_video(path: Path) -> None:
    with av.open(str(path), "w") as container:  # a valid file with a video stream and no frames
        stream = container.add_stream("mpeg4", rate=4)
        stream.width = stream.height = 32


def imu_text(text: str) -> Callable[[Path], None]:
    return lambda p: p.write_text(text)


IMU_HEADER = "timestamp,acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z\n"


def placeholder_cases() -> list[Case]:
    cases = []
    for modality, (name, prompt) in GOOD.items():
        token = f"<{modality}>"
        cases.append(
            Case(
                f"{modality}-placeholder-without-media",
                lambda folder, prompt=prompt: record(prompt),
                rf"1 {token} placeholder\(s\) but 0 {modality} item\(s\)",
            )
        )
        cases.append(
            Case(
                f"{modality}-media-without-placeholder",
                lambda folder, m=modality, n=name: record("Describe it.", **{m: n}),
                rf"0 {token} placeholder\(s\) but 1 {modality} item\(s\)",
            )
        )
    for modality in ("audio", "video", "imu"):  # the module reads images only: any other modality is an error
        name, prompt = GOOD[modality]
        cases.append(
            Case(
                f"{modality}-in-image-module",
                lambda folder, m=modality, p=prompt, n=name: record(p, **{m: n}),
                rf"holds {modality} \(1 <{modality}> placeholder\(s\), 1 {modality} item\(s\)\) but this data reads "
                "only image",
                module=ImageTextDataModule,
            )
        )
    cases.append(  # the defect of issue 17: it used to pass validation and crash the run inside the model
        Case(
            "audio-placeholder-without-media-in-image-module",
            lambda folder: record("<audio>\nWhat is this sound?"),
            r"holds audio \(1 <audio> placeholder\(s\), 0 audio item\(s\)\) but this data reads only image",
            module=ImageTextDataModule,
        )
    )
    cases.append(
        Case(
            "image-in-audio-module",
            lambda folder: record("<image>\nWhat is this?", image="good.png"),
            r"holds image .* but this data reads only audio",
            module=AudioTextDataModule,
        )
    )
    return cases


def escaping(folder: Path) -> dict[str, Any]:
    outside = folder.parent / f"{folder.name}-outside.png"
    shutil.copy(folder / "good.png", outside)
    return record("<image>\nWhat is this?", image=f"../{outside.name}")


CASES = [
    # images
    image_case(
        "truncated-jpeg",
        lambda p: truncated(p, lambda q: Image.new("RGB", (64, 64), "red").save(q)),
        "cannot be decoded: .*bad.jpg",
    ),
    image_case(
        "truncated-png",
        lambda p: truncated(p, lambda q: Image.new("RGB", (64, 64), "red").save(q)),
        "cannot be decoded: .*bad.png",
        suffix=".png",
    ),
    image_case("empty-file", lambda p: p.write_bytes(b""), "cannot be decoded: .*bad.jpg"),
    image_case(
        "html-instead-of-jpeg",
        lambda p: p.write_text("<html><body>404 Not Found</body></html>"),
        "cannot be decoded: .*bad.jpg",
    ),
    image_case("missing-file", lambda p: None, "image file not found: .*bad.jpg"),
    image_case(
        "one-pixel-high", lambda p: Image.new("RGB", (640, 1)).save(p), r"640x1, over 200:1: .*bad.png", suffix=".png"
    ),
    image_case(
        "float-pixels", lambda p: Image.new("F", (8, 8), 0.5).save(p), "floating-point pixels.*bad.tiff", suffix=".tiff"
    ),
    image_case("exif-rotated", exif_rotated, None, check_exif),
    image_case(
        "cmyk",
        lambda p: Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(p, quality=95),
        None,
        check_colour((1, 0, 0)),
    ),
    image_case(
        "16-bit-gray",
        lambda p: Image.fromarray(np.full((16, 16), 32768, np.uint16)).save(p),
        None,
        check_colour((0.5, 0.5, 0.5), ".png"),
        suffix=".png",
    ),
    image_case("palette-transparent", palette_transparent, None, check_palette, suffix=".png"),
    image_case(
        "one-by-one",
        lambda p: Image.new("RGB", (1, 1), (0, 0, 255)).save(p),
        None,
        check_colour((0, 0, 1), ".png"),
        suffix=".png",
    ),
    # audio
    audio_case(
        "corrupt", lambda p: p.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage"), "cannot be decoded: .*bad.wav"
    ),
    audio_case("empty-file", lambda p: p.write_bytes(b""), "cannot be decoded: .*bad.wav"),
    audio_case("zero-samples", lambda p: sf.write(p, np.zeros(0, np.float32), RATE), r"empty \(0 samples\): .*bad.wav"),
    audio_case("ten-samples", lambda p: sf.write(p, tone(1.0)[:10], RATE), "too short: 10 samples.*bad.wav"),
    audio_case(
        "nan", lambda p: sf.write(p, np.array([0.1, np.nan] * 800, np.float32), RATE, subtype="FLOAT"), "NaN.*bad.wav"
    ),
    audio_case(
        "png-named-wav", lambda p: Image.new("RGB", (4, 4)).save(p, format="PNG"), "cannot be decoded: .*bad.wav"
    ),
    audio_case("silent", lambda p: sf.write(p, np.zeros(RATE, np.float32), RATE), None, check_silence),
    audio_case("mp3", write_audio("MP3", "MPEG_LAYER_III"), None, check_pitch(".mp3"), suffix=".mp3"),
    audio_case("ogg-vorbis", write_audio("OGG", "VORBIS"), None, check_pitch(".ogg"), suffix=".ogg"),
    audio_case("flac", write_audio("FLAC", "PCM_16"), None, check_pitch(".flac", exact=True), suffix=".flac"),
    # IMU
    imu_case(
        "nan",
        imu_text(IMU_HEADER + "0.00,1,2,3,4,5,6\n0.02,1,2,3,4,5,nan\n"),
        r"NaN or infinite values \(first at sample 1\): .*bad.csv",
    ),
    imu_case(
        "ragged",
        imu_text(IMU_HEADER + "0.00,1,2,3,4,5,6\n0.02,1,2,3\n"),
        r"bad.csv \(rows have different numbers of columns \[4, 7\]\)",
    ),
    imu_case("wrong-columns", imu_text("1,2,3,4\n5,6,7,8\n"), "has 4 columns, expected 6.*bad.csv"),
    imu_case(
        "non-numeric",
        imu_text(IMU_HEADER + "0.00,1,2,3,4,5,6\n0.02,1,2,x,4,5,6\n"),
        r"bad.csv \(data row 2: could not convert string to float: 'x'\)",
    ),
    imu_case(
        "millisecond-stamps",
        imu_text(IMU_HEADER + "".join(f"{20 * i},1,2,3,4,5,6\n" for i in range(50))),
        "must be seconds: .*bad.csv",
    ),
    imu_case("header-only", imu_text(IMU_HEADER), "no samples.*bad.csv"),
    imu_case("single-sample", imu_text("1,2,3,4,5,6\n"), "single sample.*bad.csv"),
    imu_case(
        "npy-of-strings", lambda p: np.save(p, np.array([["a"] * 6] * 4)), "cannot be read: .*bad.npy", suffix=".npy"
    ),
    # video (decoding is video.py's; these are the failures it already reports)
    video_case(
        "broken",
        lambda p: p.write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video at all"),
        "cannot be decoded: .*bad.mp4",
    ),
    video_case("zero-frames", zero_frame_video, "bad.mp4"),
    video_case("empty-frame-folder", lambda p: p.mkdir(), "no frames: .*frames", name_on_disk="frames"),
    # records
    raw_case("invalid-json-line", '{"id": "bad", "conversations": [', "invalid JSON"),
    raw_case("not-utf8", '{"id": "bad", "conversations": "\udce9"}', "not UTF-8 text"),
    raw_case("not-an-object", "[1, 2, 3]", "a record must be a JSON object, got list"),
    Case(
        "missing-conversations",
        lambda folder: {"id": "bad", "image": "good.png"},
        "non-empty 'conversations' or 'messages'",
    ),
    Case(
        "empty-answer",
        lambda folder: record("<image>\nWhat is this?", answer="  ", image="good.png"),
        "empty assistant response in turn 1",
    ),
    Case(
        "last-turn-not-assistant",
        lambda folder: {"id": "bad", "conversations": [{"from": "human", "value": "hi"}]},
        "last turn must be the assistant's",
    ),
    Case("unknown-role", lambda folder: {"id": "bad", "conversations": [{"from": "bot", "value": "hi"}]}, "bad turn"),
    Case(
        "placeholder-in-answer",
        lambda folder: record("What is this?", answer="<image>", image="good.png"),
        "placeholder in assistant turn 1",
    ),
    Case(
        "unknown-modality-key",
        lambda folder: record("<depth>\nHow far is it?", depth="depth/1.png"),
        "<depth> placeholder and 'depth' key name a modality the kit does not know",
    ),
    Case(
        "misspelt-media-key",
        lambda folder: record("<image>\nWhat is this?", images=["good.png"]),
        "unknown key 'images': media go under 'image'",
    ),
    Case(
        "media-path-not-a-string",
        lambda folder: record("<image>\nWhat is this?", image=[7]),
        "image path must be a non-empty string, got 7",
    ),
    Case("path-escaping-the-data-folder", escaping, r"image path '\.\./.*-outside.png' leaves the media folder"),
    *placeholder_cases(),
]


# ---- running a case ------------------------------------------------------------------------------------------------


def write_case(case: Case, folder: Path, good_media: Path, alone: bool = False) -> Path:
    """The data file ``[good record of the module's first modality, the case, good records of the others]`` (or the
    case alone)."""
    for f in good_media.iterdir():
        shutil.copy(f, folder / f.name)
    bad = case.write(folder)
    bad = bad if isinstance(bad, str) else json.dumps(bad)
    good = [json.dumps(r) for r in good_records(case.module)]
    path = folder / "data.jsonl"
    lines = [bad] if alone else [good[0], bad, *good[1:]]
    path.write_bytes("\n".join(lines).encode("utf-8", "surrogateescape") + b"\n")  # \udce9: a lone latin-1 byte
    return path


def good_records(module: type[ConversationDataModule]) -> list[dict[str, Any]]:
    return [record(GOOD[m][1], rid=f"good-{m}", **{m: GOOD[m][0]}) for m in module.modalities or GOOD]


def load(module: type[ConversationDataModule], path: Path, model: AnyMALModel, skip: bool, **extra: Any):
    """Every batch of the file as training reads it, and the records skipped (at validation and at loading)."""
    dm = module(train_file=str(path), batch_size=8, skip_bad_records=skip, **extra)
    tokenizer = model.llm.tokenizer
    placeholders = {m: tokenizer.convert_ids_to_tokens(i) for m, i in model.llm.placeholder_ids.items()}
    dm.bind(tokenizer, model.media_processors(), placeholders, dict(model.encoders))
    batches = list(dm.dataloader(str(path), batch_size=8))
    skipped = sum(b["skipped"] for b in batches) + len(dm.skipped_records.get(str(path), []))
    return [b for b in batches if "input_ids" in b], skipped


def train_step(model: AnyMALModel, batch: dict[str, Any]) -> None:
    """Forward and backward: a finite loss and finite gradients on the projectors."""
    loss = model(batch)["loss"]
    loss.backward()
    grads = [p.grad for p in model.projectors.parameters() if p.grad is not None]
    assert loss.isfinite() and grads and all(g.isfinite().all() for g in grads)
    model.zero_grad(set_to_none=True)


def same_batch(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("input_ids", "attention_mask", "labels")
    if a["ids"] != b["ids"] or not all(torch.equal(a[k], b[k]) for k in keys) or a["media"].keys() != b["media"].keys():
        return False
    return all(torch.equal(a["media"][m][k], b["media"][m][k]) for m in a["media"] for k in ("pieces", "counts"))


@pytest.fixture(scope="module")
def clean_batches(model, good_media, tmp_path_factory) -> dict[type, dict[str, Any]]:
    """Per data module, the batch of the good records alone, trained once: a file with a skipped record must give
    exactly this batch (so it trains too, without a forward and backward per case)."""
    out = {}
    for module in {c.module for c in CASES}:
        path = tmp_path_factory.mktemp("clean") / "data.jsonl"
        for f in good_media.iterdir():
            shutil.copy(f, path.parent / f.name)
        path.write_text("".join(json.dumps(r) + "\n" for r in good_records(module)))
        batches, skipped = load(module, path, model, skip=False)
        assert len(batches) == 1 and skipped == 0
        train_step(model, batches[0])
        out[module] = batches[0]
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_named_in_strict_mode_and_skipped_and_counted_otherwise(
    case, model, good_media, clean_batches, tmp_path
):
    if case.error is None:  # accepted: loads as the check says and trains, the same in both modes
        path = write_case(case, tmp_path, good_media, alone=True)
        case.check(model, tmp_path)
        (batch,), skipped = load(case.module, path, model, skip=False)
        assert batch["ids"] == ["bad"] and skipped == 0
        train_step(model, batch)
        (again,), skipped = load(case.module, path, model, skip=True)
        assert skipped == 0 and same_batch(again, batch)
        return
    path = write_case(case, tmp_path, good_media)
    with pytest.raises(RecordError) as err:
        load(case.module, path, model, skip=False)
    message = str(err.value)
    assert "\n" not in message
    assert f"{path}:2" in message  # the file and the record's line
    if case.named:
        assert f"record 'bad' ({path}:2)" in message
    assert re.search(case.error, message), message
    batches, skipped = load(case.module, path, model, skip=True)
    assert skipped == 1 and len(batches) == 1 and same_batch(batches[0], clean_batches[case.module])


def test_decompression_bomb_is_an_error(model, tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow refuses images over twice this many pixels
    Image.new("RGB", (64, 64)).save(tmp_path / "big.png")
    with pytest.raises(MediaError, match="too large to decode safely: .*big.png"):
        model.encoders["image"].media_processor()(str(tmp_path / "big.png"))


def test_an_unforeseen_loader_failure_still_names_the_record_and_file(model, good_media, tmp_path):
    def broken_decoder(path: str) -> torch.Tensor:
        raise ZeroDivisionError("inside a decoder")

    path = write_case(Case("x", lambda folder: record("<image>", image="good.png"), None), tmp_path, good_media)
    records = read_records(path, {m: f"<{m}>" for m in GOOD})
    chat = ChatTokenizer(model.llm.tokenizer)
    with pytest.raises(RecordError, match=r"record 'good-image' .* image file cannot be loaded: .*good.png \(ZeroDiv"):
        ConversationDataset(records, chat, {"image": broken_decoder})[0]
    assert ConversationDataset(records, chat, {"image": broken_decoder}, skip_bad_records=True)[0] is None


def test_a_mixture_checks_each_dataset_against_its_own_modalities(model, good_media, tmp_path):
    path = write_case(next(c for c in CASES if c.id == "audio-in-image-module"), tmp_path, good_media)
    tokenizer = model.llm.tokenizer
    placeholders = {m: tokenizer.convert_ids_to_tokens(i) for m, i in model.llm.placeholder_ids.items()}
    for skip in (False, True):
        image = ImageTextDataModule(train_file=str(path), skip_bad_records=skip)
        mixture = MixtureDataModule({"image": image}, batch_size=4)
        mixture.bind(tokenizer, model.media_processors(), placeholders)
        if not skip:
            with pytest.raises(RecordError, match=r"record 'bad' .*holds audio .* reads only image"):
                mixture.train_dataloader()
        else:
            assert {i for b in mixture.train_dataloader() for i in b.get("ids", [])} == {"good-image"}
            assert len(image.skipped_records[str(path)]) == 1


def test_matrix_covers_every_modality_and_the_record_format():
    assert len(CASES) >= 30
    for prefix in ("image-", "audio-", "video-", "imu-"):
        assert sum(c.id.startswith(prefix) for c in CASES) >= 3, prefix


# ---- paths outside the data folder ---------------------------------------------------------------------------------


def test_media_outside_the_data_folder_with_the_flag_or_an_absolute_path(model, good_media, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    path = write_case(Case("escaping", escaping, None), folder, good_media)
    batches, skipped = load(ConversationDataModule, path, model, skip=False, allow_media_outside_root=True)
    assert skipped == 0 and "bad" in batches[0]["ids"]
    assert batches[0]["media"]["image"]["pieces"].shape[0] == 2  # good-image and the one outside
    absolute = record("<image>\nWhat is this?", image=str(good_media / "good.png"))
    (folder / "abs.jsonl").write_text(json.dumps(absolute) + "\n")
    assert read_records(folder / "abs.jsonl", {"image": "<image>"})[0].media == [("image", absolute["image"])]


# ---- JSON array files (LLaVA's own format) -------------------------------------------------------------------------


def write_array(folder: Path, good_media: Path, bad: Any) -> Path:
    shutil.copy(good_media / "good.png", folder / "good.png")
    rows = [record("<image>\nWhat is this?", rid=f"r{i}", image="good.png") for i in range(3)]
    rows.insert(1, bad)
    path = folder / "llava.json"
    path.write_text(json.dumps(rows, indent=2))
    return path


def test_json_array_file_reads_like_jsonl(model, good_media, tmp_path):
    path = write_array(tmp_path, good_media, record("<image>\nAnd this?", rid="r-extra", image="good.png"))
    records = read_records(path, {"image": "<image>"})
    assert [r.id for r in records] == ["r0", "r-extra", "r1", "r2"]
    assert records[1].source == f"{path}[1]" and records[0].media == [("image", str(tmp_path / "good.png"))]
    jsonl = tmp_path / "same.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in json.loads(path.read_text())))
    (batch,), _ = load(ImageTextDataModule, path, model, skip=False)
    (same,), _ = load(ImageTextDataModule, jsonl, model, skip=False)
    assert same_batch(batch, same)


def test_bad_element_of_a_json_array_names_its_index(model, good_media, tmp_path):
    path = write_array(tmp_path, good_media, record("<image>\nAnd this?", rid="r-bad", image="missing.png"))
    with pytest.raises(RecordError, match=re.escape(f"record 'r-bad' ({path}[1]): image file not found")):
        read_records(path, {"image": "<image>"})
    (batch,), skipped = load(ImageTextDataModule, path, model, skip=True)
    assert skipped == 1 and batch["ids"] == ["r0", "r1", "r2"]


def test_file_that_is_neither_jsonl_nor_a_json_array(tmp_path):
    truncated_array = tmp_path / "cut.json"
    truncated_array.write_text('[{"id": "a", "conversations": []}, {"id"')
    with pytest.raises(RecordError, match=f"{re.escape(str(truncated_array))}: not a valid JSON array of records"):
        read_records(truncated_array, {"image": "<image>"}, skip_bad_records=True)  # nothing in it is usable
    one_object = tmp_path / "object.json"
    one_object.write_text(json.dumps({"data": [record("hi")]}, indent=2))
    with pytest.raises(RecordError, match=f"{re.escape(str(one_object))}:1: invalid JSON"):
        read_records(one_object, {"image": "<image>"})
    with pytest.raises(RecordError, match="no usable records"):
        read_records(one_object, {"image": "<image>"}, skip_bad_records=True)
