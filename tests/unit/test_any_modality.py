"""Audio, video and IMU: chunking into pieces, interleaved prompts, loaders and their bad-input errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from anymal_lit import AnyMALModel
from anymal_lit.data import ChatTokenizer, ConversationDataset, PaddingCollator, RecordError, read_records
from anymal_lit.encoders import (
    IMUEncoder,
    IMUEncoderConfig,
    MediaError,
    load_audio,
    load_imu,
)
from anymal_lit.toyworld.media_world import write_video
from anymal_lit.toyworld.signals import Movie, render_movie
from tests.conftest import build_four_modality_model

PLACEHOLDERS = {"image": "<image>", "audio": "<audio>", "video": "<video>", "imu": "<imu>"}


@pytest.fixture(scope="module")
def model(tiny_world: Path) -> AnyMALModel:
    return build_four_modality_model(tiny_world).eval()


def tone(seconds: float, rate: int = 16000, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def project(model: AnyMALModel, modality: str, path: Path) -> torch.Tensor:
    pieces = model.encoders[modality].media_processor()(str(path))
    media = {modality: {"pieces": pieces, "counts": torch.tensor([pieces.shape[0]])}}
    return model.project_media(media)[modality][0]


# ---- chunking ----------------------------------------------------------------------------------------------------


def test_audio_clip_of_three_pieces_gives_three_times_the_tokens_each_piece_independent(model, tmp_path):
    piece = model.encoders["audio"].piece_seconds
    sf.write(tmp_path / "one.wav", tone(piece), 16000)
    long = np.concatenate([tone(piece), tone(piece, freq=880.0), tone(piece, freq=220.0)])
    sf.write(tmp_path / "three.wav", long, 16000)
    changed = long.copy()
    changed[int(piece * 16000) : int(2 * piece * 16000)] = np.random.default_rng(0).normal(0, 0.3, int(piece * 16000))
    sf.write(tmp_path / "changed.wav", changed, 16000)

    one, three, other = (project(model, "audio", tmp_path / f) for f in ("one.wav", "three.wav", "changed.wav"))
    k = one.shape[0]
    assert k == 8 and three.shape[0] == 3 * k
    assert torch.allclose(three[:k], one, atol=1e-5)  # piece 1 is the L-long clip's only piece
    assert torch.equal(other[:k], three[:k]) and torch.equal(other[2 * k :], three[2 * k :])
    assert not torch.allclose(other[k : 2 * k], three[k : 2 * k])  # only piece 2 changed


def test_imu_trace_of_three_windows_gives_three_times_the_tokens_each_window_independent(model, tmp_path):
    enc = model.encoders["imu"]
    window = enc.config.window
    rng = np.random.default_rng(0)
    trace = rng.normal(0, 1, (3 * window, 6)).astype(np.float32)
    np.save(tmp_path / "one.npy", trace[:window])
    np.save(tmp_path / "three.npy", trace)
    changed = trace.copy()
    changed[window : 2 * window] *= 3
    np.save(tmp_path / "changed.npy", changed)
    one, three, other = (project(model, "imu", tmp_path / f) for f in ("one.npy", "three.npy", "changed.npy"))
    k = one.shape[0]
    assert three.shape[0] == 3 * k
    assert torch.allclose(three[:k], one, atol=1e-5)
    assert torch.equal(other[:k], three[:k]) and torch.equal(other[2 * k :], three[2 * k :])
    assert not torch.allclose(other[k : 2 * k], three[k : 2 * k])


def test_video_clips_and_frame_folders(model, tmp_path):
    enc = model.encoders["video"]  # 2 frames per 1-s clip
    movie = Movie("red", "circle", "right")
    frames = render_movie(movie, np.random.default_rng(0), frames=12, side=64)
    write_video(frames, tmp_path / "long.mp4", fps=4)  # 3 s -> 3 clips
    write_video(frames[:4], tmp_path / "short.mp4", fps=4)  # 1 s -> 1 clip
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, img in enumerate(frames[:4]):
        img.save(folder / f"{i:03d}.png")
    long, short, from_folder = (enc.media_processor()(str(tmp_path / p)) for p in ("long.mp4", "short.mp4", "frames"))
    assert long.shape[:2] == (3, 2) and short.shape[:2] == (1, 2) and from_folder.shape == short.shape
    assert (from_folder - short).abs().mean() < 0.1  # the same frames, decoded from PNG vs MPEG-4
    k = project(model, "video", tmp_path / "short.mp4").shape[0]
    assert project(model, "video", tmp_path / "long.mp4").shape[0] == 3 * k


def test_long_media_are_capped_at_max_pieces(tmp_path, caplog):
    enc = IMUEncoder(config=IMUEncoderConfig(window=20), max_pieces=2)
    np.save(tmp_path / "long.npy", np.zeros((100, 6), dtype=np.float32))
    assert enc.media_processor()(str(tmp_path / "long.npy")).shape == (2, 6, 20)
    assert "keeping the first 2" in caplog.text and "long.npy" in caplog.text


# ---- interleaving ------------------------------------------------------------------------------------------------


def test_image_and_imu_tokens_sit_at_their_own_placeholders_in_order(model, tiny_world, tmp_path):
    image = str(tiny_world / "images/val/000000.png")
    imu = next(tiny_world.glob("imu/val/*.csv"))
    rows = [
        {"id": "a", "image": image, "imu": str(imu), "conversations": [
            {"from": "human", "value": "<image>\nnear this, <imu>\nwhat am I doing?"}, {"from": "gpt", "value": "x"}]},
        {"id": "b", "image": image, "imu": str(imu), "conversations": [
            {"from": "human", "value": "<imu> then <image>"}, {"from": "gpt", "value": "y"}]},
        {"id": "c", "conversations": [{"from": "human", "value": "no media"}, {"from": "gpt", "value": "z"}]},
    ]  # fmt: skip
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = read_records(path, PLACEHOLDERS)
    assert [m for m, _ in records[1].media] == ["imu", "image"]
    data = ConversationDataset(records, ChatTokenizer(model.llm.tokenizer), model.media_processors())
    batch = PaddingCollator(model.llm.tokenizer.pad_token_id)([data[i] for i in range(3)])
    spliced = model.splice(batch)
    tokens = model.project_media(batch["media"])
    image_tokens, imu_tokens = tokens["image"], tokens["imu"]
    assert len(image_tokens) == len(imu_tokens) == 2  # row c has none
    text = model.llm.embed_tokens(batch["input_ids"])
    ids = batch["input_ids"]
    for row, order in ((0, ["image", "imu"]), (1, ["imu", "image"])):
        placeholder_pos = {
            name: int((ids[row] == model.llm.placeholder_ids[name]).nonzero()) for name in ("image", "imu")
        }
        items = {"image": image_tokens[row], "imu": imu_tokens[row]}
        shift = 0
        for name in order:  # each modality's tokens start where its placeholder was (plus earlier expansions)
            start = placeholder_pos[name] + shift
            assert torch.equal(spliced.inputs_embeds[row, start : start + len(items[name])], items[name])
            shift += len(items[name]) - 1
        first = min(placeholder_pos.values())
        assert torch.equal(spliced.inputs_embeds[row, :first], text[row, :first])
    n = int(batch["attention_mask"][2].sum())
    assert torch.equal(spliced.inputs_embeds[2, :n], text[2, :n])  # a row without media is untouched
    assert model(batch)["loss"].isfinite()


# ---- loaders: resampling, mixing and bad input ------------------------------------------------------------------


def test_audio_is_resampled_and_mixed_to_mono(tmp_path):
    stereo = np.stack([tone(1.0, 22050), tone(1.0, 22050) * 0.5], axis=1)
    sf.write(tmp_path / "stereo.wav", stereo, 22050)
    sf.write(tmp_path / "flac.flac", tone(0.5, 44100), 44100)
    wave = load_audio(str(tmp_path / "stereo.wav"), 16000)
    assert wave.ndim == 1 and abs(len(wave) - 16000) <= 1
    assert abs(np.abs(wave).max() - 0.225) < 0.02  # the mean of the two channels
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * 16000 / len(wave) - 440) < 3  # pitch preserved by resampling
    assert abs(len(load_audio(str(tmp_path / "flac.flac"), 16000)) - 8000) <= 1


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (lambda p: p.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage"), "cannot be decoded"),
        (lambda p: sf.write(p, np.zeros((0,), np.float32), 16000), "empty"),
        (lambda p: sf.write(p, np.array([0.1, np.nan, 0.2], np.float32), 16000, subtype="FLOAT"), "NaN"),
        (lambda p: None, "not found"),
    ],
    ids=["corrupt", "empty", "nan", "missing"],
)
def test_bad_audio_names_the_file(tmp_path, write, message):
    path = tmp_path / "bad.wav"
    write(path)
    with pytest.raises(MediaError, match=f"{message}.*bad.wav"):
        load_audio(str(path), 16000)


def test_truncated_wav_is_an_error_or_its_readable_part(tmp_path):
    sf.write(tmp_path / "full.wav", tone(1.0), 16000)
    data = (tmp_path / "full.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[:30])  # header cut: not decodable
    with pytest.raises(MediaError, match="cannot be decoded.*cut.wav"):
        load_audio(str(tmp_path / "cut.wav"), 16000)
    (tmp_path / "half.wav").write_bytes(data[: len(data) // 2])  # data cut: libsndfile reads what is there
    assert 0 < len(load_audio(str(tmp_path / "half.wav"), 16000)) < 16000


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("acc_x,acc_y,acc_z,gyro_x,gyro_y,gyro_z\n1,2,3,4,5,nan\n", "NaN or infinite"),
        ("1,2,3,4,5,inf\n1,2,3,4,5,6\n", "NaN or infinite"),
        ("1,2,3,4\n5,6,7,8\n", "has 4 columns"),
        ("timestamp,a,b,c,d,e,f\n", "no samples"),
        ("0.0,1,2,3,4,5,6\n0.0,1,2,3,4,5,6\n", "timestamps must increase"),
        ("1,2,3,4,5,6\n1,2,3\n", "different numbers of columns"),
    ],
    ids=["nan", "inf", "columns", "empty", "timestamps", "ragged"],
)
def test_bad_imu_csv_names_the_file(tmp_path, content, message):
    path = tmp_path / "trace.csv"
    path.write_text(content)
    with pytest.raises(MediaError) as err:
        load_imu(str(path), 6, 50.0)
    assert message in str(err.value) and str(path) in str(err.value)


def test_imu_rate_from_timestamps_is_resampled(tmp_path):
    t = np.arange(400) / 100.0  # 4 s at 100 Hz
    trace = np.column_stack([t, np.sin(2 * np.pi * 2 * t)[:, None].repeat(6, 1)])
    np.savetxt(tmp_path / "fast.csv", trace, delimiter=",", header="timestamp,ax,ay,az,gx,gy,gz", comments="")
    np.save(tmp_path / "bad.npy", np.zeros((10, 5)))
    enc = IMUEncoder(config=IMUEncoderConfig(sample_rate=50.0, window=100))
    pieces = enc.media_processor()(str(tmp_path / "fast.csv"))
    assert pieces.shape == (2, 6, 100)  # 4 s at 50 Hz = 2 windows of 2 s
    with pytest.raises(MediaError, match="5 columns.*bad.npy"):
        enc.media_processor()(str(tmp_path / "bad.npy"))


def test_undecodable_and_empty_videos_name_the_file(model, tmp_path):
    processor = model.encoders["video"].media_processor()
    (tmp_path / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video at all")
    with pytest.raises(MediaError, match="cannot be decoded.*bad.mp4"):
        processor(str(tmp_path / "bad.mp4"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(MediaError, match="no frames.*empty"):
        processor(str(tmp_path / "empty"))
    import av

    with av.open(str(tmp_path / "zero.mp4"), "w") as container:  # a valid file with a video stream and no frames
        stream = container.add_stream("mpeg4", rate=4)
        stream.width = stream.height = 64
    with pytest.raises(MediaError, match="zero.mp4"):
        processor(str(tmp_path / "zero.mp4"))


def test_bad_media_in_a_dataset_names_the_record_or_is_skipped_and_counted(model, tmp_path):
    sf.write(tmp_path / "good.wav", tone(1.0), 16000)
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    rows = [
        {"id": "ok", "audio": "good.wav", "conversations": [
            {"from": "human", "value": "<audio>"}, {"from": "gpt", "value": "a tone"}]},
        {"id": "broken", "audio": "bad.wav", "conversations": [
            {"from": "human", "value": "<audio>"}, {"from": "gpt", "value": "?"}]},
    ]  # fmt: skip
    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    records = read_records(path, PLACEHOLDERS)
    chat = ChatTokenizer(model.llm.tokenizer)
    strict = ConversationDataset(records, chat, model.media_processors())
    with pytest.raises(RecordError, match=r"'broken' \(.*a.jsonl:2\).*bad.wav"):
        strict[1]
    lenient = ConversationDataset(records, chat, model.media_processors(), skip_bad_records=True)
    batch = PaddingCollator(model.llm.tokenizer.pad_token_id)([lenient[0], lenient[1]])
    assert batch["ids"] == ["ok"] and batch["skipped"] == 1
