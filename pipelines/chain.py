"""The one chain that trains and evaluates one model (an ensemble), as reusable KFP
sub-pipelines, and the placement helpers every pipeline shares.

    train-evaluate(config_json, flights, raw_uri, gate settings):
        ParallelFor(flights): fingerprint -> ingest       (the model's config)
        train-members: member-seeds -> ParallelFor(seeds, parallelism):
                           member-config -> pretrain -> finetune
        evaluate (validation flight) ; selection-score (selection split only)
        -> model, evaluation, selection, r2, r2_lo, r2_hi, std_ratio, baseline_r2

The training pipeline runs it once; the sweep and leave-one-flight-out run it under a
ParallelFor over configs (pipelines/experiments.py); sweep-lofo also runs it per fold of
each variant's training flights inside the lofo-training-flights sub-pipeline. Everything the chain needs travels as
its inputs, never as a task output from outside a loop: kfp 2.17's local runner replaces a
ParallelFor body's task-output inputs with the loop item (kfp/local/orchestrator/
task_spec_utils.py, create_parameter_loop_iteration_task_spec), and also mangles a string
field of a dict loop item, so a loop item is one whole config JSON string.

No `from __future__ import annotations` here: kfp reads the sub-pipelines' annotations.
"""

from typing import Any, NamedTuple

from kfp import dsl, kubernetes

from cloudml.cluster import settings as platform
from components.evaluate import evaluate
from components.experiments import lofo_score, selection_score, training_fold_configs
from components.finetune import finetune
from components.fingerprint import fingerprint
from components.ingest import ingest
from components.members import member_config, member_seeds
from components.pretrain import pretrain

# Non-secret settings in the cloudml-settings ConfigMap, exposed under the same env names.
SETTINGS_KEYS = (
    "MINIO_ENDPOINT",
    "MINIO_BUCKET",
    "MINIO_SECURE",
    "CLOUDML_STORE",
    "PUSHGATEWAY_URL",
)
# Retries with exponential backoff: ingest and training resume from what they wrote
# (a finished shard / last.pt), so a preempted pod picks up where it stopped.
RETRY = {"num_retries": 3, "backoff_duration": "60s", "backoff_factor": 2.0,
         "backoff_max_duration": "1800s"}  # fmt: skip
CPU_TASK = {"cpu": "2", "memory": "8Gi"}
GPU_TASK = {"cpu": "4", "memory": "32Gi"}
# evaluate at full size holds the validation flight twice (its pool and its shard, ~1.4 GB
# each for ~1300 frames of 440x640 float32), one training shard at a time for the ridge
# baseline (cloudml.baseline: 0.94 GiB peak for four 0.54 GB shards, measured; 4.79 GiB
# when every shard was held at once) and the torch/CUDA runtime: ~6 GiB, so 16Gi, not the
# training tasks' 32Gi. The GPU stays: K members' forward passes over a full-size flight
# are tens of TFLOP, minutes on a node's CPUs.
EVAL_TASK = {"cpu": "4", "memory": "16Gi"}
SMALL_TASK = {"cpu": "500m", "memory": "512Mi"}


