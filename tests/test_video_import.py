"""Video import: mp4 and gif files made with save_video, resampling, cropping, bad files, resume."""

from __future__ import annotations

import numpy as np
import pytest

from worldsim.data import EpisodeStore, VideoImportError, import_videos
from worldsim.data.video_import import center_crop_resize
from worldsim.video import save_video


def ramp(t: int, h: int = 16, w: int = 16) -> np.ndarray:
    """Frame i is a flat grey of level 8*i, so the frame index can be read back after lossy coding."""
    levels = (8 * np.arange(t)) % 256
    return np.broadcast_to(levels[:, None, None, None], (t, h, w, 3)).astype(np.uint8).copy()


def levels(frames: np.ndarray) -> list[int]:
    return [int(round(float(f.mean()) / 8)) for f in frames]


@pytest.fixture()
def videos(tmp_path):
    src = tmp_path / "videos"
    save_video(ramp(30), src / "a.mp4", fps=10)
    save_video(ramp(12, 16, 32), src / "nested" / "b.gif", fps=10)
    (src / "notes.txt").write_text("not a video")
    return src


def test_imports_mp4_and_gif_with_metadata(tmp_path, videos) -> None:
    summary = import_videos(videos, tmp_path / "store", size=(8, 8), progress=False)
    assert summary["files"] == 2 and summary["imported"] == ["a.mp4", "nested/b.gif"]
    assert summary["episodes_written"] == 2 and summary["frames_written"] == 42
    store = EpisodeStore(tmp_path / "store")
    a, b = store[0], store[1]
    assert a.frames.shape == (30, 8, 8, 3) and b.frames.shape == (12, 8, 8, 3)
    assert a.actions is None and a.rewards is None
    assert levels(a.frames) == list(range(30)) and levels(b.frames) == list(range(12))
    meta = b.metadata
    assert meta["source"] == str((videos / "nested" / "b.gif").resolve())
    assert meta["source_relpath"] == "nested/b.gif" and meta["fps"] == 10.0
    assert meta["original_size"] == [16, 32] and meta["part"] == 0 and meta["last_part"]


def test_resamples_by_timestamp_and_splits_long_videos(tmp_path, videos) -> None:
    import_videos(videos, tmp_path / "s", size=(8, 8), fps=5, max_episode_len=6, progress=False)
    store = EpisodeStore(tmp_path / "s")
    mp4 = [store[i] for i in range(len(store)) if store.metadata(i)["source_relpath"] == "a.mp4"]
    # 30 frames at 10 fps -> 15 at 5 fps (every second frame), split 6 + 6 + 3
    assert [len(e) for e in mp4] == [6, 6, 3]
    assert [e.metadata["part"] for e in mp4] == [0, 1, 2]
    assert [e.metadata["last_part"] for e in mp4] == [False, False, True]
    assert sum((levels(e.frames) for e in mp4), []) == list(range(0, 30, 2))
    assert all(e.metadata["fps"] == 5 and e.metadata["source_fps"] == 10 for e in mp4)


def test_gif_merged_duplicate_frames_are_restored(tmp_path) -> None:
    frames = ramp(6)
    frames[2] = frames[1]  # Pillow stores frames 1-2 as one frame of double duration
    save_video(frames, tmp_path / "v" / "dup.gif", fps=10)
    import_videos(tmp_path / "v", tmp_path / "s", size=None, progress=False)
    back = EpisodeStore(tmp_path / "s")[0].frames
    assert back.shape == (6, 16, 16, 3)
    np.testing.assert_array_equal(back, frames)


def test_center_crop_keeps_aspect() -> None:
    frame = np.zeros((10, 30, 3), np.uint8)
    frame[:, 10:20] = 200  # the centre third
    out = center_crop_resize(frame, (5, 5))
    assert out.shape == (5, 5, 3) and (out == 200).all()
    tall = np.zeros((40, 10, 3), np.uint8)
    tall[15:25] = 100
    assert center_crop_resize(tall, (2, 2)).shape == (2, 2, 3)
    assert (center_crop_resize(tall, (1, 1)) == 100).all()


