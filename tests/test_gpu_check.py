"""tools/gpu_check.sh --tiny: the one-shot GPU check runs unchanged on a CPU, so it cannot rot before a GPU is lent."""

from __future__ import annotations

import json
import math
import subprocess

from .conftest import REPO, subprocess_env


def test_gpu_check_tiny_runs_every_section_on_the_cpu(tmp_path):
    env = subprocess_env()
    env.pop("ACCELERATE_USE_CPU")  # the script sets what each section needs
    proc = subprocess.run(["bash", str(REPO / "tools" / "gpu_check.sh"), "--tiny", "--out", str(tmp_path)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["mode"] == "tiny (CPU)" and report["env"]["torch"]
    k = report["r1_every"]
    train = report["train"]
    assert {(r["resolution"], r["precision"]) for r in train} == {(8, "no"), (16, "no"), (8, "bf16")}
    for r in train:
        for key in (f"img_s_k{k}", "img_s_k1", f"gflop_img_k{k}", f"flop_ratio_k{k}"):
            assert math.isfinite(r[key]) and r[key] > 0, (key, r)
        assert r[f"gflop_img_k{k}"] < r["gflop_img_k1"]  # lazy R1 is less work per image
    score = report["score"]
    assert [(r["side"], r["precision"]) for r in score] == [(256, "fp32"), (256, "bf16"), (512, "fp32")]
    for r in score:
        assert r["s_per_image"] > 0 and r["mp_per_s"] > 0 and r["stages_s"]["network"] > 0
    ddp = report["ddp"]
    assert [r["processes"] for r in ddp] == [1, 2]
    assert all(r["exit"] == 0 and r["rank_digests_equal"] and r["images_seen"] == 64 for r in ddp), ddp
    md = (tmp_path / "gpu_check.md").read_text()
    assert "## Training" in md and "## Scoring" in md and "## 1 vs 2 processes" in md