def with_env(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """MinIO credentials from the Secret and settings from the ConfigMap, as env only."""
    kubernetes.use_secret_as_env(task, platform.MINIO_SECRET_NAME, dict(platform.MINIO_SECRET_ENV))
    kubernetes.use_config_map_as_env(
        task, platform.SETTINGS_CONFIGMAP, {k: k for k in SETTINGS_KEYS}, optional=True
    )
    return task


def threads_for(cpu: str) -> int:
    """Compute threads for a task's CPU request ("500m" -> 1, "4" -> 4). A request without a
    limit gives the container no CFS quota to read (cloudml.threads), so the task is told
    (CLOUDML_CPU_REQUEST: a cap, so a local run on fewer cores takes fewer)."""
    n = int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    return max(1, int(n))


def on_cpu(task: dsl.PipelineTask, res: dict[str, str]) -> dsl.PipelineTask:
    """CPU and memory requests, and at most as many compute threads as CPUs requested."""
    task.set_cpu_request(res["cpu"]).set_memory_request(res["memory"])
    return task.set_env_variable("CLOUDML_CPU_REQUEST", str(threads_for(res["cpu"])))


def on_gpu(task: dsl.PipelineTask, res: dict[str, str] = GPU_TASK) -> dsl.PipelineTask:
    """One GPU, the GPU pool's node selector and toleration, CPU and memory `res`."""
    pool = platform.gpu_pool()
    task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(pool.gpus_per_task)
    on_cpu(task, res)
    kubernetes.add_node_selector(task, pool.label_key, pool.label_value)
    kubernetes.add_toleration(
        task, key=pool.taint_key, operator="Equal", value=pool.taint_value, effect=pool.taint_effect
    )
    return task


def retried(task: dsl.PipelineTask, retry: dict[str, Any] | None) -> dsl.PipelineTask:
    """The task with the retry policy `retry` (RETRY's keys); None leaves it unretried."""
    return task.set_retry(**retry) if retry else task


def build_members(retry: dict[str, Any] | None, parallelism: int):
    """The sub-pipeline that trains the ensemble: member-seeds, then one member-config ->
    pretrain -> finetune chain per member seed under a ParallelFor (at most `parallelism`
    members at once). A sub-pipeline because kfp 2.17 cannot compile a Collected (the
    ingest fan-in) used inside another ParallelFor; as its input the shards are a plain
    artifact list."""

    @dsl.pipeline(name="train-members")
    def train_members(shards: dsl.Input[list[dsl.Dataset]], config_json: str) -> list[dsl.Model]:
        """The ensemble's members, in parallel: one pretrain + finetune chain per member seed.

        Args:
            shards: Every flight's processed shard (the ingest fan-in).
            config_json: The model's validated configuration (seed, ensemble_size, ...).

        Returns:
            Output: The finetuned members (one Model per seed).
        """
        seeds = member_seeds(config_json=config_json)
        on_cpu(seeds.set_display_name("member-seeds"), SMALL_TASK)
        with dsl.ParallelFor(
            seeds.output, name="train-each-member", parallelism=parallelism
        ) as seed:
            cfg = on_cpu(member_config(config_json=config_json, seed=seed), SMALL_TASK)
            cfg.set_display_name("member-config")
            # No run id among the inputs (KFP's cache key): the stage state is keyed by code,
            # config and data inside the task (steps.common.training_state_key), so an
            # unchanged re-run is a cache hit and a retry on a new pod still resumes.
            pre = pretrain(shards=shards, config_json=cfg.output)
            with_env(on_gpu(retried(pre.set_display_name("pretrain"), retry)))
            fin = finetune(shards=shards, config_json=cfg.output, pretrained=pre.outputs["model"])
            with_env(on_gpu(retried(fin.set_display_name("finetune"), retry)))
        return dsl.Collected(fin.outputs["model"])

    return train_members


class TrainEvaluateOutputs(NamedTuple):
    model: dsl.Model
    evaluation: dsl.Dataset
    selection: str
    r2: float
    r2_lo: float
    r2_hi: float
    std_ratio: float
    baseline_r2: float  # fmt: skip


def build_train_evaluate(retry: dict[str, Any] | None, parallelism: int):
    """The chain for one model: ingest every flight with its config, train the ensemble
    (`parallelism` members at once), evaluate on its validation flight, score it on the
    selection split. Returns the sub-pipeline (callable inside any pipeline)."""
    train_members = build_members(retry, parallelism)

    @dsl.pipeline(name="train-evaluate")
    def train_evaluate(
        config_json: str,
        flights: list,
        raw_uri: str,
        threshold: float,
        min_std_ratio: float,
        beat_baseline: bool,
        skill_margin: float,
    ) -> TrainEvaluateOutputs:
        """Train and evaluate one model (an ensemble) from one validated configuration.

        Args:
            config_json: The model's validated configuration.
            flights: The flights to ingest (the configuration's flights).
            raw_uri: Where the raw flights live (s3:// or a directory).
            threshold: The gate's R² threshold (evaluate's report states the verdict).
            min_std_ratio: The gate's collapse check.
            beat_baseline: Whether the gate requires beating the ridge baseline.
            skill_margin: By how much (R²) the baseline must be beaten.

        Returns:
            model: The shipped ensemble.
            evaluation: metrics.json, predictions.csv, plots, config.json of the model.
            selection: The selection-split score (JSON).
            r2: R² on the validation flight.
            r2_lo: Lower end of its 95% interval.
            r2_hi: Upper end of its 95% interval.
            std_ratio: std(prediction) / std(truth).
            baseline_r2: The ridge baseline's R².
        """
        # Fan-out: one ingest per flight. Caching: ingest's real input is external data
        # (raw_uri/<flight>/) that KFP's cache key cannot see, so an uncached fingerprint
        # task hashes it first (on MinIO: the sha256 of the flight's stored manifest, no
        # download) and ingest takes that hash as an input. Unchanged raw data + unchanged
        # config = cache hit; changed raw files = new fingerprint = re-ingest.
        with dsl.ParallelFor(flights, name="ingest-each-flight") as flight:
            fp = fingerprint(raw_uri=raw_uri, flight=flight)
            with_env(on_cpu(fp.set_display_name("fingerprint").set_caching_options(False),
                            SMALL_TASK))  # fmt: skip
            ing = ingest(raw_uri=raw_uri, flight=flight, config_json=config_json,
                         raw_fingerprint=fp.output)  # fmt: skip
            with_env(on_cpu(retried(ing.set_display_name("ingest"), retry), CPU_TASK))
        # one Collected per consumer: the compiler resolves each use separately
        members = train_members(shards=dsl.Collected(ing.outputs["shard"]), config_json=config_json)
        members.set_display_name("train-members")
        ev = evaluate(
            shards=dsl.Collected(ing.outputs["shard"]),
            config_json=config_json,
            members=members.output,
            threshold=threshold,
            min_std_ratio=min_std_ratio,
            beat_baseline=beat_baseline,
            skill_margin=skill_margin,
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        )
        with_env(on_gpu(retried(ev.set_display_name("evaluate"), retry), EVAL_TASK))
        sel = selection_score(config_json=config_json, members=members.output)
        on_cpu(sel.set_display_name("selection-score"), SMALL_TASK)
        return TrainEvaluateOutputs(
            model=ev.outputs["model"],
            evaluation=ev.outputs["evaluation"],
            selection=sel.output,
            **{k: ev.outputs[k] for k in ("r2", "r2_lo", "r2_hi", "std_ratio", "baseline_r2")},
        )

    return train_evaluate


def build_lofo_scorer(chain: Any, par: int):
    """The sub-pipeline that scores one variant on leave-one-flight-out over its training
    flights (pipeline sweep-lofo): one fold per training flight (none contains the
    validation flight), each the train-evaluate chain scored on its held-out flight, then
    the folds' mean R². A sub-pipeline because kfp 2.17 cannot compile a Collected used
    inside another ParallelFor (the variants' loop)."""

    @dsl.pipeline(name="lofo-training-flights")
    def lofo_scorer(
        config_json: str,
        flights: list,
        raw_uri: str,
        threshold: float,
        min_std_ratio: float,
        beat_baseline: bool,
        skill_margin: float,
    ) -> str:
        """Leave-one-training-flight-out score of one variant.

        Args:
            config_json: The variant's configuration.
            flights: The flights to ingest (each fold trains on and is scored on its own
                config's flights only).
            raw_uri: Where the raw flights live (s3:// or a directory).
            threshold: The gate's R² threshold (for each fold's report).
            min_std_ratio: The gate's collapse check.
            beat_baseline: Whether the gate requires beating the ridge baseline.
            skill_margin: By how much (R²) the baseline must be beaten.

        Returns:
            Output: JSON {label, lofo_r2 (mean, min, max), folds}.
        """
        folds = on_cpu(training_fold_configs(config_json=config_json), SMALL_TASK)
        folds.set_display_name("training-fold-configs")
        with dsl.ParallelFor(folds.output, name="train-each-fold", parallelism=par) as fold:
            te = chain(config_json=fold, flights=flights, raw_uri=raw_uri,
                       threshold=threshold, min_std_ratio=min_std_ratio,
                       beat_baseline=beat_baseline, skill_margin=skill_margin)  # fmt: skip
            te.set_display_name("train-evaluate-fold")
        sc = lofo_score(config_json=config_json,
                        evaluations=dsl.Collected(te.outputs["evaluation"]))  # fmt: skip
        on_cpu(sc.set_display_name("lofo-score"), SMALL_TASK)
        return sc.output

    return lofo_scorer
