"""Data-parallel evaluation: torchrun with 2 CPU processes shards the questions, each rank writes its own part, rank 0
merges and scores; predictions and scores equal a 1-process run. Also: parts left by a killed run are resumed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import fixtures_eval as fx

from eval.common import read_jsonl
from eval.run import merge_parts, run_task


REPO = Path(__file__).resolve().parents[1]
GEN = ["--batch-size", "1", "--max-new-tokens", "4", "--device", "cpu", "--no-progress"]


def _torchrun(args, nproc=2):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "eval.run",
        *args,
    ]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def _by_id(path):
    return {str(r["question_id"]): r["prediction"] for r in read_jsonl(path)}


def test_two_processes_equal_one(tmp_path, tiny_model_dir):
    data = fx.make_mmbench(tmp_path)  # 3 questions with 4, 2 and 3 rotations = 9 rows: shards of 5 and 4
    one, two = tmp_path / "one", tmp_path / "two"
    base = ["--task", "mmbench_en", "--data", str(data), "--model", str(tiny_model_dir), *GEN]
    r1 = _torchrun(base + ["--output", str(one)], nproc=1)
    assert r1.returncode == 0, r1.stderr[-2000:]
    r2 = _torchrun(base + ["--output", str(two)], nproc=2)
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert "rank 1/2" in r2.stderr and "rank 0/2" in r2.stderr
    assert not list(two.glob("*.part*"))  # parts merged into one file
    p1, p2 = _by_id(one / "mmbench_en_predictions.jsonl"), _by_id(two / "mmbench_en_predictions.jsonl")
    # on a mismatch, the ranks' logs say which record failed or went missing and why
    assert len(p1) == 9 and p1 == p2, f"1 process: {p1}\n2 processes: {p2}\nlog:\n{r2.stderr[-6000:]}"
    res1 = json.loads((one / "mmbench_en_results.json").read_text())
    res2 = json.loads((two / "mmbench_en_results.json").read_text())
    assert res1["metrics"] == res2["metrics"] and res1["details"] == res2["details"]
    assert res2["run"]["generation"]["processes"] == 2 and res2["run"]["generation"]["done"] == 9
    assert r2.stdout.count("## mmbench_en") == 1  # only rank 0 reports


def test_parts_of_a_killed_run_are_resumed(tmp_path, tiny_model_dir):
    data = fx.make_ocrbench(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    # rank 1 of an earlier 2-process run got one answer written before the kill
    (out / "ocrbench_predictions.part1-of-2.jsonl").write_text(
        json.dumps({"question_id": 1, "prompt": "p", "prediction": "lunch"}) + "\n", encoding="utf-8"
    )
    r = run_task(
        "ocrbench",
        str(data),
        out,
        model=str(tiny_model_dir),
        batch_size=1,
        max_new_tokens=2,
        device="cpu",
        progress=False,
    )
    preds = _by_id(out / "ocrbench_predictions.jsonl")
    assert set(preds) == {"0", "1", "2", "3", "4"} and preds["1"] == "lunch"
    assert r.details["per_question"]["1"] == 1
    assert not list(out.glob("*.part*"))


def test_merge_keeps_benchmark_order(tmp_path):
    from eval.common import Sample

    samples = [Sample(question_id=i, prompt="", image=None) for i in range(4)]
    main = tmp_path / "t_predictions.jsonl"
    main.write_text(json.dumps({"question_id": 2, "prediction": "c"}) + "\n")
    a = tmp_path / "t_predictions.part0-of-2.jsonl"
    b = tmp_path / "t_predictions.part1-of-2.jsonl"
    a.write_text(
        json.dumps({"question_id": 3, "prediction": "d"})
        + "\n"
        + json.dumps({"question_id": 0, "prediction": "a"})
        + "\n"
    )
    b.write_text(json.dumps({"question_id": 1, "prediction": "b"}) + '\n{"question_id": 9, "predic')  # cut line
    assert merge_parts(main, [a, b], samples) == 3
    assert [r["question_id"] for r in read_jsonl(main)] == [0, 1, 2, 3]
    assert not a.exists() and not b.exists()


def test_ranks_materialising_one_image_at_once_both_get_it(tmp_path):
    """MMBench's circular copies share an image, so two ranks can write the same image file at the same moment (the
    CI failure of 2026-12-01: one rank's rename took the other's temporary file). Every writer must end with the file
    and no writer may fail."""
    import threading

    from eval.common import ImageStore

    png = b"\x89PNG\r\n\x1a\n" + bytes(200_000)
    stores = [ImageStore(tmp_path) for _ in range(8)]
    errors, paths = [], []
    start = threading.Barrier(len(stores))

    def rank(store):
        for key in range(30):  # a new image each round, all writers released together
            start.wait()
            try:
                paths.append(store.lazy(key, lambda: png)())
            except Exception as exc:  # noqa: BLE001 - the test collects every failure
                errors.append(repr(exc))

    threads = [threading.Thread(target=rank, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
    assert len(paths) == 30 * len(stores)
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(f"{key}.png" for key in range(30))  # and no temporary file left behind
    assert all((tmp_path / name).read_bytes() == png for name in written)
