"""``pomona annotate --ray``: the model-backed labellers (``yolo-sam``, ``model``) as Ray actors.

Ray Core actors rather than Ray Data's ``map_batches``: the actors write their outputs (a label file and a COCO
part per image) straight into the dataset, so nothing has to flow back as a Dataset; an image already labelled
by an earlier try is skipped by a file check, which is what makes retries and re-runs cheap; and Ray Data would
add pyarrow to the cluster extra for none of that. Each actor loads the models once, asks for one GPU when the
cluster has GPUs, and takes its images in batches (one call per batch, each image labelled by annotate.py's own
``label_one``, so the labels are those of a single-machine run).

The labels are staged in ``DATASET/.pomona-ray-annotate/`` and swapped in at the end exactly as a single-machine
run does (the renderer's labels kept in ``labels_gt/``, then ``annotations.json``); an interrupted job leaves
the previous labels untouched and a re-run labels only the images not staged yet.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from pomona import atomic
from pomona.errors import PomonaError
from pomona.pipeline.cluster.connect import cluster_summary, on_cluster, ray_session
from pomona.pipeline.cluster.progress import ClusterRun, ShardResult, gather, node_name

STAGING = ".pomona-ray-annotate"
BATCH = 8  # images per actor call: amortises the call (a few ms) against labelling (0.1 s to 13 s an image)
MAX_RESTARTS = 3  # a killed actor is restarted (models reloaded) and its calls retried


@dataclass
class ClusterAnnotateReport:
    dataset: Path
    labeler: str
    images: int
    labelled: int
    done_before: int
    instances: int
    dropped_low_score: int
    run: ClusterRun

    def __str__(self) -> str:
        rate = self.run.rate(self.labelled)
        head = (f"annotated {self.images} images of {self.dataset} with '{self.labeler}' on Ray "
                f"({self.run.nodes} node(s), {self.run.cpus:g} CPUs, {self.run.gpus:g} GPUs): {self.instances} apples; "
                f"labelled {self.labelled} in {self.run.seconds:.1f} s ({rate:.2f} images/s, model loading included), "
                f"{self.done_before} were already done")
        lines = [head, *self.run.lines()]
        if self.dropped_low_score:
            lines.append(f"dropped {self.dropped_low_score} labels under --min-score")
        return "\n".join(lines)


class LabelWorker:
    """Actor: one labeller, loaded once; labels batches of a dataset's images into its staging folder."""

    def __init__(self, root: str, models: tuple, conf: float, imgsz: int, device: str, clean: dict):
        from pomona.pipeline.annotate import load_labeler

        self.root, self.clean = Path(root), clean
        self.label_image = load_labeler(clean["labeler"], *models, conf, imgsz, device)

    def label(self, names: list[str]) -> ShardResult:
        from pomona.dataset import format_labels, read_image
        from pomona.pipeline.annotate import coco_part, label_one

        start, done, skipped, stage = time.perf_counter(), 0, 0, self.root / STAGING
        for name in names:
            stem = Path(name).stem
            if (stage / "coco" / f"{stem}.json").is_file():  # a retried call: an earlier try labelled it
                skipped += 1
                continue
            inst, dropped = label_one(self.label_image, read_image(self.root / "images" / name), self.clean["min_area"],
                                      self.clean["fill_holes"], self.clean["min_score"])
            atomic.write_text(stage / "labels" / f"{stem}.txt", format_labels(inst))
            atomic.write_json(stage / "coco" / f"{stem}.json", {"part": coco_part(name, inst), "dropped": dropped},
                              indent=None)  # last: the image is done
            done += 1
        return ShardResult(node_name(), done, skipped, time.perf_counter() - start)


def prepare(root: str, settings: dict) -> list[str]:
    """Task: start or continue the job in the staging folder; returns the images already labelled."""
    stage = Path(root) / STAGING
    job = stage / "job.json"
    if job.is_file() and json.loads(job.read_text()) != settings:
        raise PomonaError(f"{stage} holds an unfinished annotate job with other settings; delete it to start over")
    atomic.write_json(job, settings)
    store = stage / "coco"
    return sorted(p.stem for p in store.glob("*.json")) if store.is_dir() else []


def finish(root: str, names: list[str], settings: dict) -> tuple[int, int]:
    """Task: swap the staged labels in as a single-machine run does; returns (apples, dropped)."""
    import shutil

    from pomona.pipeline.annotate import COCO_FILE, _coco_info, _CocoBuilder, _holds_labels, _written_by_labeller

    root_path = Path(root)
    stage, labels_dir, gt_dir = root_path / STAGING, root_path / "labels", root_path / "labels_gt"
    preserve_gt = not gt_dir.exists() and _holds_labels(labels_dir) and not _written_by_labeller(root_path)
    coco, dropped = _CocoBuilder(), 0
    with atomic.atomic_dir(labels_dir) as tmp:
        for name in names:
            staged = json.loads((stage / "coco" / f"{Path(name).stem}.json").read_text())
            coco.add_part(staged["part"])
            dropped += staged["dropped"]
            # copied, not moved: if this is interrupted, the staged job is still whole for a re-run
            shutil.copyfile(stage / "labels" / f"{Path(name).stem}.txt", tmp / f"{Path(name).stem}.txt")
        if preserve_gt:
            os.replace(labels_dir, gt_dir)
        coco.write(root_path / COCO_FILE, _coco_info(settings))
    shutil.rmtree(stage)
    return coco.instances, dropped


def _on_cluster(path: str | Path) -> str:
    """Weights given as a local file travel as an absolute path (the nodes must see the same path)."""
    return str(Path(path).absolute()) if Path(path).is_file() else str(path)


def annotate_ray(root: Path, names: list[str], settings: dict, models: tuple, conf: float, imgsz: int,
                 device: str | None, address: str, batch: int = BATCH) -> ClusterAnnotateReport:
    """Label ``names`` (in ``root/images``) with actors on the Ray cluster at ``address``."""
    detector, what, segmenter = models
    models = (_on_cluster(detector), what, None if segmenter is None else _on_cluster(segmenter))
    root = Path(root).absolute()
    with ray_session(address) as ray:
        cluster = cluster_summary(ray)
        done = set(on_cluster(ray, prepare, str(root), settings))
        todo = [name for name in names if Path(name).stem not in done]
        batches = [todo[i:i + batch] for i in range(0, len(todo), batch)]
        use_gpu = cluster[2] >= 1 and device != "cpu"
        workers = min(len(batches), int(cluster[2]) if use_gpu else max(1, int(cluster[1])))
        actor = ray.remote(LabelWorker).options(num_gpus=1 if use_gpu else 0, num_cpus=0 if use_gpu else 1,
                                                max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS)
        # on a GPU actor Ray sets CUDA_VISIBLE_DEVICES to its one GPU: cuda:0 is that GPU
        clean = {k: settings[k] for k in ("labeler", "min_area", "fill_holes", "min_score")}
        actors = [actor.remote(str(root), models, conf, imgsz, "cuda:0" if use_gpu else "cpu", clean)
                  for _ in range(workers)]
        # batches dealt round-robin: every actor's queue is filled at once, Ray runs each queue in order
        refs = [actors[k % workers].label.remote(b) for k, b in enumerate(batches)]
        run = gather(ray, refs, len(names), len(names) - len(todo), f"annotate ({settings['labeler']}, ray)", cluster)
        for a in actors:
            ray.kill(a)
        apples, dropped = on_cluster(ray, finish, str(root), names, settings)
    return ClusterAnnotateReport(root, settings["labeler"], len(names), run.images, len(names) - len(todo), apples,
                                 dropped, run)
