"""Tests for `mpa.evaluation.benchmarks` (loaders, HF exports, prompts) and `mpa.metrics.ocr`.

Fixtures are tiny files written in each release's own format (field names and nesting as in the official JSON,
see the loader docstrings for sources) with 4x4 Pillow images; easy-VQA uses the installed package.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mpa.evaluation.benchmarks import BENCHMARKS, BenchmarkError, EvalSample, get_benchmark, load_benchmark
from mpa.evaluation.benchmarks.simple import easyvqa_question_type
from mpa.evaluation.benchmarks.vqa_formats import stvqa_is_heldout
from mpa.evaluation.metrics import METRICS
from mpa.evaluation.prompts import EVAL_PROMPTS, OCR_QUESTION, render_eval_prompt
from mpa.metrics import character_error_rate, word_accuracy

# ------------------------------------------------------------------------------------------------------ helpers


def _image(path: Path, color: str = "red") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), color).save(path)
    return path


def _image_bytes(color: str, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), color).save(buf, fmt)
    return buf.getvalue()


def _json(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _parquet(path: Path, columns: dict[str, list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def _qids(samples: list[EvalSample]) -> list[str]:
    return [s.qid for s in samples]


# ------------------------------------------------------------------------------------------------------ TextVQA

TEN = ["nokia"] * 7 + ["nokia phone", "nokia", "unanswerable"]


def _textvqa_entry(qid: int, image_id: str, question: str, answers: list[str]) -> dict:
    return {
        "question": question,
        "image_id": image_id,
        "image_classes": ["Mobile phone"],
        "flickr_original_url": "https://farm.example/x.jpg",
        "flickr_300k_url": "https://farm.example/x_300k.jpg",
        "image_width": 1024,
        "image_height": 768,
        "answers": answers,
        "question_tokens": question.split(),
        "question_id": qid,
        "set_name": "val",
    }


@pytest.fixture
def textvqa_dir(tmp_path: Path) -> Path:
    data = [
        _textvqa_entry(34602, "003a8ae2ef43b901", "what is the brand of this camera?", ["dakota"] * 10),
        _textvqa_entry(34603, "003a8ae2ef43b901", "what does the small white text spell?", ["copenhagen"] * 10),
        _textvqa_entry(34604, "00685bc495504d61", "what kind of phone is this?", TEN),
    ]
    _json(tmp_path / "TextVQA_0.5.1_val.json", {"dataset_type": "val", "dataset_name": "textvqa", "data": data})
    for image_id in ("003a8ae2ef43b901", "00685bc495504d61"):
        _image(tmp_path / "train_images" / f"{image_id}.jpg")
    return tmp_path


def test_textvqa_release(textvqa_dir: Path) -> None:
    samples = load_benchmark("textvqa", textvqa_dir)
    assert _qids(samples) == ["34602", "34603", "34604"]
    assert samples[0] == EvalSample(
        "34602",
        str(textvqa_dir / "train_images" / "003a8ae2ef43b901.jpg"),
        "what is the brand of this camera?",
        ("dakota",) * 10,
        "val",
        None,
    )
    assert samples[2].answers == tuple(TEN)
    assert all(Path(s.image_path).is_file() for s in samples)
    assert _qids(load_benchmark("textvqa", textvqa_dir, limit=2)) == ["34602", "34603"]


def _textvqa_export(root: Path) -> None:
    red, blue = _image_bytes("red"), _image_bytes("blue", "JPEG")
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    _parquet(
        root / "data" / "validation-00000-of-00001.parquet",
        {
            "image_id": ["a1", "a1", "b2"],
            "question_id": pa.array([7, 8, 9], pa.int32()),
            "question": ["q7", "q8", "q9"],
            "image": pa.array(
                [{"bytes": red, "path": "a1.jpg"}, {"bytes": red, "path": "a1.jpg"}, {"bytes": blue, "path": None}],
                image_type,
            ),
            "answers": [["x"] * 10, ["y"] * 10, ["z"] * 10],
        },
    )
    _parquet(
        root / "data" / "train-00000-of-00001.parquet",
        {
            "question_id": pa.array([1], pa.int32()),
            "question": ["train q"],
            "image": pa.array([{"bytes": red, "path": None}], image_type),
            "answers": [["t"] * 10],
        },
    )


def test_textvqa_parquet_export_extracts_images_once(tmp_path: Path) -> None:
    _textvqa_export(tmp_path)
    samples = load_benchmark("textvqa", tmp_path)
    assert _qids(samples) == ["7", "8", "9"]
    assert [s.answers[0] for s in samples] == ["x", "y", "z"]
    assert {s.split for s in samples} == {"val"}
    cache = tmp_path / ".mpa_cache" / "textvqa"
    paths = [Path(s.image_path) for s in samples]
    assert all(p.parent == cache and p.is_file() for p in paths)
    assert paths[0] == paths[1] and paths[0].suffix == ".png" and paths[2].suffix == ".jpg"  # content-named
    assert Image.open(paths[2]).size == (4, 4)
    before = {p: p.stat().st_mtime_ns for p in cache.iterdir()}

    again = load_benchmark("textvqa", tmp_path)
    assert again == samples
    assert {p: p.stat().st_mtime_ns for p in cache.iterdir()} == before  # reused, not rewritten

    train = load_benchmark("textvqa", tmp_path, split="train", cache_dir=tmp_path / "elsewhere")
    assert _qids(train) == ["1"] and Path(train[0].image_path).parent == tmp_path / "elsewhere"
    assert _qids(load_benchmark("textvqa", tmp_path, limit=1)) == ["7"]


def test_textvqa_export_missing_column(tmp_path: Path) -> None:
    _parquet(tmp_path / "validation.parquet", {"question": ["q"], "image": [b"\x89PNG\r\n\x1a\n"]})
    with pytest.raises(
        BenchmarkError, match=r"textvqa: the Hugging Face export .* has no column\(s\) question_id, answers"
    ):
        load_benchmark("textvqa", tmp_path)


# ------------------------------------------------------------------------------------------------------- ST-VQA


@pytest.fixture
def stvqa_dir(tmp_path: Path) -> Path:
    data = []
    for i, qid in enumerate(range(30000, 30040)):
        file_path = f"coco-text/COCO_train2014_{i:012d}.jpg" if i % 2 else f"imdb/{i}.jpg"
        data.append(
            {
                "question_id": qid,
                "file_path": file_path,
                "dataset": file_path.split("/")[0],
                "question": f"q{qid}?",
                "answers": [f"a{qid}"],
                "set_name": "train",
            }
        )
        _image(tmp_path / file_path)
    _json(tmp_path / "train_task_1.json", {"dataset_name": "ST-VQA", "task": 1, "data": data})
    return tmp_path


def test_stvqa_heldout_is_deterministic_and_disjoint(stvqa_dir: Path) -> None:
    heldout = load_benchmark("stvqa", stvqa_dir)
    train = load_benchmark("stvqa", stvqa_dir, split="train")
    assert _qids(heldout) == ["30014", "30038"]  # pinned: sha256(question_id) % 10 == 0
    assert heldout[0] == EvalSample(
        "30014", str(stvqa_dir / "imdb" / "14.jpg"), "q30014?", ("a30014",), "heldout", None
    )
    assert len(train) == 38 and not set(_qids(train)) & set(_qids(heldout))
    assert {s.split for s in train} == {"train"}
    assert _qids(load_benchmark("stvqa", stvqa_dir, split="train", limit=3)) == ["30000", "30001", "30002"]

    # The rule depends on the id only: reversing the file keeps the same held-out questions.
    ann = json.loads((stvqa_dir / "train_task_1.json").read_text())
    ann["data"].reverse()
    _json(stvqa_dir / "train_task_1.json", ann)
    assert _qids(load_benchmark("stvqa", stvqa_dir)) == ["30038", "30014"]
    assert stvqa_is_heldout("30014") and not stvqa_is_heldout("30015")


def test_stvqa_images_under_train_images(tmp_path: Path) -> None:
    _json(
        tmp_path / "train_task_1.json",
        {"data": [{"question_id": 30014, "file_path": "imdb/1.jpg", "question": "q", "answers": ["a", "b"]}]},
    )
    _image(tmp_path / "train_images" / "imdb" / "1.jpg")
    (sample,) = load_benchmark("stvqa", tmp_path)
    assert sample.image_path == str(tmp_path / "train_images" / "imdb" / "1.jpg") and sample.answers == ("a", "b")


# ------------------------------------------------------------------------------------------------------ ChartQA


@pytest.fixture
def chartqa_dir(tmp_path: Path) -> Path:
    human = [
        {"imgname": "41699051005347.png", "query": "How many food item is shown in the bar graph?", "label": "14"},
        {"imgname": "41699051005347.png", "query": "What is the difference in value?", "label": "0.57"},
        {"imgname": "multi_col_1.png", "query": "Which year is highest?", "label": "2019"},
    ]
    augmented = [
        {"imgname": "two_col_1.png", "query": "What is the value in 2018?", "label": "45.2"},
        {"imgname": "two_col_2.png", "query": "Is the value above 50?", "label": "Yes"},
    ]
    _json(tmp_path / "test" / "test_human.json", human)
    _json(tmp_path / "test" / "test_augmented.json", augmented)
    for name in ("41699051005347.png", "multi_col_1.png", "two_col_1.png", "two_col_2.png"):
        _image(tmp_path / "test" / "png" / name)
    return tmp_path


def test_chartqa_release_both_splits_and_filter(chartqa_dir: Path) -> None:
    samples = load_benchmark("chartqa", chartqa_dir)
    assert _qids(samples) == ["test_human/0", "test_human/1", "test_human/2", "test_augmented/0", "test_augmented/1"]
    assert samples[0] == EvalSample(
        "test_human/0",
        str(chartqa_dir / "test" / "png" / "41699051005347.png"),
        "How many food item is shown in the bar graph?",
        ("14",),
        "test_human",
    )
    assert [s.split for s in samples] == ["test_human"] * 3 + ["test_augmented"] * 2
    augmented = load_benchmark("chartqa", chartqa_dir, split="test_augmented")
    assert _qids(augmented) == ["test_augmented/0", "test_augmented/1"] and augmented[1].answers == ("Yes",)
    assert _qids(load_benchmark("chartqa", chartqa_dir, split="test_human")) == _qids(samples)[:3]
    assert load_benchmark("chartqa", chartqa_dir, split="test") == samples
    assert _qids(load_benchmark("chartqa", chartqa_dir, limit=4))[-1] == "test_augmented/0"


def test_chartqa_human_only_needs_its_file(chartqa_dir: Path) -> None:
    (chartqa_dir / "test" / "test_augmented.json").unlink()
    assert len(load_benchmark("chartqa", chartqa_dir, split="test_human")) == 3
    with pytest.raises(BenchmarkError, match=r"test_augmented\.json not found"):
        load_benchmark("chartqa", chartqa_dir)


def test_chartqa_hf_exports(tmp_path: Path) -> None:
    png = _image_bytes("green")
    images = [{"bytes": png, "path": None}] * 3
    m4 = tmp_path / ".cache" / "m4"  # HuggingFaceM4/ChartQA: label is a list, human_or_machine 0 = human
    _parquet(
        m4 / "data" / "test-00000-of-00001.parquet",
        {"image": images, "query": ["h0", "a0", "h1"], "label": [["1"], ["2"], ["3"]], "human_or_machine": [0, 1, 0]},
    )
    _parquet(
        m4 / "data" / "train-00000-of-00001.parquet",
        {"image": images[:1], "query": ["t"], "label": [["9"]], "human_or_machine": [0]},
    )
    samples = load_benchmark("chartqa", m4)
    assert [(s.qid, s.question, s.answers) for s in samples] == [
        ("test_human/0", "h0", ("1",)),
        ("test_augmented/0", "a0", ("2",)),
        ("test_human/1", "h1", ("3",)),
    ]
    assert _qids(load_benchmark("chartqa", m4, split="test_human")) == ["test_human/0", "test_human/1"]

    lmms = tmp_path / "lmms"  # lmms-lab/ChartQA: question/answer/type
    _parquet(
        lmms / "data" / "test-00000-of-00001.parquet",
        {"type": ["human_test", "augmented_test"], "question": ["h0", "a0"], "answer": ["5", "6"], "image": images[:2]},
    )
    samples = load_benchmark("chartqa", lmms, split="test_augmented")
    assert [(s.qid, s.answers, s.split) for s in samples] == [("test_augmented/0", ("6",), "test_augmented")]
    assert Path(samples[0].image_path).is_file()


# ------------------------------------------------------------------------------------------------------- OK-VQA


def _okvqa_files(root: Path, image_dir: Path) -> None:
    questions = [
        {"image_id": 297147, "question": "What sport can you use this for?", "question_id": 2971475},
        {"image_id": 393225, "question": "What is the name of the company?", "question_id": 3932255},
    ]
    answers = ["race", "race", "race", "race", "race", "race", "motocross", "motocross", "ride", "ride"]
    annotations = [
        {
            "image_id": 297147,
            "answer_type": "other",
            "question_type": "four",
            "question_id": 2971475,
            "confidence": 3,
            "answers": [
                {"answer_id": i + 1, "raw_answer": a + "ing", "answer_confidence": "yes", "answer": a}
                for i, a in enumerate(answers)
            ],
        },
        {
            "image_id": 393225,
            "answer_type": "other",
            "question_type": "two",
            "question_id": 3932255,
            "confidence": 3,
            "answers": [
                {"answer_id": i + 1, "raw_answer": "Nike", "answer_confidence": "yes", "answer": "nike"}
                for i in range(10)
            ],
        },
    ]
    _json(root / "OpenEnded_mscoco_val2014_questions.json", {"data_subtype": "val2014", "questions": questions})
    _json(root / "mscoco_val2014_annotations.json", {"data_subtype": "val2014", "annotations": annotations})
    for image_id in (297147, 393225):
        _image(image_dir / f"COCO_val2014_{image_id:012d}.jpg")


def test_okvqa_release(tmp_path: Path) -> None:
    _okvqa_files(tmp_path, tmp_path / "val2014")
    samples = load_benchmark("okvqa", tmp_path)
    assert samples[0] == EvalSample(
        "2971475",
        str(tmp_path / "val2014" / "COCO_val2014_000000297147.jpg"),
        "What sport can you use this for?",
        ("race",) * 6 + ("motocross",) * 2 + ("ride",) * 2,  # `answer`, not `raw_answer`
        "val",
        "Sports and Recreation",
    )
    assert samples[1].question_type == "Brands, Companies and Products" and samples[1].answers == ("nike",) * 10


def test_okvqa_images_directly_in_data_dir(tmp_path: Path) -> None:
    _okvqa_files(tmp_path, tmp_path)
    assert load_benchmark("okvqa", tmp_path, limit=1)[0].image_path == str(tmp_path / "COCO_val2014_000000297147.jpg")


def test_okvqa_save_to_disk_export(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {
            "question_id": datasets.Value("string"),
            "image": datasets.Image(),
            "question": datasets.Value("string"),
            "answers": datasets.Sequence(datasets.Value("string")),
            "question_type": datasets.Value("string"),
            "answer_type": datasets.Value("string"),
        }
    )
    rows = {
        "question_id": ["2971475", "3932255"],
        "image": [{"bytes": _image_bytes("red"), "path": None}, {"bytes": _image_bytes("blue"), "path": None}],
        "question": ["What sport?", "What company?"],
        "answers": [["race"] * 10, ["nike"] * 10],
        "question_type": ["four", "two"],
        "answer_type": ["other", "other"],
    }
    dd = datasets.DatasetDict({"val2014": datasets.Dataset.from_dict(rows, features=features)})
    dd.save_to_disk(str(tmp_path / "okvqa_hf"))
    samples = load_benchmark("okvqa", tmp_path / "okvqa_hf", cache_dir=tmp_path / "cache")
    assert [(s.qid, s.answers[0], s.question_type, s.split) for s in samples] == [
        ("2971475", "race", "Sports and Recreation", "val"),
        ("3932255", "nike", "Brands, Companies and Products", "val"),
    ]
    assert all(Path(s.image_path).parent == tmp_path / "cache" for s in samples)


# ------------------------------------------------------------------------------------------------------ easy-VQA


def test_easyvqa_from_package() -> None:
    samples = load_benchmark("easyvqa", None)
    assert len(samples) == 9673
    assert len({s.image_path for s in samples}) == 1000
    assert {s.question_type for s in samples} == {"yes/no", "shape", "color"}
    assert all(s.split == "test" and len(s.answers) == 1 for s in samples)
    first = load_benchmark("easyvqa", None, limit=3)
    assert [(s.qid, s.question, s.answers, s.question_type) for s in first] == [
        ("test/0", "what is the red shape?", ("triangle",), "shape"),
        ("test/1", "what is the color of the triangle?", ("red",), "color"),
        ("test/2", "what is the color of the shape?", ("red",), "color"),
    ]
    assert Path(first[0].image_path).name == "0.png" and Path(first[0].image_path).is_file()
    assert sum(s.question_type == "yes/no" for s in samples) == 7136  # easy_vqa data/README.md
    assert easyvqa_question_type("no") == "yes/no" and easyvqa_question_type("purple") is None


# ------------------------------------------------------------------------------------------------ JSONL and OCR


def _jsonl(path: Path, lines: list[object | str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_generic(tmp_path: Path) -> None:
    _image(tmp_path / "imgs" / "a.png")
    absolute = _image(tmp_path / "elsewhere" / "b.png")
    _jsonl(
        tmp_path / "data.jsonl",
        [
            {"image": "imgs/a.png", "question": "What color?", "answers": ["red", "crimson"], "question_type": "color"},
            "",
            {"image": str(absolute), "question": "Shape?", "answer": "square", "question_id": 77, "split": "val"},
            {"image": "imgs/a.png", "question": "Size?", "answer": "tiny"},
        ],
    )
    samples = load_benchmark("jsonl", tmp_path)
    assert samples == [
        EvalSample("1", str(tmp_path / "imgs" / "a.png"), "What color?", ("red", "crimson"), "test", "color"),
        EvalSample("77", str(absolute), "Shape?", ("square",), "val", None),
        EvalSample("4", str(tmp_path / "imgs" / "a.png"), "Size?", ("tiny",), "test", None),
    ]
    assert load_benchmark("jsonl", tmp_path / "data.jsonl", split="val") == [samples[1]]
    assert load_benchmark("jsonl", tmp_path, limit=2) == samples[:2]
    with pytest.raises(BenchmarkError, match=r"no lines with split 'train' \(found: test, val\)"):
        load_benchmark("jsonl", tmp_path, split="train")


def test_ocr_probe(tmp_path: Path) -> None:
    _image(tmp_path / "1.png")
    _jsonl(tmp_path / "ocr.jsonl", [{"image": "1.png", "text": "STOP"}, {"image": "1.png", "text": "Main St."}])
    samples = load_benchmark("ocr", tmp_path / "ocr.jsonl")
    assert samples == [
        EvalSample("1", str(tmp_path / "1.png"), OCR_QUESTION, ("STOP",), "test"),
        EvalSample("2", str(tmp_path / "1.png"), OCR_QUESTION, ("Main St.",), "test"),
    ]


# -------------------------------------------------------------------------------------------------- error paths


def test_unknown_benchmark_lists_names() -> None:
    with pytest.raises(BenchmarkError, match="unknown benchmark 'vqav2'; expected one of textvqa, stvqa, chartqa"):
        load_benchmark("vqav2", None)


def test_missing_annotation_file_names_layout(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkError) as err:
        load_benchmark("chartqa", tmp_path)
    assert str(err.value).startswith(
        f"chartqa: {tmp_path}/test/test_human.json not found; expected DATA_DIR/test/test_human.json, "
        "DATA_DIR/test/test_augmented.json and DATA_DIR/test/png/ (the ChartQA release)"
    )
    with pytest.raises(BenchmarkError, match=r"textvqa: .*TextVQA_0\.5\.1_val\.json not found; expected DATA_DIR"):
        load_benchmark("textvqa", tmp_path)
    with pytest.raises(BenchmarkError, match=r"okvqa: .*OpenEnded_mscoco_val2014_questions\.json not found"):
        load_benchmark("okvqa", tmp_path)
    with pytest.raises(BenchmarkError, match=r"stvqa: .*train_task_1\.json not found"):
        load_benchmark("stvqa", tmp_path)
    with pytest.raises(BenchmarkError, match=r"jsonl: .*data\.jsonl not found; expected DATA_DIR/data\.jsonl"):
        load_benchmark("jsonl", tmp_path)
    with pytest.raises(BenchmarkError, match="textvqa: needs a data directory"):
        load_benchmark("textvqa", None)
    with pytest.raises(BenchmarkError, match=r"data directory .*nope not found"):
        load_benchmark("okvqa", tmp_path / "nope")


def test_missing_images_counted(chartqa_dir: Path, textvqa_dir: Path) -> None:
    os.remove(chartqa_dir / "test" / "png" / "41699051005347.png")
    os.remove(chartqa_dir / "test" / "png" / "two_col_2.png")
    with pytest.raises(BenchmarkError) as err:
        load_benchmark("chartqa", chartqa_dir)
    assert f"chartqa: 3 of 5 images referenced by the annotations are missing, first: {chartqa_dir}/test/png/" in str(
        err.value
    )
    os.remove(textvqa_dir / "train_images" / "00685bc495504d61.jpg")
    with pytest.raises(BenchmarkError, match=r"1 of 3 images .* first: .*00685bc495504d61\.jpg"):
        load_benchmark("textvqa", textvqa_dir)
    assert len(load_benchmark("textvqa", textvqa_dir, limit=2)) == 2  # only the returned samples are checked


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", r"data\.jsonl:2: not valid JSON"),
        ('["a list"]', r"data\.jsonl:2: expected a JSON object per line"),
        ('{"question": "q", "answer": "a"}', r"data\.jsonl:2: 'image' must be a non-empty string"),
        ('{"image": "a.png", "answer": "a"}', r"data\.jsonl:2: 'question' must be a non-empty string"),
        ('{"image": "a.png", "question": "q"}', r"data\.jsonl:2: needs 'answers' \(a list of strings\) or 'answer'"),
        ('{"image": "a.png", "question": "q", "answers": "a"}', r"data\.jsonl:2: 'answers' must be a non-empty list"),
        ('{"image": "a.png", "question": "q", "answers": [], "question_id": 5}', r"'answers' must be a non-empty list"),
        (
            '{"image": "a.png", "question": "q", "answer": "b", "question_id": 1}',
            r"data\.jsonl:2: question id '1' "
            r"already used at .*data\.jsonl:1",
        ),
    ],
)
def test_bad_jsonl_line(tmp_path: Path, line: str, message: str) -> None:
    _image(tmp_path / "a.png")
    _jsonl(tmp_path / "data.jsonl", [{"image": "a.png", "question": "q", "answer": "a", "question_id": 1}, line])
    with pytest.raises(BenchmarkError, match=message):
        load_benchmark("jsonl", tmp_path)


def test_missing_jsonl_image_and_ocr_text(tmp_path: Path) -> None:
    _jsonl(tmp_path / "data.jsonl", [{"image": "gone.png", "question": "q", "answer": "a"}])
    with pytest.raises(BenchmarkError, match=r"jsonl: 1 of 1 images .* missing, first: .*gone\.png"):
        load_benchmark("jsonl", tmp_path)
    _jsonl(tmp_path / "ocr.jsonl", [{"image": "gone.png", "txt": "oops"}])
    with pytest.raises(BenchmarkError, match=r"ocr: .*ocr\.jsonl:1: 'text' must be a string"):
        load_benchmark("ocr", tmp_path / "ocr.jsonl")


def test_bad_split_and_limit(chartqa_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(BenchmarkError, match="chartqa: unknown split 'dev'; expected one of test, val, train"):
        load_benchmark("chartqa", chartqa_dir, split="dev")
    with pytest.raises(BenchmarkError, match="stvqa: unknown split 'test'; expected one of heldout, train"):
        load_benchmark("stvqa", tmp_path, split="test")
    with pytest.raises(BenchmarkError, match="limit must be >= 1"):
        load_benchmark("easyvqa", None, limit=0)
    _textvqa_export(tmp_path / "hf")
    (tmp_path / "hf" / "data" / "validation-00000-of-00001.parquet").unlink()
    with pytest.raises(BenchmarkError, match=r"no 'val' split in the Hugging Face export .* \(found: train\)"):
        load_benchmark("textvqa", tmp_path / "hf")


def test_malformed_release_json(tmp_path: Path) -> None:
    (tmp_path / "TextVQA_0.5.1_val.json").write_text('{"data": [', encoding="utf-8")
    with pytest.raises(BenchmarkError, match=r"TextVQA_0\.5\.1_val\.json is not valid JSON"):
        load_benchmark("textvqa", tmp_path)
    _json(tmp_path / "TextVQA_0.5.1_val.json", {"data": [{"question_id": 1, "question": "q"}]})
    with pytest.raises(BenchmarkError, match=r"TextVQA_0\.5\.1_val\.json entry 0 has no 'image_id' field"):
        load_benchmark("textvqa", tmp_path)


# ------------------------------------------------------------------------------------------------ specs, prompts


def test_registry_specs() -> None:
    assert list(BENCHMARKS) == ["textvqa", "stvqa", "chartqa", "okvqa", "easyvqa", "jsonl", "ocr"]
    for name in BENCHMARKS:
        spec = get_benchmark(name)
        assert spec.metric in METRICS and spec.metric != "compat"
        assert spec.prompt_id in EVAL_PROMPTS and spec.description
    assert (get_benchmark("stvqa").metric, get_benchmark("chartqa").metric) == ("anls", "relaxed_accuracy")
    with pytest.raises(BenchmarkError, match="unknown benchmark 'mmmu'"):
        get_benchmark("mmmu")


def test_one_short_answer_prompt() -> None:
    """The student is tested on the prompt it is trained with: same id and text as identify / level use."""
    from mpa.prompts import ANSWER_PROMPT_ID, render_answer_prompt

    for name in ("stvqa", "easyvqa", "jsonl"):
        assert get_benchmark(name).prompt_id == ANSWER_PROMPT_ID == "answer.short@1"
    assert render_eval_prompt(ANSWER_PROMPT_ID, "What colour?") == render_answer_prompt("What colour?")
    # the id evaluations recorded before the two were one still names the same prompt
    assert render_eval_prompt("eval.short_answer@1", "What colour?") == render_answer_prompt("What colour?")
    assert "eval.short_answer@1" not in EVAL_PROMPTS


def test_eval_prompt_snapshots() -> None:
    # Changing any of these texts must come with a new prompt id version.
    assert render_eval_prompt("answer.short@1", "what is it?") == (
        "what is it?\nAnswer the question using a single word or phrase."
    )
    assert render_eval_prompt("eval.textvqa@1", "what does the NASA sign say?") == (
        "What does the nasa sign say?\nAnswer the question using a single word or phrase."  # lmms-eval capitalize()
    )
    assert render_eval_prompt("eval.chartqa@1", "Max?") == "Max?\nAnswer the question with a single word."
    assert render_eval_prompt("eval.okvqa@1", "Sport?") == (
        "Sport?\nWhen the provided information is insufficient, respond with 'Unanswerable'."
        "\nAnswer the question using a single word or phrase."
    )
    assert render_eval_prompt("eval.ocr@1", OCR_QUESTION) == (
        "What is the text in the image?\nReply with the text only, exactly as written."
    )
    assert render_eval_prompt("eval.mpa_paper@1", "Sport?") == (
        "Sport?Answer the following question in a single word or phrase."
    )
    with pytest.raises(ValueError, match="unknown eval prompt 'x'"):
        render_eval_prompt("x", "q")


# --------------------------------------------------------------------------------------------------- OCR metrics


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("STOP", "STOP", 0.0),
        ("kitten", "sitting", 3 / 7),  # k->s, e->i, +g
        ("", "abc", 1.0),  # three deletions
        ("abcd", "abc", 1 / 3),  # one insertion
        ("abcdef", "ab", 2.0),  # four insertions over two characters: not clipped
        ("", "", 0.0),  # empty reference, empty prediction
        ("x", "", 1.0),  # empty reference, anything predicted
        ("stop", "STOP", 1.0),  # case counts
        ("  hello   world \n", "hello world", 0.0),  # whitespace runs squashed, ends stripped
        ("helo world", "hello world", 1 / 11),
        ("café", "cafe", 1 / 4),  # é is one code point, one substitution
        ("ab", "ba", 1.0),  # no transpositions: two substitutions
        ("Main St", "Main St.", 1 / 8),
    ],
)
def test_character_error_rate(prediction: str, reference: str, expected: float) -> None:
    assert character_error_rate(prediction, reference) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("the quick brown fox", "the quick brown fox", 1.0),
        ("the quick fox", "the quick brown fox", 0.75),  # one missing word
        ("the quick brown fox jumps", "the quick brown fox", 0.75),  # one extra word
        ("the quick red fox", "the quick brown fox", 0.75),  # one wrong word
        ("a b c d e f", "x", 0.0),  # six edits for one word: 1 - 6 clipped at 0
        ("", "hello world", 0.0),
        ("", "", 1.0),
        ("hello", "", 0.0),
        ("Hello World", "hello world", 0.0),  # case counts
        ("hello, world", "hello world", 0.5),  # "hello," != "hello"
        ("new  york\ncity", "new york city", 1.0),  # whitespace is only a separator
        ("the the cat", "the cat", 0.5),
        ("fox brown quick the", "the quick brown fox", 0.0),  # reversed: four substitutions
    ],
)
def test_word_accuracy(prediction: str, reference: str, expected: float) -> None:
    assert word_accuracy(prediction, reference) == pytest.approx(expected)
