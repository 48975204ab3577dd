"""`pomona generate --backend diffusers` on a tiny random-weight Stable Diffusion pipeline, offline on CPU.

The pipeline is real diffusers code (UNet, VAE, CLIP text encoder, tokenizer, Euler scheduler)
with a few thousand random weights, saved to disk and loaded back the way a user's folder is:
its pictures are noise, but loading, batching, seeding, writing and resuming are the real ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from pomona.dataset import read_image, read_manifest  # noqa: E402
from pomona.errors import PomonaError  # noqa: E402
from pomona.pipeline.diffusion import default_sampling, generate_diffusers, image_name  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SIZE = ["--size", "64", "48"]  # width 64, height 48: non-square catches a swapped (w, h)


def _tiny_tokenizer(folder: Path):
    """A CLIP BPE tokenizer from a character vocabulary written here (no download)."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    letters = "abcdefghijklmnopqrstuvwxyz0123456789.,-"
    vocab = ["<|startoftext|>", "<|endoftext|>"] + list(letters) + [c + "</w>" for c in letters]
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def build_tiny_pipeline(folder: Path) -> Path:
    """Save a random-weight Stable Diffusion pipeline (about 7 MB) to ``folder``."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=(2, 4), norm_num_groups=32)
    vae = AutoencoderKL(
        block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4, sample_size=32,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=32)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37, layer_norm_eps=1e-5,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=1000))
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)
    with tempfile.TemporaryDirectory() as vocab_dir:  # save_pretrained copies the tokenizer into folder
        pipe = StableDiffusionPipeline(
            unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=_tiny_tokenizer(Path(vocab_dir)),
            scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd") / "pipeline")


def run_cli(*args: str, capsys) -> tuple[int, str, str]:
    """The real CLI in this process (the pipeline libraries are imported once per session)."""
    from pomona.cli import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def generate_cmd(out: Path, model: Path | str, *extra: str) -> list[str]:
    return ["generate", str(out), "--backend", "diffusers", "--model", str(model), *SIZE, "--steps", "2", *extra]


def pixels(path: Path) -> np.ndarray:
    return read_image(path).astype(np.int16)


def test_cli_writes_images_and_manifest_then_resumes(tiny_pipeline, tmp_path, capsys):
    out = tmp_path / "gen"
    code, stdout, err = run_cli(*generate_cmd(out, tiny_pipeline, "--n", "3", "--batch", "2", "--seed", "5"),
                                capsys=capsys)
    assert code == 0, err
    assert "wrote 3 images" in stdout and "images/s" in stdout
    files = sorted((out / "images").glob("*.jpg"))
    assert [f.name for f in files] == [image_name(i) for i in range(3)]
    assert all(read_image(f).shape == (48, 64, 3) for f in files)
    assert not [p for p in (out / "images").iterdir() if p.name.startswith(".")]  # no temp files left
    _assert_manifest_of_first_run(out, tiny_pipeline)

    # second run: nothing new, files untouched
    before = {f.name: f.stat().st_mtime_ns for f in files}
    code, stdout, err = run_cli(*generate_cmd(out, tiny_pipeline, "--n", "3", "--batch", "2", "--seed", "5"),
                                capsys=capsys)
    assert code == 0, err
    assert "wrote 0 images, skipped 3" in stdout and "model not loaded" in stdout  # nothing to do: no load
    assert {f.name: f.stat().st_mtime_ns for f in files} == before

    # a deleted image is made again, pixel for pixel (its seed alone decides it), the others stay
    reference = pixels(files[1])
    files[1].unlink()
    code, stdout, err = run_cli(*generate_cmd(out, tiny_pipeline, "--n", "3", "--batch", "2", "--seed", "5"),
                                capsys=capsys)
    assert code == 0, err
    assert "wrote 1 images, skipped 2" in stdout
    assert np.array_equal(pixels(files[1]), reference)
    assert files[0].stat().st_mtime_ns == before[files[0].name]
    assert len(read_manifest(out)) == 3

    # asking for more images extends the dataset
    code, stdout, err = run_cli(*generate_cmd(out, tiny_pipeline, "--n", "4", "--batch", "2", "--seed", "5"),
                                capsys=capsys)
    assert code == 0, err
    assert "wrote 1 images, skipped 3" in stdout
    assert [r["seed"] for r in read_manifest(out)] == [5, 6, 7, 8]

    # other settings on the same folder: refuse instead of mixing two datasets
    code, stdout, err = run_cli(*generate_cmd(out, tiny_pipeline, "--n", "3", "--seed", "9"), capsys=capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "seed=5" in err and "seed=9" in err


def _assert_manifest_of_first_run(out, model) -> None:
    """Three images from seed 5 with the built-in prompts, every generation setting recorded."""
    from pomona.pipeline.prompts import BUILTIN_PROMPTS

    records = read_manifest(out)
    assert [r["file"] for r in records] == [f"images/{image_name(i)}" for i in range(3)]
    assert [r["seed"] for r in records] == [5, 6, 7]
    first = records[0]
    assert first["backend"] == "diffusers" and first["model"] == str(model)
    assert first["steps"] == 2 and first["guidance"] == 7.5  # SD default guidance, recorded
    assert first["scheduler"] == "EulerDiscreteScheduler" and first["pipeline"] == "StableDiffusionPipeline"
    assert first["size"] == [64, 48] and first["negative_prompt"] is None and first["dtype"] == "float32"
    assert len({r["group"] for r in records}) == 3 and "pomona_version" in first
    assert [r["prompt"] for r in records] == BUILTIN_PROMPTS[:3]


def test_seeds_reproduce_image_by_image_whatever_the_batch(tiny_pipeline, tmp_path):
    prompts = ["red apples on a tree", "green apples in the rain"]
    common = dict(n=2, model=str(tiny_pipeline), prompts=prompts, size=(64, 48), steps=2)
    one = generate_diffusers(tmp_path / "a", seed=3, batch=1, **common)
    two = generate_diffusers(tmp_path / "b", seed=3, batch=2, **common)
    other = generate_diffusers(tmp_path / "c", seed=4, batch=1, n=1, model=str(tiny_pipeline), prompts=prompts,
                               size=(64, 48), steps=2)
    assert (one.written, two.written, other.written) == (2, 2, 1)
    a0, a1 = pixels(tmp_path / "a/images" / image_name(0)), pixels(tmp_path / "a/images" / image_name(1))
    b0, b1 = pixels(tmp_path / "b/images" / image_name(0)), pixels(tmp_path / "b/images" / image_name(1))
    c0 = pixels(tmp_path / "c/images" / image_name(0))
    # batching runs the same maths in one call; float32 kernels may round differently, so allow a
    # JPEG-level difference but not a different picture
    assert np.abs(a0 - b0).max() <= 3 and np.abs(a1 - b1).max() <= 3
    assert np.abs(a0 - c0).mean() > 5  # another seed is another picture
    assert np.abs(a0 - a1).mean() > 5  # images in one run differ


def test_defaults_recorded_when_steps_and_guidance_not_given(tiny_pipeline, tmp_path, capsys):
    out = tmp_path / "defaults"
    code, stdout, err = run_cli("generate", out, "--backend", "diffusers", "--model", tiny_pipeline, "--n", "1",
                                "--size", "32", "32", "--guidance", "0", "--negative-prompt", "blurry",
                                capsys=capsys)
    assert code == 0, err
    record = read_manifest(out)[0]
    assert record["negative_prompt"] == "blurry"
    assert record["steps"] == 25 and record["guidance"] == 0.0  # SD 1.x default steps, guidance as given
    assert "SD 1.x/2.x defaults, --guidance given" in stdout


@pytest.mark.parametrize("pipeline_class, model, expected", [
    ("StableDiffusionPipeline", "stabilityai/sd-turbo", (1, 0.0)),
    ("StableDiffusionXLPipeline", "stabilityai/sdxl-turbo", (1, 0.0)),
    ("FluxPipeline", "black-forest-labs/FLUX.1-schnell", (4, 0.0)),
    ("FluxPipeline", "black-forest-labs/FLUX.1-dev", (28, 3.5)),
    ("StableDiffusionPipeline", "stable-diffusion-v1-5/stable-diffusion-v1-5", (25, 7.5)),
    ("StableDiffusionXLPipeline", "stabilityai/stable-diffusion-xl-base-1.0", (30, 5.0)),
])
def test_per_model_defaults_by_name(pipeline_class, model, expected):
    s = default_sampling(pipeline_class, model)
    assert (s.steps, s.guidance) == expected


def test_per_model_defaults_from_configs_of_a_renamed_folder():
    """A local folder named 'models/x' is still recognised from its component configs."""
    turbo = {"scheduler": {"timestep_spacing": "trailing"}}
    base = {"scheduler": {"timestep_spacing": "leading"}}
    schnell = {"transformer": {"guidance_embeds": False}}
    assert default_sampling("StableDiffusionXLPipeline", "models/x", turbo).steps == 1
    assert default_sampling("StableDiffusionXLPipeline", "models/x", base).steps == 30
    assert default_sampling("FluxPipeline", "models/x", schnell).steps == 4


def test_bad_model_folder_and_missing_model_are_one_line_errors(tmp_path, capsys):
    not_a_pipeline = tmp_path / "weights"
    not_a_pipeline.mkdir()
    (not_a_pipeline / "model.safetensors").write_bytes(b"\0" * 16)
    for model, words in [(not_a_pipeline, "not a diffusers pipeline folder"),
                         (tmp_path / "nowhere", "model folder not found"),
                         (not_a_pipeline / "model.safetensors", "is a file")]:
        code, _, err = run_cli("generate", tmp_path / "out", "--backend", "diffusers", "--model", model, "--n", "1",
                               capsys=capsys)
        assert code == 2
        assert len(err.strip().splitlines()) == 1 and words in err and str(model) in err
    code, _, err = run_cli("generate", tmp_path / "out", "--backend", "diffusers", "--n", "1", capsys=capsys)
    assert code == 2 and "--model is required" in err and len(err.strip().splitlines()) == 1


def test_size_not_divisible_is_one_line_error(tiny_pipeline, tmp_path):
    with pytest.raises(PomonaError, match="divisible by 2"):
        generate_diffusers(tmp_path / "odd", n=1, model=str(tiny_pipeline), prompts=["apple"], size=(65, 64), steps=1)


def test_killed_run_keeps_finished_images_and_resumes(tiny_pipeline, tmp_path, capsys):
    """SIGKILL mid-run (no cleanup code runs): what the manifest lists is complete, and a re-run
    picks up from there without redoing it."""
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "pomona.cli", *generate_cmd(out, tiny_pipeline, "--n", "100000")]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "manifest.jsonl").is_file() and len(read_manifest(out)) >= 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
    finally:
        proc.kill()
        proc.wait()
    records = read_manifest(out)
    assert len(records) >= 3
    for record in records:
        assert read_image(out / record["file"]).shape == (48, 64, 3)  # complete, decodable
    visible = [p for p in (out / "images").iterdir() if not p.name.startswith(".")]
    assert all(read_image(p).shape == (48, 64, 3) for p in visible)  # never a truncated file under a real name

    done = len(records)
    code, stdout, err = run_cli(*generate_cmd(out, tiny_pipeline, "--n", str(done + 2)), capsys=capsys)
    assert code == 0, err
    assert f"wrote 2 images, skipped {done}" in stdout
    assert len(read_manifest(out)) == done + 2
    assert not [p for p in (out / "images").iterdir() if p.name.startswith(".")]  # stale temp files removed


def test_hub_id_offline_fails_fast_naming_the_model(tmp_path):
    """The real command in a fresh process, offline as pomona is by default: one line, no hang."""
    env = {k: v for k, v in os.environ.items() if k not in ("POMONA_ONLINE", "HF_HUB_OFFLINE")}
    model = "pomona-tests/never-cached-pipeline"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pomona.cli", "generate", str(tmp_path / "out"), "--backend",
                           "diffusers", "--model", model, "--n", "1"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert model in lines[0] and "POMONA_ONLINE=1" in lines[0] and "hf download" in lines[0]
    # interpreter + torch + diffusers imports dominate; the failure itself is immediate
    assert seconds < 10, f"offline failure took {seconds:.1f} s"


if __name__ == "__main__":  # `python tests/test_diffusion.py FOLDER`: the tiny pipeline, to try the CLI by hand
    print(build_tiny_pipeline(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny-sd")))
