"""Tiny media files in each published layout, written by the tests (nothing is downloaded).

Every writer draws from a seeded generator, so the files are the same on every run; the content
carries a little class signal (a brightness, a pitch, a shape) but the tests only need valid files.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

CLASSES = ("cat", "dog", "tree_frog")


def write_image(path: Path, seed: int, *, mode: str = "RGB", size: tuple[int, int] = (40, 30)) -> Path:
    from PIL import Image

    generator = np.random.default_rng(seed)
    channels = 3 if mode == "RGB" else 1
    pixels = generator.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels if channels == 3 else pixels[..., 0], mode=mode).save(path)
    return path


def write_depth(path: Path, seed: int, size: tuple[int, int] = (40, 30)) -> Path:
    """A 16-bit PNG of depth in millimetres (0.3 to 8 m), with a hole of no reading."""
    from PIL import Image

    generator = np.random.default_rng(seed)
    depth = generator.integers(300, 8000, size=(size[1], size[0])).astype(np.uint16)
    depth[:4, :4] = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(depth).save(path)  # uint16 arrays save as 16-bit PNG (mode I;16)
    return path


def write_audio(path: Path, seed: int, *, rate: int = 22050, seconds: float = 0.6, channels: int = 2) -> Path:
    import soundfile

    generator = np.random.default_rng(seed)
    time = np.arange(int(rate * seconds)) / rate
    tone = 0.3 * np.sin(2 * np.pi * (220 + 110 * (seed % 3)) * time)
    wave = np.stack([tone + 0.01 * generator.standard_normal(time.shape) for _ in range(channels)], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), wave.astype(np.float32), rate)
    return path


def write_video(path: Path, seed: int, *, frames: int = 5, size: tuple[int, int] = (32, 24)) -> Path:
    """An MP4 (MPEG-4 Part 2, in PyAV's bundled FFmpeg) of ``frames`` random frames; 0 frames gives an empty one."""
    import av

    generator = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        container.start_encoding()  # the header is written even when no frame follows
        for _ in range(frames):
            pixels = generator.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_off(path: Path, seed: int) -> Path:
    """A closed box mesh with a random aspect, as OFF (quads, fanned into triangles on reading)."""
    generator = np.random.default_rng(seed)
    x, y, z = 0.5 + generator.random(3)
    vertices = [(a * x, b * y, c * z) for a in (0, 1) for b in (0, 1) for c in (0, 1)]
    faces = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    lines = ["OFF", f"{len(vertices)} {len(faces)} 0"]
    lines += [" ".join(f"{v:.5f}" for v in vertex) for vertex in vertices]
    lines += [f"4 {' '.join(map(str, face))}" for face in faces]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def class_folders(root: Path, writer, suffix: str, *, per_class: int = 2, split: str | None = None) -> Path:
    """ROOT/[SPLIT/]CLASS/NNN.suffix for each of ``CLASSES``."""
    base = root / split if split else root
    for label, name in enumerate(CLASSES):
        for index in range(per_class):
            writer(base / name / f"{index:03d}{suffix}", seed=10 * label + index)
    return root


def esc50(root: Path, *, per_fold: int = 1) -> Path:
    """meta/esc50.csv and audio/*.wav, ESC-50's layout: every class in folds 1 and 5."""
    rows = []
    for target, category in enumerate(CLASSES):
        for fold in (1, 5):
            for take in range(per_fold):
                name = f"{fold}-{100 + target}-{chr(65 + take)}-{target}.wav"
                write_audio(
                    root / "audio" / name, seed=100 * fold + 10 * target + take, rate=44100, seconds=1.0, channels=1
                )
                rows.append({"filename": name, "fold": fold, "target": target, "category": category, "esc10": "False",
                             "src_file": 100 + target, "take": chr(65 + take)})  # fmt: skip
    (root / "meta").mkdir(parents=True, exist_ok=True)
    with (root / "meta" / "esc50.csv").open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def modelnet(root: Path, *, per_class: int = 2) -> Path:
    for label, name in enumerate(CLASSES):
        for split in ("train", "test"):
            for index in range(per_class):
                write_off(root / name / split / f"{name}_{index:04d}.off", seed=10 * label + index)
    return root


def modelnet_h5(root: Path, *, per_class: int = 2, points: int = 300) -> Path:
    import h5py

    generator = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    (root / "shape_names.txt").write_text("\n".join(CLASSES) + "\n")
    for split in ("train", "test"):
        labels = np.repeat(np.arange(len(CLASSES)), per_class)[:, None].astype(np.uint8)
        data = generator.standard_normal((len(labels), points, 3)).astype(np.float32) * (1 + labels[:, :, None])
        with h5py.File(root / f"ply_data_{split}0.h5", "w") as handle:
            handle["data"], handle["label"] = data, labels
    return root


def msrvtt(root: Path, *, per_category: int = 2) -> Path:
    """videos/videoN.mp4, train_val/test_videodatainfo.json and category.txt, MSR-VTT's release layout."""
    import json

    videos, sentences, number = {"train": [], "test": []}, {"train": [], "test": []}, 0
    for category, name in enumerate(CLASSES):
        for index in range(per_category):
            for split in ("train", "test"):
                video_id = f"video{number}"
                write_video(root / "videos" / f"{video_id}.mp4", seed=number, frames=3)
                videos[split].append({"video_id": video_id, "category": category, "split": split, "id": number})
                sentences[split] += [
                    {
                        "video_id": video_id,
                        "caption": f"a {name} number {index} in clip {number}",
                        "sen_id": 2 * number,
                    },
                    {
                        "video_id": video_id,
                        "caption": f"someone films a {name}, take {number}",
                        "sen_id": 2 * number + 1,
                    },
                ]
                number += 1
    for split, file in (("train", "train_val_videodatainfo.json"), ("test", "test_videodatainfo.json")):
        (root / file).write_text(json.dumps({"videos": videos[split], "sentences": sentences[split]}))
    (root / "category.txt").write_text("".join(f"{name}\t{index}\n" for index, name in enumerate(CLASSES)))
    return root


WNIDS = ("n02123045", "n02085620", "n01644373")  # tabby cat, Chihuahua, tree frog


def imagenet_val(root: Path, *, per_class: int = 2) -> Path:
    """LOC_synset_mapping.txt, LOC_val_solution.csv and ILSVRC/Data/CLS-LOC/val/*.JPEG (ImageNet on Kaggle)."""
    names = ("tabby, tabby cat", "Chihuahua", "tree frog, tree-frog")
    (root).mkdir(parents=True, exist_ok=True)
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{w} {n}\n" for w, n in zip(WNIDS, names, strict=True)))
    lines, number = ["ImageId,PredictionString"], 0
    for wnid in WNIDS:
        for _ in range(per_class):
            number += 1
            image = f"ILSVRC2012_val_{number:08d}"
            write_image(root / "ILSVRC" / "Data" / "CLS-LOC" / "val" / f"{image}.JPEG", seed=number)
            lines.append(f"{image},{wnid} 10 10 30 20 {wnid} 1 1 5 5")
    (root / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    return root


def clotho(root: Path, *, clips: int = 4) -> Path:
    """clotho_captions_{evaluation,development}.csv and the clips, Clotho's layout (five captions each)."""
    for folder in ("evaluation", "development"):
        rows = []
        for index in range(clips):
            name = f"{folder}_clip_{index}.wav"
            write_audio(root / folder / name, seed=index + (0 if folder == "evaluation" else 50), channels=1)
            rows.append(
                {"file_name": name, **{f"caption_{k}": f"sound {index} heard {k} ({folder})" for k in range(1, 6)}}
            )
        with (root / f"clotho_captions_{folder}.csv").open("w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return root


# ---------------------------------------------------------------- event recordings

NCALTECH101_CLASSES = ("Faces_easy", "car_side", "crab")  # prompt names: face, car side, crab


def event_bytes(x, y, t, p) -> bytes:
    """Events in N-MNIST / N-Caltech101's 5-byte layout: x, y, then polarity bit and 23-bit time, big-endian."""
    x, y, t, p = (np.asarray(v, dtype=np.int64) for v in (x, y, t, p))
    rows = np.stack([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF], axis=1)
    return rows.astype(np.uint8).tobytes()


def random_events(seed: int, *, events: int = 300, size: tuple[int, int] = (180, 240)) -> tuple[np.ndarray, ...]:
    """x, y, t (microseconds, sorted), p of ``events`` events on a (height, width) sensor; half of them
    in a square whose place depends on the seed, the class signal."""
    generator = np.random.default_rng(seed)
    height, width = size
    x = generator.integers(0, width, events)
    y = generator.integers(0, height, events)
    side = max(min(height, width) // 4, 1)
    corner = (seed % 3) * (min(height, width) - side) // 2
    x[: events // 2] = corner + generator.integers(0, side, events // 2)
    y[: events // 2] = corner + generator.integers(0, side, events // 2)
    t = np.sort(generator.integers(0, 300_000, events))
    p = generator.integers(0, 2, events)
    return x, y, t, p


def write_event_bin(path: Path, seed: int, *, events: int = 300, size: tuple[int, int] = (180, 240)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(event_bytes(*random_events(seed, events=events, size=size)))
    return path


def write_event_npy(path: Path, seed: int, *, structured: bool = True, size: tuple[int, int] = (34, 34)) -> Path:
    """A structured array (fields x, y, t, p) or an (N, 4) array with columns x, y, t, p."""
    x, y, t, p = random_events(seed, events=200, size=size)
    if structured:
        array = np.zeros(len(x), dtype=[("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", bool)])
        array["x"], array["y"], array["t"], array["p"] = x, y, t, p.astype(bool)
    else:
        array = np.stack([x, y, t, p], axis=1).astype(np.float64)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)
    return path


def write_event_npz(path: Path, seed: int, *, size: tuple[int, int] = (34, 34), sensor_size=None) -> Path:
    """Arrays x, y, t, p, and ``sensor_size`` when given."""
    x, y, t, p = random_events(seed, events=200, size=size)
    extra = {} if sensor_size is None else {"sensor_size": np.asarray(sensor_size)}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, y=y, t=t, p=p * 2 - 1, **extra)  # polarities as -1 / 1
    return path


def ncaltech101(root: Path, *, per_class: int = 2) -> Path:
    """ROOT/Caltech101/CLASS/image_NNNN.bin, N-Caltech101's archive layout, with its clutter folder."""
    for label, name in enumerate(NCALTECH101_CLASSES):
        for index in range(per_class):
            write_event_bin(root / "Caltech101" / name / f"image_{index + 1:04d}.bin", seed=10 * label + index)
    write_event_bin(root / "Caltech101" / "BACKGROUND_Google" / "image_0001.bin", seed=99)
    return root


def event_folders(root: Path, *, split: str | None = None) -> Path:
    """ROOT/[SPLIT/]CLASS/ with one recording of each format per class: .bin, structured .npy, (N, 4) .npy, .npz."""
    base = root / split if split else root
    for label, name in enumerate(CLASSES):
        seed = 10 * label
        write_event_bin(base / name / "000.bin", seed, size=(34, 34))
        write_event_npy(base / name / "001.npy", seed + 1)
        write_event_npy(base / name / "002.npy", seed + 2, structured=False)
        write_event_npz(base / name / "003.npz", seed + 3, sensor_size=(34, 34))
    return root