def test_corrupt_file_error_names_it_and_skip_bad_skips(tmp_path, videos) -> None:
    bad = videos / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"junk" * 50)
    with pytest.raises(VideoImportError, match=r"broken\.mp4: cannot decode") as info:
        import_videos(videos, tmp_path / "s1", size=(8, 8), progress=False)
    assert info.value.path == bad and len(str(info.value)) < 500
    with pytest.warns(UserWarning, match="skipping .*broken.mp4"):
        summary = import_videos(videos, tmp_path / "s2", size=(8, 8), skip_bad=True, progress=False)
    assert [b["file"] for b in summary["bad"]] == ["broken.mp4"]
    assert summary["imported"] == ["a.mp4", "nested/b.gif"]
    assert len(EpisodeStore(tmp_path / "s2")) == 2


def test_rerun_skips_imported_files_and_resumes_an_interrupted_one(
    tmp_path, videos, monkeypatch
) -> None:
    calls = {"n": 0}
    original = EpisodeStore.append

    def killed_after_two(self, episode):
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the import dies while writing a.mp4's third part
        calls["n"] += 1
        return original(self, episode)

    monkeypatch.setattr(EpisodeStore, "append", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        import_videos(videos, tmp_path / "s", size=(8, 8), max_episode_len=8, progress=False)
    monkeypatch.setattr(EpisodeStore, "append", original)
    assert len(EpisodeStore(tmp_path / "s")) == 2

    summary = import_videos(videos, tmp_path / "s", size=(8, 8), max_episode_len=8, progress=False)
    assert summary["imported"] == ["a.mp4", "nested/b.gif"]
    assert summary["episodes_written"] == 2 + 2  # a.mp4 parts 2, 3 and b.gif parts 0, 1
    store = EpisodeStore(tmp_path / "s")
    parts = sorted((m["source_relpath"], m["part"]) for m in map(store.metadata, range(len(store))))
    assert parts == [
        ("a.mp4", 0),
        ("a.mp4", 1),
        ("a.mp4", 2),
        ("a.mp4", 3),
        ("nested/b.gif", 0),
        ("nested/b.gif", 1),
    ]

    again = import_videos(videos, tmp_path / "s", size=(8, 8), max_episode_len=8, progress=False)
    assert again["skipped"] == ["a.mp4", "nested/b.gif"] and again["episodes_written"] == 0


def test_bad_arguments(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        import_videos(tmp_path / "missing", tmp_path / "s", progress=False)
    with pytest.raises(ValueError, match="max_episode_len must be >= 2"):
        import_videos(tmp_path, tmp_path / "s", max_episode_len=1, progress=False)


def test_command_line_entry_point(tmp_path, videos, capsys) -> None:
    from worldsim.data.video_import import main

    main([str(videos), str(tmp_path / "s"), "--size", "4", "6", "--fps", "10"])
    out = capsys.readouterr().out
    assert "2 files: 2 imported" in out and "42 frames written" in out
    assert EpisodeStore(tmp_path / "s").summary()["frame_shape"] == [4, 6, 3]


def test_truncated_mp4_is_refused_or_skipped_not_imported_as_a_prefix(tmp_path) -> None:
    src = tmp_path / "videos"
    noise = np.random.default_rng(0).integers(0, 256, (90, 32, 32, 3), dtype=np.uint8)
    save_video(noise, src / "whole.mp4", fps=30)  # noise: the frame data outweighs the header
    data = (src / "whole.mp4").read_bytes()
    (src / "cut.mp4").write_bytes(data[: len(data) * 4 // 10])  # the tail of the file is lost
    with pytest.raises(VideoImportError, match=r"cut\.mp4: truncated .* reports 90") as info:
        import_videos(src, tmp_path / "s1", size=(8, 8), progress=False)
    assert info.value.path == src / "cut.mp4"
    assert not (tmp_path / "s1").exists()  # cut.mp4 comes first: nothing was imported
    with pytest.warns(UserWarning, match=r"skipping .*cut\.mp4: truncated"):
        summary = import_videos(src, tmp_path / "s2", size=(8, 8), skip_bad=True, progress=False)
    assert summary["imported"] == ["whole.mp4"] and summary["bad"][0]["file"] == "cut.mp4"
    store = EpisodeStore(tmp_path / "s2", create=False)
    assert len(store) == 1 and store.metadata(0)["source_relpath"] == "whole.mp4"
    assert len(store[0]) == 90


def test_empty_folder_is_an_error_naming_it_and_leaves_no_store(tmp_path) -> None:
    src = tmp_path / "clips"
    src.mkdir()
    (src / "readme.txt").write_text("no videos here")
    with pytest.raises(VideoImportError, match=r"clips: no video files .*\.mp4, .*\.gif"):
        import_videos(src, tmp_path / "store", progress=False)
    assert not (tmp_path / "store").exists()
